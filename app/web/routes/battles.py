"""Battles: start one (page or API), watch its anonymous panels, vote, and see who was who."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import escape
from pydantic import BaseModel, Field

from app.compare.battles import DEFAULT_K, MAX_K, VoteRefused, candidates, cast_vote, draw
from app.compare.validation import InputError, RowId
from app.storage import battles, comparisons
from app.storage.battles import FLAG_REASON_MAX_CHARS
from app.web.deps import RATER_MAX_CHARS, AdminOnly, EngineDep, Services, ServicesDep, client_of, rater_of, services
from app.web.routes.api import REFUSALS, read_comparison_form, refusal
from app.web.schemas import Refusal
from app.web.templating import templates
from app.web.views import base_context, comparison_view, current_rater, is_htmx, not_found, remember_rater

router = APIRouter()


class VoteIn(BaseModel):
    winner: str = Field(max_length=16, description='the best panel\'s label ("A", "B", …), "tie" or "bothbad"')
    rater: str | None = Field(default=None, max_length=RATER_MAX_CHARS)


class BattlePanelOut(BaseModel):
    label: str
    output_id: int
    status: str
    text: str


class VoteSummary(BaseModel):
    id: int
    rater: str
    winner: str
    flagged: bool
    flag_reason: str | None


class BattleOut(BaseModel):
    """A battle as anyone may see it before its vote: labels, never models."""

    id: int
    comparison_id: int
    panels: list[BattlePanelOut]
    revealed: bool
    models: list[dict[str, str]] | None = None  # after a vote: label, model, name
    votes: list[VoteSummary] | None = None  # after a vote: each rater's, with its flag


class FlagIn(BaseModel):
    flagged: bool = Field(description="true: leave the vote out of the leaderboard (unless include_flagged)")
    reason: str = Field(default="", max_length=FLAG_REASON_MAX_CHARS, description="why, shown with the vote")


class FlagOut(BaseModel):
    vote_id: int
    battle_id: int
    rater: str
    winner: str
    flagged: bool
    flag_reason: str | None


class VoteOut(BaseModel):
    vote_id: int
    battle_id: int
    winner: str
    flagged: bool
    flag_reason: str | None
    panels: list[dict[str, str]]


async def start_battle(request: Request, rater: str) -> tuple[int, int]:
    """Read the battle form, draw its models when none were picked, start it: (battle id, comparison id)."""
    running = services(request)
    prompt, uploads, models, params, _ = await read_comparison_form(request)
    form = await request.form()
    drawn = not models
    if drawn:
        raw_k = str(form.get("k") or DEFAULT_K)
        if not raw_k.isdigit():
            raise InputError("k", f"must be a whole number from 2 to {MAX_K} (got {raw_k[:10]!r})")
        pair_counts = await asyncio.to_thread(battles.pair_vote_counts, running.engine)
        models = draw(candidates(running.catalog, running.pool, running.reachability), int(raw_k), pair_counts,
                      random.Random())
    elif len(models) < 2:
        raise InputError("models", "a battle needs at least two models (or none: the server then draws them)")
    elif len(models) > MAX_K:
        raise InputError("models", f"{len(models)} models picked; a battle takes at most {MAX_K}")
    comparison_id = await running.runner.submit(prompt, uploads, models, params, rater, battle=True, drawn=drawn,
                                                stop_when_abandoned=is_htmx(request), client=client_of(request))
    battle_id = await asyncio.to_thread(battles.battle_of_comparison, running.engine, comparison_id)
    assert battle_id is not None
    return battle_id, comparison_id


def battle_body(battle: dict[str, Any], catalog_names: dict[str, str]) -> dict[str, Any]:
    """The API's view of a battle: no model names until it has a vote."""
    revealed = bool(battle["votes"])
    body: dict[str, Any] = {
        "id": battle["id"], "comparison_id": battle["comparison_id"], "revealed": revealed,
        "panels": [{"label": p["label"], "output_id": p["output_id"], "status": p["status"], "text": p["text"]}
                   for p in battle["panels"]],
    }
    if revealed:
        body["models"] = [{"label": p["label"], "model": p["model"], "name": catalog_names.get(p["model"], p["model"])}
                          for p in battle["panels"]]
        body["votes"] = [{key: v[key] for key in ("id", "rater", "winner", "flagged", "flag_reason")}
                         for v in battle["votes"]]
    return body


@router.post("/api/battles", status_code=201, tags=["battles"], response_model=BattleOut, responses=REFUSALS)
async def create_battle(request: Request, running: ServicesDep) -> JSONResponse:
    """Multipart like `/api/comparisons`: prompt, images, optional models (none: the server draws `k`, default
    2, preferring pairs with the fewest votes), settings. Waits for the answers; 201 with labelled panels."""
    try:
        battle_id, comparison_id = await start_battle(request, rater_of(request))
    except InputError as exc:
        return refusal(exc)
    waiting = asyncio.create_task(running.runner.wait(comparison_id))
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=0.5)
        if not waiting.done() and await request.is_disconnected():
            running.runner.cancel(comparison_id, "the client went away")
    battle = await asyncio.to_thread(battles.get_battle, running.engine, battle_id)
    return JSONResponse(battle_body(battle, _names(running)), status_code=201)


@router.get("/api/battles/{battle_id}", tags=["battles"], response_model=BattleOut,
            responses={404: {"model": Refusal, "description": "no such battle"}})
