"""`adswap serve`: the search page and, with `--compare`, a blind A/B listening test.

Pages: `/` (text query, audio upload, "more like this" from any result), `/listen`
(one query, the top results of two runs side by side in random order, a vote: left,
right or about the same), `/results` (win rates with 95% intervals per pair of runs).
The same under `/api/` as JSON. Audio is served by track id only: the id is looked up
in the index and its catalog path resolved inside the index's audio root, so nothing a
request sends becomes a file-system path.

Bad input is answered with a 4xx status and its reason, on the page or as
`{"error": ...}`; nothing is written but the votes file.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import random
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from retrieval.config import ServeConfig
from retrieval.search import QueryError, Searcher
from retrieval.serve.votes import CHOICES, VoteError, Votes
from trainer.inference import AudioError

log = logging.getLogger("adswap.serve")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class TrialRequest(BaseModel):
    query: str


class VoteRequest(BaseModel):
    trial: str
    choice: str


class PageError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def run_label(manifest: dict) -> str:
    return f"{Path(manifest['run']).name}:{Path(manifest['checkpoint']).stem}:" \
           f"{manifest['checkpoint_sha256'][:8]}"


class State:
    """What the app serves: one or two searchers, the votes file, the query list."""

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


def create_app(config: ServeConfig, searchers: dict[str, Searcher] | None = None) -> FastAPI:
    """The app; `searchers` ({'a': ..., 'b': ...}) skips loading them from the config."""
    if searchers is None:
        searchers = {"a": Searcher.open(config.index, approximate=config.approximate,
                                        max_query_chars=config.max_query_chars)}
        if config.compare is not None:
            searchers["b"] = Searcher.open(config.compare, approximate=config.approximate,
                                           max_query_chars=config.max_query_chars)
    state = State(config, searchers)
    app = FastAPI(title="adswap", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.adswap = state
    _add_error_handlers(app, state)

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        base = {"compare": state.votes is not None, "labels": state.labels,
                "index_name": state.title, "k": config.k}
        return TEMPLATES.TemplateResponse(request, name, {**base, **context},
                                          status_code=status)

    def query(side: str, run: Callable[[Searcher], list[dict]]) -> list[dict]:
        searcher = state.searcher(side)
        with state.model_lock:
            hits = run(searcher)
        for hit in hits:
            hit["audio_url"] = f"/audio/{side}/{hit['track_id']}" if hit["audio"] else None
        return hits

    def upload_bytes(upload: UploadFile) -> bytes:
        limit = int(config.max_upload_mb * 1_000_000)
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise PageError(f"the upload is over {config.max_upload_mb:g} MB; send a "
                            "shorter excerpt", 413)
        if not data:
            raise PageError("the upload is empty; choose an audio file", 400)
        return data

    # --- search -------------------------------------------------------------------

    @app.get("/")
    def search_page(request: Request, q: str | None = None, like: str | None = None,
                    k: int = config.k, side: str = "a"):
        context = {"q": q or "", "like": like, "side": side, "k": k, "results": None}
        if q is None and like is None:
            return page(request, "search.html", **context)
        try:
            context["results"] = query(side, lambda s: s.like(like, k) if like is not None
                                       else s.text(q, k))
        except (QueryError, LookupError, PageError) as err:
            return page(request, "search.html", status=_status(err), error=str(err),
                        **context)
        return page(request, "search.html", **context)

    @app.post("/")
    def search_upload(request: Request, audio: UploadFile = File(...), k: int = Form(config.k),
                      side: str = Form("a")):
        context = {"q": "", "like": None, "side": side, "k": k, "results": None,
                   "upload": audio.filename}
        try:
            data = upload_bytes(audio)
            context["results"] = query(side, lambda s: s.audio(data, k))
        except (QueryError, AudioError, PageError) as err:
            return page(request, "search.html", status=_status(err), error=str(err),
                        **context)
        return page(request, "search.html", **context)

    @app.get("/api/search")
    def api_search(q: str = "", k: int = config.k, side: str = "a"):
        return {"query": q, "side": side, "results": query(side, lambda s: s.text(q, k))}

    @app.get("/api/similar/{track_id}")
    def api_similar(track_id: str, k: int = config.k, side: str = "a"):
        return {"like": track_id, "side": side,
                "results": query(side, lambda s: s.like(track_id, k))}

    @app.post("/api/search/audio")
    def api_search_audio(audio: UploadFile = File(...), k: int = Form(config.k),
                         side: str = Form("a")):
        data = upload_bytes(audio)
        return {"upload": audio.filename, "side": side,
                "results": query(side, lambda s: s.audio(data, k))}

    @app.get("/audio/{side}/{track_id}")
    def audio_file(side: str, track_id: str):
        return _audio_response(state.searcher(side).library.audio_path(track_id))

    # --- listening test ---------------------------------------------------------------

    def listening() -> Votes:
        if state.votes is None:
            raise PageError("the listening test needs two runs: start the server with "
                            "`adswap serve INDEX --compare INDEX2`", 404)
        return state.votes

    def new_trial(text: str) -> tuple[str, dict]:
        votes = listening()
        hits = {side: query(side, lambda s: s.text(text, config.listen_k)) for side in "ab"}
        trial, _ = votes.new_trial(text.strip(), state.labels["a"], state.labels["b"],
                                   [h["track_id"] for h in hits["a"]],
                                   [h["track_id"] for h in hits["b"]])
        return trial, _blind(votes.trial(trial), hits, trial)

    @app.get("/listen")
    def listen_page(request: Request, voted: int = 0):
        votes = listening()
        return page(request, "listen.html", trial=None, suggestion=state.suggestion(),
                    voted=voted, total=votes.count())

    @app.post("/listen")
    def listen_start(request: Request, q: str = Form("")):
        votes = listening()
        try:
            trial, shown = new_trial(q)
        except QueryError as err:
            return page(request, "listen.html", status=400, error=str(err), trial=None,
                        suggestion=q, voted=0, total=votes.count())
        return page(request, "listen.html", trial=trial, shown=shown, query_text=q.strip(),
                    total=votes.count())

    @app.post("/listen/vote")
    def listen_vote(trial: str = Form(...), choice: str = Form(...)):
        listening().vote(trial, choice)
        return RedirectResponse("/listen?voted=1", status_code=303)

    @app.get("/listen/audio/{trial}/{slot}/{rank}")
    def listen_audio(trial: str, slot: str, rank: int):
        shown = listening().trial(trial)
        if slot not in ("left", "right") or not 1 <= rank <= len(shown["results"][slot]):
            raise PageError(f"trial {trial} has no result {slot} {rank}", 404)
        side = shown[slot]
        track = shown["results"][slot][rank - 1]
        return _audio_response(state.searcher(side).library.audio_path(track))

    @app.get("/results")
    def results_page(request: Request):
        return page(request, "results.html", pairs=listening().results(),
                    total=listening().count())

    @app.post("/api/trials")
    def api_trial(body: TrialRequest):
        trial, shown = new_trial(body.query)
        return {"trial": trial, "query": body.query.strip(), **shown}

    @app.post("/api/votes")
    def api_vote(body: VoteRequest):
        return {"recorded": True, "votes": listening().vote(body.trial, body.choice)}

    @app.get("/api/results")
    def api_results():
        return {"pairs": listening().results(), "choices": list(CHOICES)}

    return app


def _blind(trial: dict, hits: dict[str, list[dict]], trial_id: str) -> dict:
    """The two result lists as left and right, with nothing that tells the runs apart:
    no scores, audio through the trial's own URLs."""
    shown = {}
    for slot in ("left", "right"):
        shown[slot] = [{"rank": h["rank"], "track_id": h["track_id"], "tags_text": h["tags_text"],
                        "audio_url": f"/listen/audio/{trial_id}/{slot}/{h['rank']}"
                        if h["audio"] else None}
                       for h in hits[trial[slot]]]
    return shown


