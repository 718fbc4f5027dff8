"""MagnaTagATune (`annotations_final.csv`): tab-separated (despite the name), cells
usually quoted: clip_id, one 0/1 column per tag (188), mp3_path. The artist is the part
of the mp3 file name before its first '-' (the files are named
artist-album-track-start-end), so splits can keep an artist's clips together. Its
bundled tag map (schemas/tagmaps/magnatagatune.yaml) gives the tags their categories."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from schemas.catalog_readers import CatalogReader
from schemas.catalog_readers._text import header_cells, open_text
from schemas.problems import SchemaError
from schemas.tagmap import bundled_map_path

MTT_RAW_CATEGORY = "magnatagatune"  # MagnaTagATune's tags have no categories of their own
MTT_ID, MTT_PATH = "clip_id", "mp3_path"


def _is_mtt(header: list[str]) -> bool:
    return len(header) > 2 and header[0] == MTT_ID and header[-1] == MTT_PATH


def magnatagatune_rows(path: Path, config=None, mapped: bool = True
                       ) -> Iterator[tuple[int, dict]]:
    with open_text(path) as f:
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


READER = CatalogReader("magnatagatune", "MagnaTagATune annotations_final.csv",
                       magnatagatune_rows, recognise=lambda path: _is_mtt(header_cells(path)),
                       tag_map=bundled_map_path("magnatagatune"))
