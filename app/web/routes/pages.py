"""The playground page, the compare form, one comparison's page, the pool fragment, stored images."""

from __future__ import annotations

import asyncio
import html
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from PIL import Image as PILImage

from app.compare.validation import InputError, RowId, Upload
from app.storage import battles, comparisons, files
from app.web.deps import client_of, services
from app.web.routes.api import read_comparison_form
from app.web.templating import templates
from app.web.views import (
    _form_values,
    base_context,
    comparison_view,
    current_rater,
    error_slot,
    is_htmx,
    models_view,
    not_found,
    page_context,
    remember_rater,
)

router = APIRouter(include_in_schema=False)


_MIME_BY_EXTENSION = {ext.lstrip("."): PILImage.MIME.get(fmt) for ext, fmt in PILImage.registered_extensions().items()}


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
        comparison_id = await runner.submit(prompt, uploads, models, params, rater, blind, stop_when_abandoned=True,
                                             client=client_of(request))
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
        comparison = await _just_compared(request, comparison_id)
        context = base_context(request, comparison=comparison_view(request, comparison, rater), errors={},
                               oob=True)
        response = templates.TemplateResponse(request, "_compared.html", context,
                                              headers={"HX-Push-Url": f"/comparisons/{comparison_id}"})
    remember_rater(response, rater)
    return response


async def _just_compared(request: Request, comparison_id: int) -> dict[str, Any]:
    """The comparison just started, and whether the rater has a battle pending (the header asks), in one
    trip to a thread: the models' answers are starting on the same event loop, and every store read done
    there or in a second thread delays them."""
    engine, rater = services(request).engine, current_rater(request)

    def read() -> tuple[dict[str, Any], bool]:
        return comparisons.get_comparison(engine, comparison_id), battles.has_unrevealed_battle(engine, rater)

    comparison, request.state.battle_pending = await asyncio.to_thread(read)
    return comparison


@router.get("/comparisons/{comparison_id}", response_class=HTMLResponse)
async def comparison_page(request: Request, comparison_id: RowId) -> Response:
    """One comparison, finished or still streaming; the form is filled in with its prompt and models."""
    try:
        comparison = await asyncio.to_thread(comparisons.get_comparison, services(request).engine, comparison_id)
    except LookupError:
        return not_found(request, f"There is no comparison {comparison_id}.")
    battle_id = await asyncio.to_thread(battles.battle_of_comparison, services(request).engine, comparison_id)
    if battle_id is not None:  # a battle's own page is the one that keeps it blind
        return RedirectResponse(f"/battles/{battle_id}", status_code=303)
    view = comparison_view(request, comparison, current_rater(request))
    if is_htmx(request):
        return templates.TemplateResponse(request, "_comparison.html", base_context(request, comparison=view))
    params = comparison.get("params") or {}
    values = _form_values(comparison["prompt"], [o["model"] for o in comparison["outputs"]],
                          {key: params.get(key) for key in ("max_new_tokens", "temperature", "seed")},
                          bool(comparison["blind"]))
    values["reused"] = comparison["images"]  # "run again": its stored images, sent back by hash
    return templates.TemplateResponse(request, "index.html", page_context(request, values, comparison=view))


@router.post("/comparisons/{comparison_id}/outputs/{output_id}/retry", response_class=HTMLResponse)
async def retry_panel(request: Request, comparison_id: RowId, output_id: RowId) -> Response:
    """A failed or stopped panel answered again: the comparison, following its panels again (htmx swaps it)."""
    runner = services(request).runner
    try:
        await runner.retry(comparison_id, output_id, client=client_of(request))
    except LookupError:
        return not_found(request, f"There is no output {output_id} in comparison {comparison_id}.")
    except InputError as exc:
        return HTMLResponse(f'<p class="error-message">{html.escape(exc.detail)}</p>', status_code=exc.status_code,
                            headers={"HX-Reswap": "none"})
    comparison = await _just_compared(request, comparison_id)
    view = comparison_view(request, comparison, current_rater(request))
    return templates.TemplateResponse(request, "_comparison.html", base_context(request, comparison=view))


@router.get("/pool", response_class=HTMLResponse)
async def pool_fragment(request: Request, picker: bool = False) -> HTMLResponse:
    """The self-polling pool summary; for htmx from a page with the picker, its model states come along
    out of band."""
    oob = is_htmx(request) and picker
    context = base_context(request, models=models_view(request) if oob else [], oob=oob, picker=picker)
    return templates.TemplateResponse(request, "_pool.html", context)


@router.get("/images/{sha256}")
async def image(request: Request, sha256: str) -> FileResponse:
    """A stored image by its hash (never by the uploaded name)."""
    try:
        path = files.image_path(services(request).settings.data_dir, sha256)
    except ValueError:
        raise HTTPException(404, "no such image") from None
    except FileNotFoundError:
        if await asyncio.to_thread(comparisons.image_recorded, services(request).engine, sha256):
            raise HTTPException(404, f"image {sha256} is recorded but its file is missing (an upload cut short): "
                                     "uploading the image again restores it") from None
        raise HTTPException(404, "no such image") from None
    media_type = _MIME_BY_EXTENSION.get(path.suffix.lstrip(".").lower()) or "application/octet-stream"
    if not media_type.startswith("image/"):
        media_type = "application/octet-stream"
    # nosniff and the Content-Security-Policy come with every answer (app.security)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=31536000, immutable"})
