"""Reference captions for evaluation: one row per (track, caption, language).

Written independently of any caption engine (the demo's grammar, or a user's human
captions such as Song Describer); a track may have several.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.problems import with_schema_id

EVAL_CAPTIONS_SCHEMA_ID = "eval_captions/1"


def eval_captions_schema() -> pa.Schema:
    return with_schema_id(pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("caption_id", pa.int32(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]), EVAL_CAPTIONS_SCHEMA_ID)

