"""HTML pages and htmx fragments: the playground, one comparison, history, the pool, and panel streaming (SSE).

Every template is rendered with autoescape on: prompts, model output, notes and file names are text.
A page template includes its fragment templates; an htmx request gets the fragment alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import string
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from PIL import Image as PILImage

from app.compare.runner import EventKind
from app.compare.validation import MAX_ID, InputError, RowId, Upload
from app.core.catalog import ModelSpec
from app.pool.pool import PoolError
from app.storage import comparisons, files, ratings
from app.storage.db import session
from app.storage.tables import FINISHED_STATUSES, UNFINISHED_STATUSES, Output
from app.web.deps import RATER_MAX_CHARS, rater_of, services
from app.web.routes.api import read_comparison_form
from app.web.templating import TEMPLATES_DIR

HISTORY_PAGE_SIZE = 20
RATER_COOKIE = "rater"
ERROR_SLOTS = ("images", "prompt", "models", "max_new_tokens", "temperature", "seed", "form")

env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                         trim_blocks=True, lstrip_blocks=True)
templates = Jinja2Templates(env=env)
router = APIRouter(include_in_schema=False)

# ---------------------------------------------------------------- formatting


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _gb(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


env.filters.update(secs=_secs, gb=_gb, num=_num)


# ---------------------------------------------------------------- request helpers


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


# ---------------------------------------------------------------- views of the app's state


def pool_view(request: Request) -> dict[str, Any]:
    status = services(request).pool.status()
    return {"budget_gb": status["budget_gb"], "used_gb": status["used_gb"], "free_gb": status["free_gb"],
            "resident": status["resident"], "failures": status.get("failures", {})}


def models_view(request: Request) -> list[dict[str, Any]]:
    """Each catalogue model as the picker shows it: memory figure, state, languages, scores, badges."""
    state = services(request)
    pool, budget = state.pool, state.pool.budget_gb
    reachability = getattr(state, "reachability", {}) or {}
    failures = pool.status().get("failures", {})
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
            reason = f"needs {_gb(planned)} GB; the pool's budget is {_gb(budget)} GB"
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


def _model_names(request: Request) -> dict[str, str]:
    return {spec.id: spec.name for spec in services(request).catalog.models}


def _blind_order(comparison_id: int, output_id: int) -> str:
    return hashlib.sha256(f"{comparison_id}:{output_id}".encode()).hexdigest()


def panels_view(request: Request, comparison: dict[str, Any], rater: str) -> list[dict[str, Any]]:
    """The comparison's outputs as panels; blind ones in a fixed shuffled order, named once rated."""
    names = _model_names(request)
    tiny = {spec.id for spec in services(request).catalog.models if spec.tiny}
    outputs = list(comparison["outputs"])
    blind = bool(comparison["blind"])
    if blind:
        outputs.sort(key=lambda o: _blind_order(comparison["id"], o["id"]))
    panels = []
    for index, output in enumerate(outputs):
        mine = next((r for r in reversed(output.get("ratings", [])) if r["rater"] == rater), None)
        letter = string.ascii_uppercase[index % 26]
        panels.append({
            "id": output["id"], "model": output["model"], "name": names.get(output["model"], output["model"]),
            "label": f"Model {letter}", "blind": blind,
            "reveal": not blind or mine is not None or output["status"] in ("error", "interrupted"),
            "status": output["status"], "text": output.get("text") or "", "error": output.get("error"),
            "ttft_s": output.get("ttft_s"), "total_s": output.get("total_s"), "tokens": output.get("tokens"),
            "tokens_per_s": output.get("tokens_per_s"), "image_note": output.get("image_note"),
            "param_notes": (output.get("params") or {}).get("notes") or [],
            "tiny": output["model"] in tiny,
            "elapsed": None, "rating": mine, "ratings": len(output.get("ratings", [])),
        })
    return panels