def _audio_response(path: Path) -> FileResponse:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not kind.startswith("audio/"):
        raise PageError("that file is not audio", 403)
    return FileResponse(path, media_type=kind)


def _status(err: Exception) -> int:
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


def _add_error_handlers(app: FastAPI, state: State) -> None:
    def answer(request: Request, message: str, status: int) -> Response:
        if request.url.path.startswith("/api/") or request.url.path.startswith("/audio/") \
                or request.url.path.startswith("/listen/audio/"):
            return JSONResponse({"error": message}, status_code=status)
        return TEMPLATES.TemplateResponse(
            request, "error.html", {"error": message, "status": status,
                                    "compare": state.votes is not None, "labels": state.labels,
                                    "index_name": state.title},
            status_code=status)

    for kind in (PageError, VoteError, QueryError, AudioError, LookupError, PermissionError):
        app.add_exception_handler(
            kind, lambda request, err: answer(request, str(err).strip("'\""), _status(err)))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, err: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: "
                             f"{e['msg']}" for e in err.errors())
        return answer(request, f"invalid request: {problems}", 422)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, err: HTTPException):
        return answer(request, str(err.detail), err.status_code)

    @app.exception_handler(Exception)
    def crashed(request: Request, err: Exception):
        log.exception("internal error on %s", request.url.path)
        return answer(request, "internal error: the server log has the details", 500)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the models load, so a port in use is said at
    once and plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use (another `adswap serve`?); "
                             "pick another with --port") from err
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.listen(128)
    return sock


def serve(config: ServeConfig, announce: Callable[[str], None] = print) -> None:
    import uvicorn

    sock = bind(config.host, config.port)
    try:
        app = create_app(config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        announce(f"serving {config.index} at http://{shown}:{port}/ (Ctrl-C stops it)")
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
