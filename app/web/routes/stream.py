"""A comparison's panels live over SSE: state lines and footers as escaped HTML, text pieces as JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.compare.runner import EventKind
from app.compare.validation import RowId
from app.storage import battles, comparisons
from app.storage.tables import FINISHED_STATUSES
from app.web.deps import services
from app.web.templating import render
from app.web.views import current_rater, existing_comparison, panels_view

router = APIRouter(include_in_schema=False)


def _state_event(panel: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(raw_data=render("_panel_state.html", p=panel), event=f"state-{panel['id']}")


def _text_event(output_id: int, **change: str) -> ServerSentEvent:
    """Text goes as JSON ({"set": …} or {"append": …}); the page adds it with textContent, never as HTML."""
    return ServerSentEvent(data=change, event=f"text-{output_id}")


class _PanelSource:
    """Renders a comparison's panels from the database when a panel finishes (its footer, rating form)."""

    def __init__(self, request: Request, comparison: dict[str, Any], rater: str,
                 battle: dict[str, Any] | None) -> None:
        self.request, self.comparison_id, self.rater = request, comparison["id"], rater
        self.battle_id = battle["id"] if battle else None
        self.panels = {p["id"]: p for p in panels_view(request, comparison, rater, battle)}

    async def refresh(self) -> None:
        engine = services(self.request).engine
        comparison = await asyncio.to_thread(comparisons.get_comparison, engine, self.comparison_id)
        battle = await asyncio.to_thread(battles.get_battle, engine, self.battle_id) if self.battle_id else None
        self.panels = {p["id"]: p for p in panels_view(self.request, comparison, self.rater, battle)}

    def panel(self, output_id: int, state: str, info: dict[str, Any]) -> dict[str, Any]:
        panel = dict(self.panels.get(output_id) or {"id": output_id})
        panel["status"] = state
        if state in ("loading", "generating") and info.get("since"):
            panel["elapsed"] = max(0.0, time.time() - float(info["since"]))
        panel["detail"] = info.get("detail") if state == "loading" else None
        panel["ahead"] = info.get("ahead") if state == "queued" else None
        if state == "done" and info.get("total_s") is not None:
            panel["total_s"] = info["total_s"]
        return panel

    def foot_event(self, output_id: int) -> ServerSentEvent:
        panel = self.panels[output_id]
        return ServerSentEvent(raw_data=render("_panel_foot.html", p=panel, oob_name=True),
                               event=f"foot-{output_id}")


@router.get("/comparisons/{comparison_id}/events", response_class=EventSourceResponse)
async def comparison_events(request: Request, comparison_id: RowId,
                            comparison: dict[str, Any] = Depends(existing_comparison)) -> AsyncIterator[
                                ServerSentEvent]:
    """The panels' live updates: state lines and footers as escaped HTML, text pieces as JSON."""
    runner, engine = services(request).runner, services(request).engine
    battle_id = await asyncio.to_thread(battles.battle_of_comparison, engine, comparison_id)
    battle = await asyncio.to_thread(battles.get_battle, engine, battle_id) if battle_id else None
    source = _PanelSource(request, comparison, current_rater(request), battle)
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