async def get_battle(battle_id: RowId, running: ServicesDep) -> dict[str, Any]:
    try:
        battle = await asyncio.to_thread(battles.get_battle, running.engine, battle_id)
    except LookupError:
        raise HTTPException(404, f"battle {battle_id} not found") from None
    return battle_body(battle, _names(running))


@router.post("/api/battles/{battle_id}/vote", status_code=201, tags=["battles"], response_model=VoteOut,
             responses={200: {"model": VoteOut, "description": "the rater's earlier vote, replaced"},
                        404: {"model": Refusal, "description": "no such battle"},
                        409: {"model": Refusal, "description": "still answering, or fewer than two answers"},
                        422: {"model": Refusal, "description": "a winner that is not a finished panel"}})
async def vote_api(request: Request, battle_id: RowId, body: VoteIn, running: ServicesDep) -> JSONResponse:
    """Vote for the best panel, a tie, or "bothbad"; the same rater again replaces the vote (200). The answer
    reveals each panel's model."""
    rater = rater_of(request, body.rater)
    try:
        result = await asyncio.to_thread(cast_vote, running.engine, running.catalog, battle_id, rater, body.winner)
    except LookupError:
        raise HTTPException(404, f"battle {battle_id} not found") from None
    except InputError as exc:
        return refusal(exc)
    return JSONResponse({"vote_id": result.vote_id, "battle_id": battle_id, "winner": body.winner,
                         "flagged": result.flagged,
                         "flag_reason": result.flag_reason, "panels": result.panels},
                        status_code=201 if result.created else 200)


@router.post("/api/votes/{vote_id}/flag", tags=["battles"], response_model=FlagOut, dependencies=[AdminOnly],
             responses={403: {"model": Refusal, "description": "a rater's account (flags are for admins)"},
                        404: {"model": Refusal, "description": "no such vote"},
                        422: {"model": Refusal, "description": "a reason that is not plain text"}})
async def flag_vote(vote_id: RowId, body: FlagIn, running: ServicesDep) -> dict[str, Any]:
    """Set or clear a vote's flag (an admin's override of the automatic check): flagged votes are left out
    of the leaderboard unless it is asked to include them."""
    try:
        saved = await asyncio.to_thread(battles.set_flag, running.engine, vote_id, body.flagged, body.reason or None)
    except LookupError:
        raise HTTPException(404, f"vote {vote_id} not found") from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"vote_id": vote_id, "battle_id": saved.battle_id, "rater": saved.rater, "winner": saved.winner,
            "flagged": saved.flagged, "flag_reason": saved.flag_reason}


# ---------------------------------------------------------------- the page


@router.post("/battles", response_class=HTMLResponse, include_in_schema=False)
async def battle_form(request: Request) -> Response:
    """The page's Battle button: start one and go to its own page (which names no model until the vote)."""
    form = await request.form()
    rater = current_rater(request, form.get("rater"))
    try:
        battle_id, _ = await start_battle(request, rater)
    except InputError as exc:
        if is_htmx(request):
            context = base_context(request, errors={"form" if exc.field not in ("images", "prompt", "models")
                                                    else exc.field: exc.detail}, oob=True)
            return templates.TemplateResponse(request, "_form_errors.html", context, status_code=exc.status_code,
                                              headers={"HX-Reswap": "none"})
        return JSONResponse({"detail": exc.detail, "field": exc.field}, status_code=exc.status_code)
    target = f"/battles/{battle_id}"
    response: Response = (Response(status_code=204, headers={"HX-Redirect": target}) if is_htmx(request)
                          else RedirectResponse(target, status_code=303))
    remember_rater(response, rater)
    return response


@router.get("/battles/{battle_id}", response_class=HTMLResponse, include_in_schema=False)
async def battle_page(request: Request, battle_id: RowId, engine: EngineDep) -> Response:
    try:
        battle = await asyncio.to_thread(battles.get_battle, engine, battle_id)
    except LookupError:
        return not_found(request, f"There is no battle {battle_id}.")
    comparison = await asyncio.to_thread(comparisons.get_comparison, engine, battle["comparison_id"])
    rater = current_rater(request)
    view = comparison_view(request, comparison, rater, battle)
    mine = next((v for v in battle["votes"] if v["rater"] == rater), None)
    context = base_context(request, comparison=view, battle=battle, my_vote=mine)
    name = "_battle.html" if is_htmx(request) else "battle.html"
    return templates.TemplateResponse(request, name, context)


@router.post("/battles/{battle_id}/vote", response_class=HTMLResponse, include_in_schema=False)
async def vote_form(request: Request, battle_id: RowId, running: ServicesDep) -> Response:
    """The page's vote buttons: record the vote, then show the battle revealed."""
    form = await request.form()
    rater = current_rater(request, form.get("rater"))
    try:
        await asyncio.to_thread(cast_vote, running.engine, running.catalog, battle_id, rater,
                                str(form.get("winner") or ""))
    except LookupError:
        return not_found(request, f"There is no battle {battle_id}.")
    except (VoteRefused, InputError) as exc:
        return HTMLResponse(f'<p class="field-error" id="vote-error">{escape(exc.detail)}</p>',
                            status_code=exc.status_code, headers={"HX-Retarget": "#vote-error"})
    response = await battle_page(request, battle_id, running.engine)
    remember_rater(response, rater)
    return response


def _names(running: Services) -> dict[str, str]:
    return {spec.id: spec.name for spec in running.catalog.models}
