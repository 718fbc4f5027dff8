"""`adswap search`: text, audio ("query by example") and more-like-this queries against
an embedded catalog, with the model that embedded it.

The model comes from the run named in the index's manifest, or from `--model` (a run
folder or an `adswap export` folder); either way its checkpoint's sha256 must be the
one the index was embedded with, so queries and tracks live in the same space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.config import SearchConfig
from retrieval.library import Library, top_k
from trainer.inference import Encoder, read_audio


class QueryError(ValueError):
    """A query that cannot be run; the message says what to change."""


def check_text(text: str, limit: int) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise QueryError("the query is empty: type a few words about the music you want")
    if len(text) > limit:
        raise QueryError(f"the query is {len(text):,} characters long; the limit is "
                         f"{limit:,}")
    return text


def load_encoder(manifest: dict, model: Path | None, device: str = "cpu") -> Encoder:
    """The model an index was embedded with, refusing any other."""
    if model is not None and (Path(model) / "config.json").exists():
        from trainer.export import load_model

        encoder = load_model(model, device)
        source = f"exported model {model}"
    else:
        run = Path(model or manifest["run"])
        if not run.exists():
            raise ValueError(f"the run {run} that embedded this index is gone; pass --model "
                             "with that run or its `adswap export` folder")
        encoder = Encoder.from_run(run, Path(manifest["checkpoint"]).stem, device)
        source = f"run {run} ({manifest['checkpoint']})"
    have, want = encoder.identity["checkpoint_sha256"], manifest["checkpoint_sha256"]
    if have != want:
        raise ValueError(f"the index was embedded with checkpoint {want[:12]} of "
                         f"{manifest['run']}, but the {source} is checkpoint {have[:12]}: "
                         "another run, or this run trained further. Rebuild the index with "
                         "`adswap embed`, or pass the model it was made with (--model)")
    return encoder


class Searcher:
    """An embedded catalog and the model that made it."""

    def __init__(self, library: Library, encoder: Encoder | None, approximate: bool = False,
                 max_query_chars: int = 1000):
        self.library, self.encoder = library, encoder
        self.max_query_chars = max_query_chars
        self.approximate = None
        if approximate:
            from retrieval.ann import Approximate

            self.approximate = Approximate(library)

    @classmethod
    def open(cls, folder: Path, model: Path | None = None, approximate: bool = False,
             max_query_chars: int = 1000, device: str = "cpu") -> Searcher:
        library = Library.open(folder)
        return cls(library, load_encoder(library.manifest, model, device), approximate,
                   max_query_chars)

    def text(self, query: str, k: int) -> list[dict]:
        query = check_text(query, self.max_query_chars)
        return self.nearest(self._encoder().embed_text([query])[0], k)

    def audio(self, source: str | Path | bytes, k: int) -> list[dict]:
        data, rate = read_audio(source)
        return self.nearest(self._encoder().embed_audio(data, rate), k)

    def like(self, track_id: str, k: int) -> list[dict]:
        """More like this: the track's own embedding as the query, itself left out."""
        row = self.library.row(track_id)
        return self.nearest(self.library.vectors[row], k, exclude=row)

    def nearest(self, vector: np.ndarray, k: int, exclude: int | None = None) -> list[dict]:
        if not 1 <= k <= 1000:
            raise QueryError(f"k is {k}; ask for 1 to 1000 results")
        want = k + (exclude is not None)
        query = np.asarray(vector, dtype=np.float32)[None]
        if self.approximate is not None:
            scores, rows = self.approximate.search(query, want)
        else:
            scores, rows = top_k(query, self.library.vectors, want)
        keep = rows[0] != exclude if exclude is not None else np.ones(rows.shape[1], bool)
        return self.library.hits(scores[0][keep][:k], rows[0][keep][:k])

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise QueryError("this index was opened without its model; only more-like-this "
                             "queries work")
        return self.encoder


def search(config: SearchConfig) -> dict:
    if config.query:
        check_text(config.query, config.max_query_chars)  # before the model loads
    library = Library.open(config.index)
    encoder = None if config.like else load_encoder(library.manifest, config.model)
    searcher = Searcher(library, encoder, config.approximate, config.max_query_chars)
    if config.like:
        hits, query = searcher.like(config.like, config.k), {"like": config.like}
    elif config.audio is not None:
        hits, query = searcher.audio(config.audio, config.k), {"audio": str(config.audio)}
    else:
        hits, query = searcher.text(config.query, config.k), {"text": config.query.strip()}
    for hit in hits:
        try:
            hit["audio_path"] = str(library.audio_path(hit["track_id"]))
        except (LookupError, PermissionError):
            hit["audio_path"] = None
    method = "approximate" if searcher.approximate is not None else "exact"
    return {"index": str(config.index), "query": query, "method": method, "results": hits}
