"""A comparison's panels live over SSE: state lines and footers as escaped HTML, text pieces as JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.compare.runner import EventKind
from app.compare.validation import RowId
from app.storage import battles, comparisons
from app.storage.tables import FINISHED_STATUSES
from app.web.deps import services
from app.web.templating import render
from app.web.views import current_rater, panels_view

router = APIRouter(include_in_schema=False)


def _state_event(panel: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(raw_data=render("_panel_state.html", p=panel), event=f"state-{panel['id']}")


def _text_event(output_id: int, **change: str) -> ServerSentEvent:
    """Text goes as JSON ({"set": …} or {"append": …}); the page adds it with textContent, never as HTML."""
    return ServerSentEvent(data=change, event=f"text-{output_id}")


class _PanelSource:
    """Renders a comparison's panels from the database when a panel finishes (its footer, rating form, and
    its answer as sanitised markdown, which replaces the streamed text out of band)."""

    def __init__(self, request: Request, comparison: dict[str, Any], rater: str,
                 battle: dict[str, Any] | None) -> None:
        self.request, self.comparison_id, self.rater = request, comparison["id"], rater
        self.battle_id = battle["id"] if battle else None
        self.panels = {p["id"]: p for p in panels_view(request, comparison, rater, battle)}

    async def refresh(self) -> None:
        comparison, battle = await asyncio.to_thread(_comparison_and_battle, services(self.request).engine,
                                                     self.comparison_id, self.battle_id, False)
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
        if state in ("generating", "done"):  # the time before the answer began, apart from the answer's own
            panel["wait_s"], panel["load_s"] = info.get("wait_s"), info.get("load_s")
        return panel

    def foot_event(self, output_id: int) -> ServerSentEvent:
        panel = self.panels[output_id]
        return ServerSentEvent(raw_data=render("_panel_foot.html", p=panel, oob_name=True, oob_answer=True),
                               event=f"foot-{output_id}")


Found = tuple[dict[str, Any], dict[str, Any] | None]


def _comparison_and_battle(engine: Any, comparison_id: int, battle_id: int | None = None,
                           find_battle: bool = True) -> Found:
    """The comparison and, when it is a battle, its battle, in one trip to a thread. Every battle is blind
    (the store makes it so): an open comparison needs no battle lookup."""
    comparison = comparisons.get_comparison(engine, comparison_id)  # LookupError when there is none
    if find_battle and comparison["blind"]:
        battle_id = battles.battle_of_comparison(engine, comparison_id)
    return comparison, battles.get_battle(engine, battle_id) if battle_id else None


async def existing_comparison_and_battle(request: Request, comparison_id: RowId) -> Found:
    """A dependency, so that an unknown comparison is a 404 before the event stream starts."""
    try:
        return await asyncio.to_thread(_comparison_and_battle, services(request).engine, comparison_id)
    except LookupError:
        raise HTTPException(404, f"comparison {comparison_id} not found") from None


@router.get("/comparisons/{comparison_id}/events", response_class=EventSourceResponse)
async def comparison_events(request: Request, comparison_id: RowId,
                            found: Found = Depends(existing_comparison_and_battle)) -> AsyncIterator[ServerSentEvent]:
    """The panels' live updates: state lines and footers as escaped HTML, text pieces as JSON."""
    runner = services(request).runner
    comparison, battle = found
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
