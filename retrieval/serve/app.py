"""`adswap serve`: the search page and, with `--compare`, a blind A/B listening test,
as two routers over one state (retrieval/serve/state.py): search_routes.py (`/`, its
`/api/` twins, each track's audio) and listening_routes.py (`/listen`, `/results`,
theirs). Audio is served by track id only: the id is looked up in the index and its
catalog path resolved inside the index's audio root, so nothing a request sends becomes
a file-system path.

Bad input is answered with a 4xx status and its reason, on the page or as
`{"error": ...}`; nothing is written but the votes file.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from retrieval.config import ServeConfig
from retrieval.search import QueryError, Searcher
from retrieval.serve import listening_routes, search_routes
from retrieval.serve.state import TEMPLATES, PageError, State, status_of
from retrieval.serve.votes import VoteError
from trainer.inference import AudioError

log = logging.getLogger("adswap.serve")


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
    app.include_router(search_routes.router)
    app.include_router(listening_routes.router)
    return app


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
            kind, lambda request, err: answer(request, str(err).strip("'\""), status_of(err)))

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
