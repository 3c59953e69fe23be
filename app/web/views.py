"""What the pages show, built from the app's state: the picker, panels, pool, form context, the rater."""

from __future__ import annotations

import asyncio
import hashlib
import string
from typing import Any
from urllib.parse import quote, unquote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from app.compare.validation import RowId
from app.core.catalog import ModelSpec
from app.pool.pool import PoolError
from app.storage import battles, comparisons
from app.storage.tables import UNFINISHED_STATUSES
from app.web.deps import RATER_MAX_CHARS, account_of, rater_of, services
from app.web.markdown import render_markdown
from app.web.templating import gb, templates

RATER_COOKIE = "rater"


ERROR_SLOTS = ("images", "prompt", "models", "max_new_tokens", "temperature", "seed", "form")


def is_htmx(request: Request) -> bool:
    """An htmx request for a fragment (a history restore wants the whole page)."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def current_rater(request: Request, given: Any = None) -> str:
    """The rater named in the form, else the `rater` cookie (percent-encoded), else the default name."""
    if isinstance(given, str) and given.strip():
        return rater_of(request, given)
    cookie = request.cookies.get(RATER_COOKIE)
    return rater_of(request, unquote(cookie) if cookie else None)


def remember_rater(response: Response, rater: str) -> None:
    """Keep the rater's name in a cookie, percent-encoded so any name survives the header."""
    response.set_cookie(RATER_COOKIE, quote(rater[:RATER_MAX_CHARS], safe=""), max_age=365 * 86400,
                        httponly=True, samesite="lax")


def error_slot(field: str) -> str:
    """Which error line of the form a refused field's message goes to."""
    if field.startswith("images"):
        return "images"
    return field if field in ERROR_SLOTS else "form"


def battle_pending(request: Request) -> bool:
    """Whether the current rater has a battle without a vote: the page then names no model's pool state.
    Asked of the store once per request (the header and the picker both need it)."""
    pending = getattr(request.state, "battle_pending", None)
    if pending is None:
        pending = battles.has_unrevealed_battle(services(request).engine, current_rater(request))
        request.state.battle_pending = pending
    return bool(pending)


def pool_view(request: Request) -> dict[str, Any]:
    """The pool for the header: budget, use and residents; only the totals while a battle of this rater's is
    unrevealed (which models are loading or busy would tell which are in it)."""
    status = services(request).pool.status()
    detail = not battle_pending(request)
    return {"budget_gb": status["budget_gb"], "used_gb": status["used_gb"], "free_gb": status["free_gb"],
            "resident": status["resident"] if detail else [], "resident_count": len(status["resident"]),
            "detail": detail, "failures": status.get("failures", {}) if detail else {}}


def models_view(request: Request) -> list[dict[str, Any]]:
    """Each catalogue model as the picker shows it: memory figure, state, languages, scores, badges.

    While a battle of this rater's is unrevealed, loading and resident states are not shown."""
    state = services(request)
    pool, budget = state.pool, state.pool.budget_gb
    reachability = state.reachability
    hide = battle_pending(request)
    failures = {} if hide else pool.status().get("failures", {})
    rows = []
    for index, spec in enumerate(state.catalog.models):
        planned: float | None = None
        reason = None if spec.available else (spec.unavailable_reason or "unavailable")
        reason = reason or reachability.get(spec.id)
        if spec.is_remote:
            pool_state = "remote"
        else:
            try:
                planned = pool.planned_gb(spec)
            except PoolError:
                planned = None
            pool_state = pool.state_of(spec.id)
        if reason:
            pool_state = "unavailable"
        elif pool_state == "too large":
            reason = f"needs {gb(planned)} GB; the pool's budget is {gb(budget)} GB"
        elif hide and pool_state in ("resident", "loading", "parked"):
            pool_state = "fits"  # the plan stays honest enough; which model is busy would tell too much
        rows.append({
            "index": index, "id": spec.id, "name": spec.name, "repo": spec.display_repo, "planned_gb": planned,
            "source": spec.min_gpu_gb_source, "state": pool_state, "reason": reason,
            "disabled": bool(reason), "languages": spec.languages, "languages_note": spec.languages_note,
            "scores": spec.scores, "tiny": spec.tiny, "multi_image": spec.multi_image, "notes": spec.notes,
            "remote": spec.is_remote, "failure": failures.get(spec.id),
            "limits": capability_badges(spec),
        })
    return rows


