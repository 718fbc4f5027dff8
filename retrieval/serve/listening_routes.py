"""The blind A/B listening test (`adswap serve INDEX --compare INDEX2`): `/listen` (one
query, the top results of two runs side by side in random order, a vote: left, right
or about the same), `/results` (win rates with 95% intervals per pair of runs), and
the same under `/api/`. Audio comes through each trial's own URLs, so nothing on the
page tells the runs apart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from retrieval.search import QueryError
from retrieval.serve.state import PageError, State, audio_response, current
from retrieval.serve.votes import CHOICES

router = APIRouter()
Served = Annotated[State, Depends(current)]


class TrialRequest(BaseModel):
    query: str


class VoteRequest(BaseModel):
    trial: str
    choice: str


def _new_trial(state: State, text: str) -> tuple[str, dict]:
    votes = state.listening()
    hits = {side: state.query(side, lambda s: s.text(text, state.config.listen_k))
            for side in "ab"}
    trial, _ = votes.new_trial(text.strip(), state.labels["a"], state.labels["b"],
                               [h["track_id"] for h in hits["a"]],
                               [h["track_id"] for h in hits["b"]])
    return trial, _blind(votes.trial(trial), hits, trial)


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


@router.get("/listen")
def listen_page(request: Request, state: Served, voted: int = 0):
    votes = state.listening()
    return state.page(request, "listen.html", trial=None, suggestion=state.suggestion(),
                      voted=voted, total=votes.count())


@router.post("/listen")
def listen_start(request: Request, state: Served, q: str = Form("")):
    votes = state.listening()
    try:
        trial, shown = _new_trial(state, q)
    except QueryError as err:
        return state.page(request, "listen.html", status=400, error=str(err), trial=None,
                          suggestion=q, voted=0, total=votes.count())
    return state.page(request, "listen.html", trial=trial, shown=shown,
                      query_text=q.strip(), total=votes.count())


@router.post("/listen/vote")
def listen_vote(state: Served, trial: str = Form(...), choice: str = Form(...)):
    state.listening().vote(trial, choice)
    return RedirectResponse("/listen?voted=1", status_code=303)


@router.get("/listen/audio/{trial}/{slot}/{rank}")
def listen_audio(trial: str, slot: str, rank: int, state: Served):
    shown = state.listening().trial(trial)
    if slot not in ("left", "right") or not 1 <= rank <= len(shown["results"][slot]):
        raise PageError(f"trial {trial} has no result {slot} {rank}", 404)
    side = shown[slot]
    track = shown["results"][slot][rank - 1]
    return audio_response(state.searcher(side).library.audio_path(track))


@router.get("/results")
def results_page(request: Request, state: Served):
    return state.page(request, "results.html", pairs=state.listening().results(),
                      total=state.listening().count())


@router.post("/api/trials")
def api_trial(body: TrialRequest, state: Served):
    trial, shown = _new_trial(state, body.query)
    return {"trial": trial, "query": body.query.strip(), **shown}


@router.post("/api/votes")
def api_vote(body: VoteRequest, state: Served):
    return {"recorded": True, "votes": state.listening().vote(body.trial, body.choice)}


@router.get("/api/results")
def api_results(state: Served):
    return {"pairs": state.listening().results(), "choices": list(CHOICES)}
