"""Exports: every rating as CSV, streamed row by row from the store."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.storage.export import ratings_csv_rows
from app.web.deps import EngineDep

router = APIRouter()


@router.get("/export/ratings.csv", tags=["ratings"], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per rating"}})
async def export_ratings(engine: EngineDep, model: str | None = None, since: datetime | None = None,
                         until: datetime | None = None) -> StreamingResponse:
    """Every rating, one row each, streamed; optional filters by model and date."""
    rows = ratings_csv_rows(engine, model=model, since=since, until=until)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(_in_thread(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="ratings-{stamp}.csv"'})


async def _in_thread(rows: Any) -> Any:
    """Iterate a blocking generator without blocking the event loop."""
    sentinel = object()
    while (row := await asyncio.to_thread(next, rows, sentinel)) is not sentinel:
        yield row
