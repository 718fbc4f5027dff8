"""Why a track or a row was left out: one table of reject kinds.

Every line of a `rejects.jsonl` (`adswap shards`, `adswap import-eval`) is a `Reject`:
the track (and the input row, where there is one), the `stage` that found it (catalog,
plan, rows, audio), its `kind` from KINDS, and `reason`, the full message for a person
("audio is 2.31 s, shorter than one 10 s clip"). Reports count rejects by stage and
kind and show the kind's label, so two tracks of different lengths are one line of the
report, and no count depends on how a message is worded.

To add a reject reason: add its kind and label to KINDS, and record it with that kind
(`Reject(...)`, or `AudioReject(kind, message)` in the audio code).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KINDS = {
    # the catalog and the plan (adswap shards)
    "invalid_catalog_row": "invalid catalog row",
    "no_curated_views": "no curated views",
    "not_in_catalog": "curated views name a track that is not in the catalog",
    # audio (adswap shards and adswap import-eval)
    "audio_path": "audio path cannot be used",
    "missing_audio": "audio file is missing",
    "unreadable_audio": "unreadable audio",
    "truncated_audio": "truncated audio",
    "empty_audio": "audio file has no samples",
    "non_finite_audio": "audio holds NaN or infinite samples",
    "too_short": "shorter than one clip",
    "silent": "silent",
    # rows of an eval file (adswap import-eval)
    "unreadable_row": "row cannot be read",
    "no_caption": "no caption",
    "no_audio": "no audio path and no catalog track",
    "bad_track_id": "track_id is not a safe name",
    "bad_caption_id": "caption_id is not a whole number",
    "conflicting_audio": "track already has other audio",
}


@dataclass(frozen=True)
class Reject:
    track_id: str
    stage: str
    kind: str
    reason: str
    row: int | None = None  # the input row (from 1), for rejects of a user's file

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reject kind {self.kind!r} is not in pipeline/rejects.KINDS")

    def to_json(self) -> dict:
        body = {"track_id": self.track_id, "stage": self.stage, "kind": self.kind,
                "reason": self.reason}
        return body if self.row is None else {**body, "row": self.row}


def count_rejects(rejects: Iterable[Mapping]) -> Counter:
    """Rejects (their JSON form) per 'stage: label', e.g. 'audio: truncated audio'."""
    return Counter(f"{r['stage']}: {KINDS[r['kind']]}" for r in rejects)
