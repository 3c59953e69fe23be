"""The history of comparisons, page by page."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.compare.validation import MAX_ID
from app.storage import battles, comparisons
from app.web.deps import services
from app.web.templating import templates
from app.web.views import base_context, is_htmx, model_names

router = APIRouter(include_in_schema=False)


HISTORY_PAGE_SIZE = 20


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request, page: int = 1) -> HTMLResponse:
    """Past comparisons, newest first, with thumbnails, prompt, models and ratings."""
    engine = services(request).engine
    page = min(max(1, page), MAX_ID // HISTORY_PAGE_SIZE)
    items = await asyncio.to_thread(comparisons.list_comparisons, engine, HISTORY_PAGE_SIZE,
                                    (page - 1) * HISTORY_PAGE_SIZE)
    total = await asyncio.to_thread(comparisons.count_comparisons, engine)
    revealed = await asyncio.to_thread(battles.revealed_battles, engine, [item["id"] for item in items])
    items = [{**item, "battle": item["id"] in revealed, "revealed": revealed.get(item["id"], True)} for item in items]
    names = model_names(request)
    context = base_context(request, items=items, page=page, total=total, names=names,
                           pages=max(1, -(-total // HISTORY_PAGE_SIZE)))
    name = "_history_rows.html" if is_htmx(request) else "history.html"
    return templates.TemplateResponse(request, name, context)
