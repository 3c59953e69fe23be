"""Ratings from the page (saved without reloading) and the rater's name."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from app.compare.validation import RowId
from app.storage import battles, comparisons, ratings
from app.web.deps import services
from app.web.templating import templates
from app.web.views import RATER_COOKIE, current_rater, is_htmx, panels_view, remember_rater

router = APIRouter(include_in_schema=False)


class Saved(NamedTuple):
    """What saving a rating from the page found: the output's comparison (None: no such output), whether the
    output was hidden (nothing saved), the refusal of the rating's values, and the comparison for the fragment."""

    comparison_id: int | None
    hidden: bool = False
    error: str | None = None
    comparison: dict[str, Any] | None = None


def save_from_page(engine: Any, output_id: int, score: int | None, note: str | None, rater: str, error: str | None,
                   fragment: bool) -> Saved:
    """The page's rating in one worker-thread call: find the output and its battle, save the score unless the
    form was refused already (`error`), and read the comparison back (with this rater's ratings only, all
    the form shows) when the answer is the form fragment."""
    found = battles.output_to_rate(engine, output_id)
    if found is None:
        return Saved(None)
    comparison_id, hidden = found
    if hidden:
        return Saved(comparison_id, hidden=True)
    if error is None and score is not None:
        try:
            ratings.rate(engine, output_id, score, note, rater)
        except LookupError:  # the output went between the look-up and the write
            return Saved(None)
        except ValueError as exc:
            error = str(exc)
    if not fragment:
        return Saved(comparison_id, error=error)
    try:
        return Saved(comparison_id, error=error, comparison=comparisons.get_comparison(engine, comparison_id, rater))
    except LookupError:  # answered 404 naming the comparison
        return Saved(comparison_id, error=error)


@router.post("/outputs/{output_id}/rating", response_class=HTMLResponse)
async def rate_output(request: Request, output_id: RowId) -> Response:
    """Save the current rater's score and note; the rating form comes back saying "saved" (422 naming the field).
    A form without a `note` field (a click on a star alone) keeps the note saved before."""
    engine = services(request).engine
    form = await request.form()
    rater = current_rater(request, form.get("rater"))
    raw_score, note = form.get("score"), form.get("note")
    error, score = None, None
    if raw_score in (None, ""):
        error = "score: pick from 1 to 5 stars"
    else:
        try:
            score = int(str(raw_score))
        except ValueError:
            error = f"score: must be a whole number from 1 to 5 (got {str(raw_score)[:20]!r})"
    if note is not None and not isinstance(note, str):
        error = "note: must be text"
    saved = await asyncio.to_thread(save_from_page, engine, output_id, score, note if isinstance(note, str) else None,
                                    rater, error, is_htmx(request))
    if saved.comparison_id is None:
        raise HTTPException(404, f"output {output_id} not found")
    if saved.hidden:
        raise HTTPException(409, f"output {output_id} is a panel of a battle without a vote: vote first")
    error = saved.error
    if not is_htmx(request):
        if error is not None:
            return HTMLResponse(f"<p>{escape(error)}</p>", status_code=422)
        response: Response = RedirectResponse(f"/comparisons/{saved.comparison_id}", status_code=303)
        remember_rater(response, rater)
        return response
    if saved.comparison is None:
        raise HTTPException(404, f"comparison {saved.comparison_id} not found")
    panel = next(p for p in panels_view(request, saved.comparison, rater) if p["id"] == output_id)
    if error is not None:
        kept = (panel.get("rating") or {}).get("note", "")
        panel["rating"] = {"score": score if score in range(1, 6) else None,
                           "note": note if isinstance(note, str) else kept}
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
