"""Per-view facts the SQL rules filter on: descriptor analysis (tag recall,
hallucinations, spans), length, language, script and normalised text, plus the
track's facts from the catalog. Pure Python, one pass, streamed file by file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa

from pipeline.curate.language import detect_language, normalise_text, script_problem
from schemas.descriptors import DescriptorMatcher
from schemas.views import DESCRIPTOR, SPAN


@dataclass(frozen=True)
class TrackFacts:
    artist_norm: str | None
    split: str
    tags: Mapping[str, tuple[str, ...]]

    @property
    def n_tags(self) -> int:
        return sum(len(v) for v in self.tags.values())

    @property
    def min_category_tags(self) -> int:
        return min(len(v) for v in self.tags.values())


ANALYSIS_FIELDS = [
    pa.field("row_id", pa.int64()),
    pa.field("track_known", pa.bool_()),
    pa.field("track_n_tags", pa.int32()),
    pa.field("track_min_category_tags", pa.int32()),
    pa.field("artist_norm", pa.string()),
    pa.field("split", pa.string()),
    pa.field("n_words", pa.int32()),
    pa.field("n_chars", pa.int32()),
    pa.field("tag_recall", pa.float32()),
    pa.field("hallucinated", pa.list_(DESCRIPTOR)),
    pa.field("hallucinated_text", pa.string()),
    pa.field("n_hallucinated", pa.int32()),
    pa.field("spans", pa.list_(SPAN)),
    pa.field("detected_language", pa.string()),
    pa.field("script_problem", pa.string()),
    pa.field("norm_text", pa.string()),
]


def analyse_batches(table: pa.Table, tracks: Mapping[str, TrackFacts],
                    matcher: DescriptorMatcher, first_row_id: int,
                    batch_size: int = 65536) -> Iterator[pa.Table]:
    """The views table with the analysis columns appended, in batches."""
    row_id = first_row_id
    for batch in table.to_batches(batch_size):
        columns: dict[str, list] = {f.name: [] for f in ANALYSIS_FIELDS}
        for track_id, language, text, view_tags in zip(
                batch.column("track_id").to_pylist(), batch.column("language").to_pylist(),
                batch.column("text").to_pylist(), batch.column("tags").to_pylist(),
                strict=True):
            facts = tracks.get(track_id)
            analysis = matcher.analyse(text, view_tags, facts.tags if facts else view_tags)
            columns["row_id"].append(row_id)
            row_id += 1
            columns["track_known"].append(facts is not None)
            columns["track_n_tags"].append(facts.n_tags if facts else 0)
            columns["track_min_category_tags"].append(facts.min_category_tags if facts else 0)
            columns["artist_norm"].append(facts.artist_norm if facts else None)
            columns["split"].append(facts.split if facts else "train")
            columns["n_words"].append(len(text.split()))
            columns["n_chars"].append(len(text))
            columns["tag_recall"].append(analysis.tag_recall)
            columns["hallucinated"].append(
                [{"category": c, "term": t} for c, t in analysis.hallucinated])
            columns["hallucinated_text"].append(
                ", ".join(f"{t} ({c})" for c, t in analysis.hallucinated))
            columns["n_hallucinated"].append(len(analysis.hallucinated))
            columns["spans"].append([{"category": s.category, "term": s.term,
                                      "start": s.start, "end": s.end} for s in analysis.spans])
            columns["detected_language"].append(detect_language(text))
            columns["script_problem"].append(script_problem(text, language))
            columns["norm_text"].append(normalise_text(text))
        extra = pa.table(columns, schema=pa.schema(ANALYSIS_FIELDS))
        base = pa.Table.from_batches([batch])
        for field, column in zip(extra.schema, extra.columns, strict=True):
            base = base.append_column(field, column)
        yield base
