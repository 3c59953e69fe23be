"""Ratings from the page (saved without reloading) and the rater's name."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from app.compare.validation import RowId
from app.storage import battles, ratings
from app.storage.db import session
from app.storage.tables import Output
from app.web.deps import services
from app.web.templating import templates
from app.web.views import RATER_COOKIE, current_rater, is_htmx, load_comparison, panels_view, remember_rater

router = APIRouter(include_in_schema=False)


def output_row(engine: Any, output_id: int) -> Output | None:
    with session(engine, read_only=True) as db:
        return db.get(Output, output_id)


@router.post("/outputs/{output_id}/rating", response_class=HTMLResponse)
async def rate_output(request: Request, output_id: RowId) -> Response:
    """Save the current rater's score and note; the rating form comes back saying "saved" (422 naming the field)."""
    engine = services(request).engine
    form = await request.form()
    rater = current_rater(request, form.get("rater"))
    raw_score, note = form.get("score"), form.get("note") or ""
    row = await asyncio.to_thread(output_row, engine, output_id)
    if row is None:
        raise HTTPException(404, f"output {output_id} not found")
    if await asyncio.to_thread(battles.output_hidden, engine, output_id):
        raise HTTPException(409, f"output {output_id} is a panel of a battle without a vote: vote first")
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
    comparison = await load_comparison(request, row.comparison_id)
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
