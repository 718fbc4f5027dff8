"""`adswap translate-captions`: eval captions into other languages with the caption
stage's LLM engine (vLLM or an OpenAI-compatible server), for multilingual evaluation.

Reads a caption file (CSV, TSV, JSONL or Parquet, as `adswap import-eval` takes it),
translates every caption in `--source` language into each `--languages` code, and
writes the original rows plus one row per translation (same track and caption_id, the
new language), which `adswap import-eval` then turns into eval shards. A failed or
truncated translation is left out and counted, never written half.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.captions.engines import ENGINES, EngineConfig, Request, Sampling, make_engine
from pipeline.captions.models import default_cache_dir
from schemas.atomic import atomic_path
from schemas.config import Config, setting
from schemas.languages import LANGUAGES, unknown_languages  # any of them, by name
from schemas.problems import SchemaError
from schemas.tabular import iter_rows

SYSTEM = ("You translate short descriptions of music. Keep every genre, mood and "
          "instrument. Answer with the translation only.")


@dataclass(frozen=True)
class TranslateConfig(Config):
    file: Path = setting(help="Caption file (CSV, TSV, JSONL or Parquet), as `import-eval` "
                         "reads it.")
    out: Path = setting(help="Output file (.parquet, .jsonl, .csv or .tsv): the original "
                        "rows plus the translations.")
    languages: tuple[str, ...] = setting(("de", "fr", "it", "es"), help="Target language "
                                         f"codes; known: {', '.join(LANGUAGES)}.")
    source: str = setting("en", help="Language of the captions to translate.")
    engine: EngineConfig = setting(factory=EngineConfig, help="The LLM engine: one that "
                                   "translates (" + ", ".join(
                                       n for n, s in ENGINES.items() if s.translates) + ").")
    sampling: Sampling = setting(factory=lambda: Sampling(temperature=0.0, max_tokens=128),
                                 help="Greedy by default: a translation, not a variation.")
    cache_dir: Path = setting(factory=default_cache_dir, help="Where the bundled model is "
                              "converted to.")
    batch: int = setting(256, help="Requests handed to the engine at once.")

    def check(self) -> list[str]:
        problems = unknown_languages(self.languages)
        if not self.languages:
            problems.append("languages must list at least one code")
        if self.engine.engine in ENGINES and not self.engine.spec.translates:
            problems.append(f"engine: the {self.engine.engine} engine cannot translate; use "
                            + " or ".join(n for n, s in ENGINES.items() if s.translates))
        if self.batch < 1:
            problems.append("batch must be >= 1")
        return problems


@dataclass
class TranslateStats:
    source_rows: int = 0
    translated: int = 0
    failed: Counter = field(default_factory=Counter)


def request_for(text: str, language: str, request_id: str) -> Request:
    seed = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "little")
    return Request(request_id, [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Translate into {LANGUAGES[language].name}:\n{text}"}],
        tags={}, language=language, seed=seed)


def run(config: TranslateConfig) -> TranslateStats:
    if not Path(config.file).exists():
        raise ValueError(f"caption file {config.file} does not exist")
    read = list(iter_rows(config.file))
    problems = [r.problem for r in read if r.problem is not None]
    if problems:  # every row is written back, so none may be left out
        raise SchemaError(f"{config.file} has rows that cannot be read", problems)
    rows = [r.values for r in read]
    stats = TranslateStats()
    source = [(i, r) for i, r in enumerate(rows)
              if str(r.get("language") or "en") == config.source
              and str(r.get("caption") or r.get("text") or "").strip()]
    stats.source_rows = len(source)
    requests = [request_for(str(r.get("caption") or r.get("text")), lang, f"{i}:{lang}")
                for i, r in source for lang in config.languages]
    engine = make_engine(config.engine, config.cache_dir)
    results = {}
    for start in range(0, len(requests), config.batch):
        for result in engine.generate(requests[start:start + config.batch], config.sampling):
            results[result.request_id] = result
    out_rows = [dict(r) for r in rows]
    for i, row in source:
        for lang in config.languages:
            result = results.get(f"{i}:{lang}")
            text = " ".join(result.text.split()) if result is not None else ""
            if result is None or result.finish_reason != "stop" or not text:
                stats.failed[result.finish_reason if result is not None else "missing"] += 1
                continue
            key = "caption" if "caption" in row else "text"
            out_rows.append({**row, key: text, "language": lang})
            stats.translated += 1
    _write(out_rows, Path(config.out))
    return stats


def _write(rows: list[dict], path: Path) -> None:
    suffix = path.suffix.lower()
    columns = list(dict.fromkeys(k for r in rows for k in r))  # rows may lack a column
    rows = [{c: r.get(c) for c in columns} for r in rows]
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        elif suffix in (".jsonl", ".json"):
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                           encoding="utf-8")
        elif suffix in (".csv", ".tsv"):
            import csv

            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, columns,
                                        delimiter="\t" if suffix == ".tsv" else ",")
                writer.writeheader()
                writer.writerows(rows)
        else:
            raise ValueError(f"{path}: write .parquet, .jsonl, .csv or .tsv")