def comparison_view(request: Request, comparison: dict[str, Any], rater: str) -> dict[str, Any]:
    panels = panels_view(request, comparison, rater)
    return {**comparison, "panels": panels, "streaming": any(p["status"] in UNFINISHED_STATUSES for p in panels)}


def base_context(request: Request, **extra: Any) -> dict[str, Any]:
    settings = services(request).settings
    return {"request": request, "rater": current_rater(request), "pool": pool_view(request), "demo": settings.demo,
            "limits": settings.limits, "limits_help": settings.limits.help_text(), "error_slots": ERROR_SLOTS,
            **extra}


def page_context(request: Request, form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                 comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the playground page needs: the picker, the form's values and errors, a comparison."""
    form = form or {}
    return base_context(request, models=models_view(request), form=form,
                        chosen=set(form.get("models") or []), errors=errors or {}, comparison=comparison)


def _form_values(prompt: str | None, models: list[str], params: dict[str, Any], blind: bool) -> dict[str, Any]:
    return {"prompt": prompt or "", "models": models, "blind": blind,
            **{key: "" if value is None else str(value) for key, value in params.items()}}


async def _comparison(request: Request, comparison_id: int) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(comparisons.get_comparison, services(request).engine, comparison_id)
    except LookupError:
        raise HTTPException(404, f"comparison {comparison_id} not found") from None


def _not_found(request: Request, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "not_found.html", base_context(request, message=message),
                                      status_code=404)


# ---------------------------------------------------------------- the playground


@router.get("/", response_class=HTMLResponse)
async def playground(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", page_context(request))


@router.post("/compare", response_class=HTMLResponse)
async def compare(request: Request) -> Response:
    """Start a comparison from the page's form: its panels (htmx) or a redirect to its page."""
    runner = services(request).runner
    prompt: str | None = None
    uploads: list[Upload] = []
    models: list[str] = []
    params: dict[str, Any] = {}
    blind = False
    try:
        prompt, uploads, models, params, blind = await read_comparison_form(request)
        form = await request.form()
        rater = current_rater(request, form.get("rater"))
        comparison_id = await runner.submit(prompt, uploads, models, params, rater, blind, stop_when_abandoned=True)
    except InputError as exc:
        errors = {error_slot(exc.field): exc.detail}
        values = _form_values(prompt, models, params, blind)
        if is_htmx(request):
            context = base_context(request, errors=errors, oob=True)
            return templates.TemplateResponse(request, "_form_errors.html", context, status_code=exc.status_code,
                                              headers={"HX-Reswap": "none"})
        return templates.TemplateResponse(request, "index.html", page_context(request, values, errors),
                                          status_code=exc.status_code)
    if not is_htmx(request):
        response: Response = RedirectResponse(f"/comparisons/{comparison_id}", status_code=303)
    else:
        comparison = await _comparison(request, comparison_id)
        context = base_context(request, comparison=comparison_view(request, comparison, rater), errors={},
                               oob=True)
        response = templates.TemplateResponse(request, "_compared.html", context,
                                              headers={"HX-Push-Url": f"/comparisons/{comparison_id}"})
    remember_rater(response, rater)
    return response


@router.get("/comparisons/{comparison_id}", response_class=HTMLResponse)
async def comparison_page(request: Request, comparison_id: RowId) -> Response:
    """One comparison, finished or still streaming; the form is filled in with its prompt and models."""
    try:
        comparison = await asyncio.to_thread(comparisons.get_comparison, services(request).engine, comparison_id)
    except LookupError:
        return _not_found(request, f"There is no comparison {comparison_id}.")
    view = comparison_view(request, comparison, current_rater(request))
    if is_htmx(request):
        return templates.TemplateResponse(request, "_comparison.html", base_context(request, comparison=view))
    params = comparison.get("params") or {}
    values = _form_values(comparison["prompt"], [o["model"] for o in comparison["outputs"]],
                          {key: params.get(key) for key in ("max_new_tokens", "temperature", "seed")},
                          bool(comparison["blind"]))
    return templates.TemplateResponse(request, "index.html", page_context(request, values, comparison=view))


# ---------------------------------------------------------------- streaming panels


async def _existing_comparison(request: Request, comparison_id: RowId) -> dict[str, Any]:
    return await _comparison(request, comparison_id)


def _render(name: str, **context: Any) -> str:
    return env.get_template(name).render(**context).strip()


def _state_event(panel: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(raw_data=_render("_panel_state.html", p=panel), event=f"state-{panel['id']}")


def _text_event(output_id: int, **change: str) -> ServerSentEvent:
    """Text goes as JSON ({"set": …} or {"append": …}); the page adds it with textContent, never as HTML."""
    return ServerSentEvent(data=change, event=f"text-{output_id}")


class _PanelSource:
    """Renders a comparison's panels from the database when a panel finishes (its footer, rating form)."""

    def __init__(self, request: Request, comparison: dict[str, Any], rater: str) -> None:
        self.request, self.comparison_id, self.rater = request, comparison["id"], rater
        self.panels = {p["id"]: p for p in panels_view(request, comparison, rater)}

    async def refresh(self) -> None:
        engine = services(self.request).engine
        comparison = await asyncio.to_thread(comparisons.get_comparison, engine, self.comparison_id)
        self.panels = {p["id"]: p for p in panels_view(self.request, comparison, self.rater)}

    def panel(self, output_id: int, state: str, info: dict[str, Any]) -> dict[str, Any]:
        panel = dict(self.panels.get(output_id) or {"id": output_id})
        panel["status"] = state
        if state in ("loading", "generating") and info.get("since"):
            panel["elapsed"] = max(0.0, time.time() - float(info["since"]))
        panel["detail"] = info.get("detail") if state == "loading" else None
        if state == "done" and info.get("total_s") is not None:
            panel["total_s"] = info["total_s"]
        return panel

    def foot_event(self, output_id: int) -> ServerSentEvent:
        panel = self.panels[output_id]
        return ServerSentEvent(raw_data=_render("_panel_foot.html", p=panel, oob_name=True),
                               event=f"foot-{output_id}")


@router.get("/comparisons/{comparison_id}/events", response_class=EventSourceResponse)
async def comparison_events(request: Request, comparison_id: RowId,
                            comparison: dict[str, Any] = Depends(_existing_comparison)) -> AsyncIterator[
                                ServerSentEvent]:
    """The panels' live updates: state lines and footers as escaped HTML, text pieces as JSON."""
    runner = services(request).runner
    source = _PanelSource(request, comparison, current_rater(request))
    async for event in runner.subscribe(comparison_id):
        if event.kind == EventKind.END:
            yield ServerSentEvent(raw_data="end", event="end")
            return
        oid = event.output_id
        finished = event.state in FINISHED_STATUSES
        if finished and event.kind in (EventKind.SNAPSHOT, EventKind.DONE, EventKind.ERROR):
            await source.refresh()
        if event.kind == EventKind.TEXT:
            yield _text_event(oid, append=event.text)
            continue
        if event.kind in (EventKind.SNAPSHOT, EventKind.STATE, EventKind.DONE, EventKind.ERROR):
            yield _state_event(source.panel(oid, event.state, event.info))
        if event.kind == EventKind.SNAPSHOT:
            yield _text_event(oid, set=event.text)
        if finished and oid in source.panels:
            yield source.foot_event(oid)


# ---------------------------------------------------------------- ratings


def _output_row(engine: Any, output_id: int) -> Output | None:
    with session(engine, read_only=True) as db:
        return db.get(Output, output_id)


@router.post("/outputs/{output_id}/rating", response_class=HTMLResponse)
async def rate_output(request: Request, output_id: RowId) -> Response:
    """Save the current rater's score and note; the rating form comes back saying "saved" (422 naming the field)."""
    engine = services(request).engine
    form = await request.form()
    rater = current_rater(request, form.get("rater"))
    raw_score, note = form.get("score"), form.get("note") or ""
    row = await asyncio.to_thread(_output_row, engine, output_id)
    if row is None:
        raise HTTPException(404, f"output {output_id} not found")
    error, score = None, None
    if raw_score in (None, ""):
        error = "score: pick from 1 to 5 stars"
    else:
        try:
            score = int(str(raw_score))
        except ValueError:
            error = f"score: must be a whole number from 1 to 5 (got {str(raw_score)[:20]!r})"
    if not isinstance(note, str):
        error = "note: must be text"
    if error is None and score is not None and isinstance(note, str):
        try:
            await asyncio.to_thread(ratings.rate, engine, output_id, score, note, rater)
        except LookupError:
            raise HTTPException(404, f"output {output_id} not found") from None
        except ValueError as exc:
            error = str(exc)
    if not is_htmx(request):
        if error is not None:
            return HTMLResponse(f"<p>{escape(error)}</p>", status_code=422)
        response: Response = RedirectResponse(f"/comparisons/{row.comparison_id}", status_code=303)
        remember_rater(response, rater)
        return response
    comparison = await _comparison(request, row.comparison_id)
    panel = next(p for p in panels_view(request, comparison, rater) if p["id"] == output_id)
    if error is not None:
        panel["rating"] = {"score": score if score in range(1, 6) else None, "note": str(note)}
    context = {"p": panel, "saved": error is None, "rating_error": error, "reveal_oob": error is None}
    response = templates.TemplateResponse(request, "_rating.html", context, status_code=422 if error else 200)
    remember_rater(response, rater)
    return response


@router.post("/rater")
async def set_rater(request: Request) -> Response:
    """Remember the rater name typed in the header (a cookie)."""
    form = await request.form()
    response = Response(status_code=204)
    given = form.get("rater")
    if isinstance(given, str) and given.strip():
        remember_rater(response, given.strip())
    else:
        response.delete_cookie(RATER_COOKIE)
    return response


# ---------------------------------------------------------------- history, pool, images


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request, page: int = 1) -> HTMLResponse:
    """Past comparisons, newest first, with thumbnails, prompt, models and ratings."""
    engine = services(request).engine
    page = min(max(1, page), MAX_ID // HISTORY_PAGE_SIZE)
    items = await asyncio.to_thread(comparisons.list_comparisons, engine, HISTORY_PAGE_SIZE,
                                    (page - 1) * HISTORY_PAGE_SIZE)
    total = await asyncio.to_thread(comparisons.count_comparisons, engine)
    names = _model_names(request)
    context = base_context(request, items=items, page=page, total=total, names=names,
                           pages=max(1, -(-total // HISTORY_PAGE_SIZE)))
    name = "_history_rows.html" if is_htmx(request) else "history.html"
    return templates.TemplateResponse(request, name, context)


@router.get("/pool", response_class=HTMLResponse)
async def pool_fragment(request: Request) -> HTMLResponse:
    """The self-polling pool summary; for htmx, the picker's model states come along out of band."""
    oob = is_htmx(request)
    context = base_context(request, models=models_view(request) if oob else [], oob=oob)
    return templates.TemplateResponse(request, "_pool.html", context)


_MIME_BY_EXTENSION = {ext.lstrip("."): PILImage.MIME.get(fmt) for ext, fmt in PILImage.registered_extensions().items()}


@router.get("/images/{sha256}")
async def image(request: Request, sha256: str) -> FileResponse:
    """A stored image by its hash (never by the uploaded name)."""
    try:
        path = files.image_path(services(request).settings.data_dir, sha256)
    except (ValueError, FileNotFoundError):
        raise HTTPException(404, "no such image") from None
    media_type = _MIME_BY_EXTENSION.get(path.suffix.lstrip(".").lower()) or "application/octet-stream"
    if not media_type.startswith("image/"):
        media_type = "application/octet-stream"
    # nosniff and the Content-Security-Policy come with every answer (app.security)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=31536000, immutable"})

