"""The search page: `/` (a text query, an audio upload, "more like this" from any
result), the same under `/api/`, and each track's audio by its id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from retrieval.search import QueryError
from retrieval.serve.state import PageError, State, audio_response, current, status_of
from trainer.inference import AudioError

router = APIRouter()
Served = Annotated[State, Depends(current)]


@router.get("/")
def search_page(request: Request, state: Served, q: str | None = None,
                like: str | None = None, k: int | None = None, side: str = "a"):
    k = state.config.k if k is None else k
    context = {"q": q or "", "like": like, "side": side, "k": k, "results": None}
    if q is None and like is None:
        return state.page(request, "search.html", **context)
    try:
        context["results"] = state.query(side, lambda s: s.like(like, k) if like is not None
                                         else s.text(q, k))
    except (QueryError, LookupError, PageError) as err:
        return state.page(request, "search.html", status=status_of(err), error=str(err),
                          **context)
    return state.page(request, "search.html", **context)


@router.post("/")
def search_upload(request: Request, state: Served, audio: UploadFile = File(...),
                  k: int | None = Form(None), side: str = Form("a")):
    k = state.config.k if k is None else k
    context = {"q": "", "like": None, "side": side, "k": k, "results": None,
               "upload": audio.filename}
    try:
        data = state.upload_bytes(audio)
        context["results"] = state.query(side, lambda s: s.audio(data, k))
    except (QueryError, AudioError, PageError) as err:
        return state.page(request, "search.html", status=status_of(err), error=str(err),
                          **context)
    return state.page(request, "search.html", **context)


@router.get("/api/search")
def api_search(state: Served, q: str = "", k: int | None = None, side: str = "a"):
    k = state.config.k if k is None else k
    return {"query": q, "side": side, "results": state.query(side, lambda s: s.text(q, k))}


@router.get("/api/similar/{track_id}")
def api_similar(track_id: str, state: Served, k: int | None = None, side: str = "a"):
    k = state.config.k if k is None else k
    return {"like": track_id, "side": side,
            "results": state.query(side, lambda s: s.like(track_id, k))}


@router.post("/api/search/audio")
def api_search_audio(state: Served, audio: UploadFile = File(...),
                     k: int | None = Form(None), side: str = Form("a")):
    k = state.config.k if k is None else k
    data = state.upload_bytes(audio)
    return {"upload": audio.filename, "side": side,
            "results": state.query(side, lambda s: s.audio(data, k))}


@router.get("/audio/{side}/{track_id}")
def audio_file(side: str, track_id: str, state: Served):
    return audio_response(state.searcher(side).library.audio_path(track_id))
