"""MTG-Jamendo (`autotagging*.tsv`, `raw_30s_cleantags*.tsv`): tab-separated TRACK_ID,
ARTIST_ID, ALBUM_ID, PATH, DURATION, then any number of `category---tag` entries
(categories genre, instrument, mood/theme). PATH is relative to the audio folder. Its
bundled tag map (schemas/tagmaps/mtg-jamendo.yaml) covers the documented vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from schemas.catalog_readers import CatalogReader
from schemas.catalog_readers._text import header_cells, open_text
from schemas.problems import SchemaError
from schemas.tagmap import bundled_map_path

MTG_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")
MTG_TAG_SEPARATOR = "---"


def _is_mtg(header: list[str]) -> bool:
    return tuple(header[:len(MTG_HEADER)]) == MTG_HEADER


def mtg_jamendo_rows(path: Path, config=None, mapped: bool = True
                     ) -> Iterator[tuple[int, dict]]:
    with open_text(path) as f:
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


READER = CatalogReader("mtg-jamendo", "MTG-Jamendo autotagging*.tsv / raw_30s_cleantags*.tsv",
                       mtg_jamendo_rows, recognise=lambda path: _is_mtg(header_cells(path)),
                       tag_map=bundled_map_path("mtg-jamendo"))
