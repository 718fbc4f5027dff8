"""`adswap tag-queries`: each track's own tag list as its query, in the eval-captions
format `adswap import-eval` reads.

The text is `schemas.sample.tags_text` of the track's tags as the shards stage reads
them (same catalog settings, same categories in the same order), so it is word for word
what a p_cap 0 run trained on for a training track. Scored on held-out tracks it asks
what the audio side has learned, free of how captions paraphrase the tags: a model
that retrieves a track poorly from its own tag list has not learned the tags' sound,
and no caption will do better.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.atomic import atomic_path
from schemas.catalog import SPLITS, CatalogConfig, iter_catalog, read_setting
from schemas.config import Config, setting
from schemas.eval_captions import eval_captions_schema
from schemas.sample import tags_text


@dataclass(frozen=True)
class TagQueriesConfig(Config):
    catalog: Path = setting(help="The catalog whose tracks' tags become their queries.")
    out: Path = setting(help="Output Parquet (eval_captions/1: track_id, caption_id, "
                        "language, text), for `adswap import-eval --file`.")
    split: str = setting("test", choices=SPLITS, help="The catalog split whose tracks "
                         "get a query: the held-out one, to score a trained model.")
    read: CatalogConfig = read_setting()

    def check(self) -> list[str]:
        return [] if Path(self.out).suffix == ".parquet" else \
            [f"out must be a .parquet file, not {self.out}"]


@dataclass
class TagQueriesStats:
    queries: int = 0
    invalid_rows: int = 0  # catalog rows the reader rejected (`adswap validate` lists them)


def run(config: TagQueriesConfig) -> TagQueriesStats:
    stats = TagQueriesStats()
    rows = []
    for track, _ in iter_catalog(config.catalog, config.read):
        if track is None:
            stats.invalid_rows += 1
            continue
        if track.split != config.split:
            continue
        # a valid track has a tag in some read category, so no query is empty
        text, _ = tags_text({c: list(track.tags.get(c, ())) for c in config.read.categories})
        rows.append({"track_id": track.track_id, "caption_id": 0, "language": "en",
                     "text": text})
    if not rows:
        raise ValueError(f"{config.catalog}: no valid track has split {config.split!r} "
                         f"({stats.invalid_rows} invalid rows: `adswap validate` lists "
                         "them); pick another --split")
    stats.queries = len(rows)
    with atomic_path(Path(config.out)) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=eval_captions_schema()), tmp)
    return stats
