"""Turn raw LLM output into a caption, flagging (never deleting) doubtful outputs.

Curation decides what to drop; this step only cleans the wrapping a chat model puts
around an answer and records what it saw in `flags` (schemas/views.py FLAGS).
"""

from __future__ import annotations

import re

MAX_WORDS = 60
_LEAD_IN = re.compile(
    r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|here(?:'s| is| you go)|great)\b"
    r"[^\n:]*?(?::|!|\.)\s*(?:\n+|(?=\S))", re.IGNORECASE)
_LABEL = re.compile(r"^\s*\**\s*(?:caption|description)\s*\**\s*:\s*\**\s*", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i cannot|i can't|i can not|i'?m unable|i am unable|"
    r"as an ai)\b", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"


def parse_caption(raw: str, finish_reason: str, max_words: int = MAX_WORDS
                  ) -> tuple[str, list[str]]:
    flags: list[str] = []
    text = raw.strip()
    for _ in range(3):  # "Sure! Here is a caption:" is two lead-ins
        stripped = _LEAD_IN.sub("", text, count=1)
        if stripped == text or not stripped.strip():
            break
        if "boilerplate_stripped" not in flags:
            flags.append("boilerplate_stripped")
        text = stripped
    text = _LABEL.sub("", text, count=1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text.strip().strip(_QUOTES).strip()
    if not text:
        flags.append("empty")
    if finish_reason == "length":
        flags.append("truncated")
    if _REFUSAL.search(raw):
        flags.append("refusal")
    if len(text.split()) > max_words:
        flags.append("too_long")
    return text, flags
