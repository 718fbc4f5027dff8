"""What both routers of the page serve from: the searchers, the votes file, the query
list, and the page's shared ways of answering (a template, a query under the model
lock, an upload within its limit, an audio file)."""

from __future__ import annotations

import mimetypes
import random
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import Request, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.templating import Jinja2Templates

from retrieval.config import ServeConfig
from retrieval.search import QueryError, Searcher
from retrieval.serve.votes import VoteError, Votes
from trainer.inference import AudioError

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class PageError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def run_label(manifest: dict) -> str:
    return f"{Path(manifest['run']).name}:{Path(manifest['checkpoint']).stem}:" \
           f"{manifest['checkpoint_sha256'][:8]}"


class State:
    """One or two searchers ('a', and 'b' for a listening test), the votes file, the
    query list."""

    def __init__(self, config: ServeConfig, searchers: dict[str, Searcher]):
        self.config, self.searchers = config, searchers
        self.labels = {side: run_label(s.library.manifest) for side, s in searchers.items()}
        self.title = " vs ".join(self.labels.values())
        self.model_lock = threading.Lock()  # one query on the CPU at a time
        self.votes = None
        self.queries: list[str] = []
        if "b" in searchers:
            if self.labels["a"] == self.labels["b"]:
                raise ValueError("INDEX and --compare come from the same checkpoint; a "
                                 "listening test needs two different models")
            self.votes = Votes(config.votes_file)
            if config.queries:
                lines = Path(config.queries).read_text(encoding="utf-8").splitlines()
                self.queries = [q.strip() for q in lines if q.strip() and not
                                q.startswith("#")]

    def searcher(self, side: str) -> Searcher:
        if side not in self.searchers:
            raise PageError(f"no index {side!r} here (indexes: "
                            f"{', '.join(self.searchers)})", 404)
        return self.searchers[side]

    def suggestion(self) -> str:
        voted = self.votes.voted_queries() if self.votes else set()
        for query in self.queries:
            if query not in voted:
                return query
        library = self.searchers["a"].library
        row = random.randrange(len(library))
        return library.info.column("tags_text")[row].as_py() or ""

    def page(self, request: Request, name: str, status: int = 200, **context) -> Response:
        base = {"compare": self.votes is not None, "labels": self.labels,
                "index_name": self.title, "k": self.config.k}
        return TEMPLATES.TemplateResponse(request, name, {**base, **context},
                                          status_code=status)

    def query(self, side: str, run: Callable[[Searcher], list[dict]]) -> list[dict]:
        searcher = self.searcher(side)
        with self.model_lock:
            hits = run(searcher)
        for hit in hits:
            hit["audio_url"] = f"/audio/{side}/{hit['track_id']}" if hit["audio"] else None
        return hits

    def upload_bytes(self, upload: UploadFile) -> bytes:
        limit = int(self.config.max_upload_mb * 1_000_000)
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise PageError(f"the upload is over {self.config.max_upload_mb:g} MB; send a "
                            "shorter excerpt", 413)
        if not data:
            raise PageError("the upload is empty; choose an audio file", 400)
        return data

    def listening(self) -> Votes:
        if self.votes is None:
            raise PageError("the listening test needs two runs: start the server with "
                            "`adswap serve INDEX --compare INDEX2`", 404)
        return self.votes


def current(request: Request) -> State:
    """The app's state, for the routers' dependencies."""
    return request.app.state.adswap


def audio_response(path: Path) -> FileResponse:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not kind.startswith("audio/"):
        raise PageError("that file is not audio", 403)
    return FileResponse(path, media_type=kind)


def status_of(err: Exception) -> int:
    if isinstance(err, (PageError, VoteError)):
        return err.status
    if isinstance(err, PermissionError):
        return 403
    if isinstance(err, LookupError):
        return 404
    if isinstance(err, AudioError):
        return 415
    if isinstance(err, QueryError):
        return 400
    return 500
