"""Readers for public tagged catalogs, so a team can point the tool at what it has.

Each reader streams its file line by line and yields (row number, row) in the shape the
catalog validator checks (track_id, audio, duration_s, artist, tags: raw category ->
raw tags); a malformed line becomes a row with an `__error__`, rejected with its row
number like any other (row N is line N + 1: the header is line 1). Each format has a
bundled tag map (schemas/tagmaps/<name>.yaml) that covers its documented vocabulary.

- MTG-Jamendo (`autotagging*.tsv`, `raw_30s_cleantags*.tsv`): tab-separated TRACK_ID,
  ARTIST_ID, ALBUM_ID, PATH, DURATION, then any number of `category---tag` entries
  (categories genre, instrument, mood/theme). PATH is relative to the audio folder.
- MagnaTagATune (`annotations_final.csv`): tab-separated (despite the name), cells
  usually quoted: clip_id, one 0/1 column per tag (188), mp3_path. The artist is the
  part of the mp3 file name before its first '-' (the files are named
  artist-album-track-start-end), so splits can keep an artist's clips together.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.problems import SchemaError

MTG_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")
MTG_TAG_SEPARATOR = "---"
MTT_RAW_CATEGORY = "magnatagatune"  # MagnaTagATune's tags have no categories of their own
MTT_ID, MTT_PATH = "clip_id", "mp3_path"


@dataclass(frozen=True)
class PublicFormat:
    name: str
    description: str
    recognise: Callable[[list[str]], bool]  # the header's cells
    rows: Callable[[Path], Iterator[tuple[int, dict]]]

    @property
    def bundled_map(self) -> str:
        return self.name


def _open(path: Path):
    # surrogateescape keeps undecodable bytes, so the validator names the row and field
    return path.open(encoding="utf-8", errors="surrogateescape", newline="")


def header_cells(path: Path) -> list[str]:
    """The first line's tab-separated cells, unquoted; [] if it is not text."""
    try:
        with _open(path) as f:
            first = f.readline(1 << 16)
    except (OSError, UnicodeError):
        return []
    return [cell.strip().strip('"') for cell in first.rstrip("\r\n").split("\t")]


def _is_mtg(header: list[str]) -> bool:
    return tuple(header[:len(MTG_HEADER)]) == MTG_HEADER


def _is_mtt(header: list[str]) -> bool:
    return len(header) > 2 and header[0] == MTT_ID and header[-1] == MTT_PATH


def mtg_jamendo_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with _open(path) as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if not _is_mtg(header):
            raise SchemaError(f"catalog {path} is not in MTG-Jamendo format: its header "
                              f"must start with {chr(9).join(MTG_HEADER)} (tab-separated)",
                              [])
        for row_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) < len(MTG_HEADER):
                yield row_number, {"__error__": f"has {len(cells)} tab-separated fields; "
                                   f"MTG-Jamendo rows need {', '.join(MTG_HEADER)} and "
                                   "then their tags"}
                continue
            track_id, artist, _album, audio, duration, *entries = cells
            tags: dict[str, list[str]] = {}
            bad = []
            for entry in entries:
                if not entry.strip():
                    continue
                category, separator, tag = entry.partition(MTG_TAG_SEPARATOR)
                if not separator or not category.strip() or not tag.strip():
                    bad.append(entry)
                    continue
                tags.setdefault(category.strip(), []).append(tag)
            if bad:
                yield row_number, {"__error__": f"tag entry {bad[0][:60]!r} is not "
                                   f"category{MTG_TAG_SEPARATOR}tag"}
                continue
            yield row_number, {"track_id": track_id, "artist": artist, "audio": audio,
                               "duration_s": duration, "tags": tags}


def magnatagatune_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with _open(path) as f:
        reader = csv.reader(f, delimiter="\t")
        header = [cell.strip() for cell in next(reader, [])]
        if not _is_mtt(header):
            raise SchemaError(f"catalog {path} is not in MagnaTagATune format: its "
                              f"header must be {MTT_ID}, one column per tag, {MTT_PATH} "
                              "(tab-separated)", [])
        tag_columns = header[1:-1]
        try:
            for row in reader:
                row_number = reader.line_num - 1
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield row_number, {"__error__": f"has {len(row)} fields; the header "
                                       f"has {len(header)}"}
                    continue
                values = row[1:-1]
                bad = [(name, value) for name, value in zip(tag_columns, values, strict=True)
                       if value.strip() not in ("0", "1")]
                if bad:
                    yield row_number, {"__error__": f"column {bad[0][0]!r} is "
                                       f"{bad[0][1][:20]!r}; tag columns hold 0 or 1"}
                    continue
                audio = row[-1].strip()
                yield row_number, {
                    "track_id": row[0].strip(), "audio": audio,
                    "artist": Path(audio).name.split("-", 1)[0] or None,
                    "tags": {MTT_RAW_CATEGORY: [name for name, value in
                                                zip(tag_columns, values, strict=True)
                                                if value.strip() == "1"]}}
        except csv.Error as err:
            raise SchemaError(f"catalog {path} is not valid tab-separated text at line "
                              f"{reader.line_num}: {err}", []) from err


PUBLIC_FORMATS = {
    f.name: f for f in (
        PublicFormat("mtg-jamendo", "MTG-Jamendo autotagging*.tsv / raw_30s_cleantags*.tsv",
                     _is_mtg, mtg_jamendo_rows),
        PublicFormat("magnatagatune", "MagnaTagATune annotations_final.csv",
                     _is_mtt, magnatagatune_rows),
    )
}


def recognise(path: Path) -> str | None:
    """The public format a file is in, from its header; None for anything else."""
    if not path.is_file():
        return None
    header = header_cells(path)
    for public in PUBLIC_FORMATS.values():
        if public.recognise(header):
            return public.name
    return None