def capability_badges(spec: ModelSpec) -> list[tuple[str, str]]:
    """(badge, explanation) pairs for what a model cannot do or take, shown on its card."""
    badges: list[tuple[str, str]] = []
    caps, budget = spec.capabilities, spec.input_budget
    if not caps.sampling:
        badges.append(("greedy only", "this model decodes greedily: temperature and top_p are ignored"))
    elif not caps.seed:
        badges.append(("no seed", "this model's sampling cannot be seeded: answers do not repeat"))
    if not caps.streaming:
        badges.append(("no streaming", "the answer arrives all at once when it is finished"))
    if budget.context_tokens:
        badges.append((f"{budget.context_tokens // 1024}k ctx" if budget.context_tokens >= 1024
                       else f"{budget.context_tokens} ctx",
                       f"context of {budget.context_tokens:,} tokens for the prompt, its images and the answer"))
    return badges


def model_names(request: Request) -> dict[str, str]:
    return {spec.id: spec.name for spec in services(request).catalog.models}


def _blind_order(comparison_id: int, output_id: int) -> str:
    return hashlib.sha256(f"{comparison_id}:{output_id}".encode()).hexdigest()


def panels_view(request: Request, comparison: dict[str, Any], rater: str,
                battle: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The comparison's outputs as panels; blind ones in a fixed shuffled order, named once rated.

    A battle's panels keep their stored order and labels and name nothing (no model, timings, notes or
    errors) until the battle has a vote."""
    names = model_names(request)
    tiny = {spec.id for spec in services(request).catalog.models if spec.tiny}
    outputs = list(comparison["outputs"])
    blind = bool(comparison["blind"])
    labels = {panel["output_id"]: panel["label"] for panel in battle["panels"]} if battle else {}
    voted = bool(battle and battle["votes"])
    if blind and not battle:
        outputs.sort(key=lambda o: _blind_order(comparison["id"], o["id"]))
    panels = []
    for index, output in enumerate(outputs):
        mine = next((r for r in reversed(output.get("ratings", [])) if r["rater"] == rater), None)
        letter = labels.get(output["id"]) or string.ascii_uppercase[index % 26]
        reveal = voted if battle else not blind or mine is not None or output["status"] in ("error", "interrupted")
        applied = output.get("params") or {}
        panels.append({
            "id": output["id"], "model": output["model"], "name": names.get(output["model"], output["model"]),
            "comparison_id": comparison["id"] if battle is None else None,  # stop and retry (not in a battle)
            "label": f"Model {letter}", "letter": letter, "blind": blind, "battle": battle is not None,
            "cut": bool(output.get("tokens") and applied.get("max_new_tokens")
                        and output["tokens"] >= applied["max_new_tokens"]),
            "reveal": reveal,
            "status": output["status"], "text": output.get("text") or "", "error": output.get("error"),
            # a finished answer is shown as sanitised markdown; one still streaming as the text it has so far
            "html": None if output["status"] in UNFINISHED_STATUSES else render_markdown(output.get("text")),
            "ttft_s": output.get("ttft_s"), "total_s": output.get("total_s"), "tokens": output.get("tokens"),
            "tokens_per_s": output.get("tokens_per_s"), "image_note": output.get("image_note"),
            "param_notes": (output.get("params") or {}).get("notes") or [],
            "tiny": output["model"] in tiny,
            "elapsed": None, "rating": mine, "ratings": len(output.get("ratings", [])),
        })
    return panels


def comparison_view(request: Request, comparison: dict[str, Any], rater: str,
                    battle: dict[str, Any] | None = None) -> dict[str, Any]:
    panels = panels_view(request, comparison, rater, battle)
    return {**comparison, "panels": panels, "battle": battle,
            "streaming": any(p["status"] in UNFINISHED_STATUSES for p in panels)}


def base_context(request: Request, **extra: Any) -> dict[str, Any]:
    settings = services(request).settings
    return {"request": request, "rater": current_rater(request), "account": account_of(request),
            "pool": pool_view(request), "demo": settings.demo,
            "limits": settings.limits, "limits_help": settings.limits.help_text(), "error_slots": ERROR_SLOTS,
            **extra}


def page_context(request: Request, form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                 comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the playground page needs: the picker, the form's values and errors, a comparison."""
    form = form or {}
    return base_context(request, models=models_view(request), form=form, picker=True,
                        chosen=set(form.get("models") or []), errors=errors or {}, comparison=comparison)


def _form_values(prompt: str | None, models: list[str], params: dict[str, Any], blind: bool) -> dict[str, Any]:
    return {"prompt": prompt or "", "models": models, "blind": blind,
            **{key: "" if value is None else str(value) for key, value in params.items()}}


async def load_comparison(request: Request, comparison_id: int) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(comparisons.get_comparison, services(request).engine, comparison_id)
    except LookupError:
        raise HTTPException(404, f"comparison {comparison_id} not found") from None


def not_found(request: Request, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "not_found.html", base_context(request, message=message),
                                      status_code=404)


async def existing_comparison(request: Request, comparison_id: RowId) -> dict[str, Any]:
    return await load_comparison(request, comparison_id)
