"""The JSON member of a WebDataset sample: one audio clip and every curated view of it.

`text` is the plain list of captions that LAION-CLAP's and open_clip's audio loaders
read, so those tools can train on our shards unchanged; `views` carries the same
captions with their ids, language and the descriptor spans TextSwap edits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.catalog import SPLITS
from schemas.problems import Problem
from schemas.views import Span

SAMPLE_SCHEMA_ID = "sample/1"
TAGS_SEPARATOR = ", "


def tags_text(tags: Mapping[str, Sequence[str]]) -> tuple[str, list[dict]]:
    """The tags as text ('rock, happy, electric guitar'), category by category, and each
    tag's span in it, as the views' spans are written. The one definition: the shards
    stage writes the text into samples, and the trainer takes text and spans from here
    when p_cap draws the tags, so a tag that itself holds ', ' still gets its own span."""
    pieces, spans, start = [], [], 0
    for category, values in tags.items():
        for tag in values:
            if pieces:
                start += len(TAGS_SEPARATOR)
            pieces.append(tag)
            spans.append({"category": category, "term": tag, "start": start,
                          "end": start + len(tag)})
            start += len(tag)
    return TAGS_SEPARATOR.join(pieces), spans


@dataclass(frozen=True)
class SampleView:
    view_id: int
    language: str
    text: str
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    track_id: str
    clip_index: int
    start_s: float
    end_s: float
    sample_rate: int
    split: str
    tags: Mapping[str, list[str]]
    tags_text: str
    views: list[SampleView]
    provenance: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.track_id}-{self.clip_index}"

    def to_json(self) -> dict:
        # Built by hand: dataclasses.asdict deep-copies every view and span, which cost
        # the shards stage a tenth of its time.
        views = [{"view_id": v.view_id, "language": v.language, "text": v.text,
                  "spans": [{"category": s.category, "term": s.term, "start": s.start,
                             "end": s.end} for s in v.spans]} for v in self.views]
        return {"track_id": self.track_id, "clip_index": self.clip_index,
                "start_s": self.start_s, "end_s": self.end_s, "sample_rate": self.sample_rate,
                "split": self.split, "tags": {c: list(t) for c, t in self.tags.items()},
                "tags_text": self.tags_text, "views": views,
                "provenance": dict(self.provenance), "schema": SAMPLE_SCHEMA_ID,
                "text": [v.text for v in self.views]}

    @classmethod
    def from_json(cls, body: Mapping, file: str = "<sample>") -> Sample:
        problems = validate_sample_json(body, file)
        if problems:
            raise ValueError("\n".join(str(p) for p in problems))
        views = [SampleView(view_id=v["view_id"], language=v["language"], text=v["text"],
                            spans=[Span(**s) for s in v["spans"]]) for v in body["views"]]
        return cls(track_id=body["track_id"], clip_index=body["clip_index"],
                   start_s=body["start_s"], end_s=body["end_s"],
                   sample_rate=body["sample_rate"], split=body["split"], tags=body["tags"],
                   tags_text=body["tags_text"], views=views,
                   provenance=body.get("provenance", {}))


SHARDS_REBUILD = "rebuild them with this version: `adswap shards --overwrite`"
EVAL_SET_REBUILD = "import it again with this version: `adswap import-eval`"


class SampleError(ValueError):
    """A sample json this version cannot read (another schema version, a broken file)."""


def read_sample_json(raw: bytes, where: str, rebuild: str = SHARDS_REBUILD) -> dict:
    """A sample's json member, parsed and checked, as a dict (the loader reads millions:
    no dataclasses). `where` names it ('train-000003.tar:abc-0.json'); `rebuild` says
    how to remake the shard set when it was written by another version."""
    try:
        body = json.loads(raw)
    except (ValueError, TypeError) as err:  # a bad member, or bytes that are not UTF-8
        raise SampleError(f"{where}: not a sample json ({err}); {rebuild}") from err
    if not isinstance(body, dict):
        raise SampleError(f"{where}: not a sample json (a {type(body).__name__}); {rebuild}")
    if body.get("schema") != SAMPLE_SCHEMA_ID:
        raise SampleError(f"{where}: written as {body.get('schema')!r} samples, but this "
                          f"version of adswap reads '{SAMPLE_SCHEMA_ID}'; {rebuild}")
    problems = validate_sample_json(body, where)
    if problems:
        raise SampleError("\n".join(str(p) for p in problems) + f"\n({rebuild})")
    return body


_REQUIRED = {
    "track_id": str, "clip_index": int, "start_s": (int, float), "end_s": (int, float),
    "sample_rate": int, "split": str, "tags": dict, "tags_text": str, "views": list,
    "text": list,
}


def validate_sample_json(body: Mapping, file: str) -> list[Problem]:
    """Check a sample's json; `file` names the tar member, e.g. 'train-000003.tar:abc-0.json'."""
    problems: list[Problem] = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(file, None, name, message))

    if body.get("schema") != SAMPLE_SCHEMA_ID:
        problem("schema", f"is {body.get('schema')!r}; this version reads '{SAMPLE_SCHEMA_ID}'")
    for name, kind in _REQUIRED.items():
        if name not in body:
            problem(name, "is missing")
        elif not isinstance(body[name], kind) or isinstance(body[name], bool):
            problem(name, f"has type {type(body[name]).__name__}")
    if problems:
        return problems
    if body["split"] not in SPLITS:
        problem("split", f"'{body['split']}' is not one of {', '.join(SPLITS)}")
    if not body["end_s"] > body["start_s"] >= 0:
        problem("end_s", f"clip [{body['start_s']}, {body['end_s']}] is empty or negative")
    for i, view in enumerate(body["views"]):
        text = view.get("text") if isinstance(view, Mapping) else None
        if not isinstance(text, str):
            problem(f"views[{i}].text", "is missing")
            continue
        for j, span in enumerate(view.get("spans", [])):
            start, end = span.get("start", -1), span.get("end", -1)
            if not (0 <= start < end <= len(text)):
                problem(f"views[{i}].spans[{j}]", f"[{start}, {end}) is outside the caption")
            elif not span.get("term") or not span.get("category"):
                # the term is the dictionary entry, which may be a synonym of the text slice
                problem(f"views[{i}].spans[{j}]", "needs a category and a term")
    if body["text"] != [v.get("text") for v in body["views"] if isinstance(v, Mapping)]:
        problem("text", "must list the views' captions in order")
    return problems
