"""Tar files with reproducible bytes: the same samples always give the same file.

Members carry no time, owner or permissions of the machine that wrote them, and each
sample's members are written in sorted order, as WebDataset expects them grouped.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from schemas.atomic import atomic_path


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(path: Path, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> int:
    """Write (key, {extension: bytes}) samples atomically; returns the file's size."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            for extension in sorted(members):
                data = members[extension]
                tar.addfile(_member(f"{key}.{extension}", len(data)), io.BytesIO(data))
    return Path(path).stat().st_size
