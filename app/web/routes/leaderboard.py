"""The leaderboard: Bradley–Terry ratings with 95 % intervals from the stored votes, as JSON, as a page
with its picture (SVG drawn here, so it works under the page's CSP), and the battles export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from app.evaluate.leaderboard import BATTLE_COLUMNS, MAX_BOOTSTRAP_ROUNDS, battle_rows
from app.evaluate.leaderboard import Query as BoardQuery
from app.storage.export import neutralise
from app.web.deps import EngineDep, ServicesDep
from app.web.spool import spooled_download
from app.web.templating import templates
from app.web.views import base_context

router = APIRouter()


def _query(since: datetime | None, until: datetime | None, rater: str | None, include_flagged: bool,
           ci: str, rounds: int) -> BoardQuery:
    return BoardQuery(since=since, until=until, rater=rater or None, include_flagged=include_flagged,
                      ci="bootstrap" if ci == "bootstrap" else "sandwich", rounds=rounds)


@router.get("/api/leaderboard", tags=["leaderboard"])
async def leaderboard_api(running: ServicesDep, since: datetime | None = None, until: datetime | None = None,
                          rater: str | None = Query(None, max_length=200), include_flagged: bool = False,
                          ci: Literal["sandwich", "bootstrap"] = "sandwich",
                          rounds: int = Query(100, ge=2, le=MAX_BOOTSTRAP_ROUNDS)) -> dict[str, Any]:
    """Ratings (Elo scale, centred on 1000) with 95 % intervals, ranks by interval, votes, wins, ties, mean
    1–5 scores with intervals, median speeds, and the pairwise win-rate and vote-count matrices."""
    names = {spec.id: spec.name for spec in running.catalog.models}
    query = _query(since, until, rater, include_flagged, ci, rounds)
    return await asyncio.to_thread(running.leaderboards.get, running.engine, query, names)


@router.get("/leaderboard", response_class=HTMLResponse, include_in_schema=False)
async def leaderboard_page(request: Request, running: ServicesDep, since: datetime | None = None,
                           until: datetime | None = None, rater: str | None = Query(None, max_length=200),
                           include_flagged: bool = False, ci: Literal["sandwich", "bootstrap"] = "sandwich",
                           rounds: int = Query(100, ge=2, le=MAX_BOOTSTRAP_ROUNDS)) -> HTMLResponse:
    names = {spec.id: spec.name for spec in running.catalog.models}
    query = _query(since, until, rater, include_flagged, ci, rounds)
    board = await asyncio.to_thread(running.leaderboards.get, running.engine, query, names)
    context = base_context(request, board=board, chart=chart(board["models"]),
                           filters={"since": since, "until": until, "rater": rater or "",
                                    "include_flagged": include_flagged, "ci": ci, "rounds": rounds})
    return templates.TemplateResponse(request, "leaderboard.html", context)


def chart(models: list[dict[str, Any]], width: int = 640, row: int = 26) -> dict[str, Any]:
    """Coordinates for the ratings picture: one row per model, a dot at the rating, a bar for its interval."""
    if not models:
        return {"rows": [], "width": width, "height": 0, "ticks": []}
    values = [v for m in models for v in (m["rating"], m["ci_low"], m["ci_high"]) if v is not None]
    low, high = min(values), max(values)
    pad = max(10.0, (high - low) * 0.08)
    low, high = low - pad, high + pad
    left, right = 190, width - 20

    def x(value: float) -> float:
        return round(left + (value - low) / (high - low) * (right - left), 1)

    rows = []
    for index, m in enumerate(models):
        y = 30 + index * row
        rows.append({"y": y, "label": m["name"], "rating": round(m["rating"]), "x": x(m["rating"]),
                     "x_low": x(m["ci_low"]) if m["ci_low"] is not None else None,
                     "x_high": x(m["ci_high"]) if m["ci_high"] is not None else None,
                     "provisional": m["provisional"]})
    step = next((step for step in (10, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000) if (high - low) / step <= 7),
                10_000)
    ticks = [{"x": x(v), "value": v} for v in range(int(low // step + 1) * step, int(high) + 1, step)]
    return {"rows": rows, "width": width, "height": 40 + len(models) * row, "ticks": ticks, "axis_y": 18}


@router.get("/export/battles.csv", tags=["leaderboard"], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per pairwise outcome"}})
async def export_battles_csv(engine: EngineDep, include_flagged: bool = True) -> StreamingResponse:
    """Every pairwise outcome with FastChat's battle columns, plus ours (battle, panels, prompt, images…)."""
    return await spooled_download(lambda: _csv(list(battle_rows(engine, include_flagged))),
                                  "text/csv; charset=utf-8", "battles.csv")


@router.get("/export/battles.jsonl", tags=["leaderboard"], response_class=StreamingResponse,
            responses={200: {"content": {"application/jsonl": {}}, "description": "one outcome a line"}})
async def export_battles_jsonl(engine: EngineDep, include_flagged: bool = True) -> StreamingResponse:
    return await spooled_download(lambda: (json.dumps(row, ensure_ascii=False) + "\n"
                                           for row in battle_rows(engine, include_flagged)),
                                  "application/jsonl; charset=utf-8", "battles.jsonl")


def _csv(rows: list[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(BATTLE_COLUMNS)
    for row in rows:
        writer.writerow([neutralise(_cell(row[column])) for column in BATTLE_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
