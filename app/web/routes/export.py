"""Exports: every rating as CSV, produced whole from the store, then sent."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.storage.export import write_ratings_csv
from app.web.deps import EngineDep
from app.web.spool import spooled_file_download

router = APIRouter()


@router.get("/export/ratings.csv", tags=["ratings"], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per rating"}})
async def export_ratings(engine: EngineDep, model: str | None = None, since: datetime | None = None,
                         until: datetime | None = None) -> StreamingResponse:
    """Every rating, one row each; optional filters by model and date. The file is written whole before
    it is sent (one read transaction, one csv writer), so a store that cannot be read answers 503 instead of
    a file cut short."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return await spooled_file_download(
        lambda out: write_ratings_csv(engine, out, model=model, since=since, until=until),
        "text/csv; charset=utf-8", f"ratings-{stamp}.csv")
