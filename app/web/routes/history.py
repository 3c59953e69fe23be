"""The history of comparisons: search, filters, a per-model summary, keyset pages; and who is rating."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from app.compare.validation import MAX_ID
from app.storage import battles, comparisons
from app.storage.comparisons import HISTORY_SEARCH_MAX_CHARS, HistoryFilters
from app.web.deps import RATER_MAX_CHARS, account_of, rater_of, services
from app.web.templating import templates
from app.web.views import RATER_COOKIE, base_context, is_htmx, model_names, remember_rater

router = APIRouter(include_in_schema=False)


HISTORY_PAGE_SIZE = 20
RATED = {"rated": True, "unrated": False}
BLIND = {"blind": True, "open": False}
RESULTS_TARGET = "history-results"  # the filter form's htmx target: it gets the results, not just rows


def _text(value: str | None, limit: int) -> str | None:
    """A filter's text without control characters and outer spaces, cut to `limit`; None when empty."""
    cleaned = "".join(ch for ch in (value or "") if ch.isprintable()).strip()[:limit]
    return cleaned or None


def read_filters(request: Request) -> tuple[HistoryFilters, dict[str, str]]:
    """The filters the query string asks for, and the same as the form's values (an unknown choice is none)."""
    query = request.query_params
    search = _text(query.get("q"), HISTORY_SEARCH_MAX_CHARS) or ""
    model = _text(query.get("model"), 200)
    rater = _text(query.get("rater"), RATER_MAX_CHARS)
    rated = query.get("rated") if query.get("rated") in RATED else ""
    blind = query.get("blind") if query.get("blind") in BLIND else ""
    filters = HistoryFilters(search=search, model=model, rater=rater, rated=RATED.get(rated or ""),
                             blind=BLIND.get(blind or ""))
    form = {"q": search, "model": model or "", "rater": rater or "", "rated": rated or "", "blind": blind or ""}
    return filters, form


def query_string(form: dict[str, str], **extra: Any) -> str:
    """The filters (those set) and `extra` as a query string: what a shareable history URL carries."""
    return urlencode({key: value for key, value in {**form, **extra}.items() if value not in ("", None)})


def read_before(request: Request) -> int | None:
    """The keyset cursor: show comparisons with ids below this (None: from the newest)."""
    raw = request.query_params.get("before", "")
    if not raw.isdigit():
        return None
    return min(int(raw), MAX_ID + 1)


def rater_context(request: Request, rater: str | None = None) -> dict[str, Any]:
    """Who the page rates as: the account, or the name given, else the cookie's, else the default name."""
    default = services(request).settings.default_rater
    name = rater if rater is not None else rater_of(request)
    return {"rater": name, "default_rater": default, "account": account_of(request),
            "is_default": account_of(request) is None and name == default,
            "unrated_url": "/history?" + query_string({"rater": name, "rated": "unrated"})}


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request) -> HTMLResponse:
    """Past comparisons, newest first, narrowed by the search and filters in the URL, a page at a time
    (`before`: the id to continue below). The filter form's htmx requests get the results alone, the
    "older" link's the next rows alone."""
    engine = services(request).engine
    filters, form = read_filters(request)
    before = read_before(request)
    page = await asyncio.to_thread(comparisons.history_page, engine, filters, before, HISTORY_PAGE_SIZE)
    ids = [item["id"] for item in page.items]
    revealed = await asyncio.to_thread(battles.revealed_battles, engine, ids)
    items = [{**item, "battle": item["id"] in revealed, "revealed": revealed.get(item["id"], True)}
             for item in page.items]
    more_url = (None if page.next_before is None
                else "/history?" + query_string(form, before=page.next_before))
    context = base_context(request, items=items, names=model_names(request), form=form, filtered=filters.active,
                           more_url=more_url, before=before, next_before=page.next_before,
                           summary_url="/history/summary?" + query_string(form),
                           default_rater=services(request).settings.default_rater)
    if is_htmx(request):
        name = "_history_results.html" if request.headers.get("HX-Target") == RESULTS_TARGET else "_history_rows.html"
        return templates.TemplateResponse(request, name, context)
    total, choices = await asyncio.gather(asyncio.to_thread(comparisons.count_comparisons, engine),
                                          asyncio.to_thread(comparisons.history_choices, engine))
    context.update(total=total, choices=choices, **rater_context(request))
    return templates.TemplateResponse(request, "history.html", context)


SUMMARY_CACHE_SIZE = 64
_summaries: OrderedDict[tuple[str, HistoryFilters], tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()
_summaries_lock = threading.Lock()


def cached_summary(engine: Engine, filters: HistoryFilters) -> dict[str, Any]:
    """`history_summary`, computed again only when the store's history fingerprint has changed since (the
    most recent filters' summaries are kept: reading 100k comparisons takes most of a second)."""
    key = (str(engine.url), filters)
    fingerprint = comparisons.history_fingerprint(engine)
    with _summaries_lock:
        found = _summaries.get(key)
        if found is not None and found[0] == fingerprint:
            _summaries.move_to_end(key)
            return found[1]
    summary = comparisons.history_summary(engine, filters)
    with _summaries_lock:
        _summaries[key] = (fingerprint, summary)
        _summaries.move_to_end(key)
        while len(_summaries) > SUMMARY_CACHE_SIZE:
            _summaries.popitem(last=False)
    return summary


@router.get("/history/summary", response_class=HTMLResponse)
async def history_summary(request: Request) -> HTMLResponse:
    """How many comparisons match the filters, and per model its comparisons, ratings and mean score
    (loaded after the page: at 100k comparisons it is the one query that reads them all)."""
    filters, form = read_filters(request)
    summary = await asyncio.to_thread(cached_summary, services(request).engine, filters)
    context = {"summary": summary, "names": model_names(request), "form": form, "filtered": filters.active,
               "model_url": lambda model: "/history?" + query_string(form, model=model)}
    return templates.TemplateResponse(request, "_history_summary.html", context)


@router.get("/history/rater", response_class=HTMLResponse)
async def history_rater(request: Request) -> HTMLResponse:
    """Who this page rates as (the notice at the top of the history)."""
    return templates.TemplateResponse(request, "_history_rater.html", rater_context(request))


@router.post("/history/rater", response_class=HTMLResponse)
async def set_history_rater(request: Request) -> Response:
    """Set the name ratings are stored under (the same cookie the header's field sets); an empty name
    goes back to the default one. With accounts the account's name stays, whatever is sent."""
    form = await request.form()
    given = form.get("rater")
    name = rater_of(request, given if isinstance(given, str) and given.strip() else None)
    chosen = isinstance(given, str) and bool(given.strip()) and account_of(request) is None
    if not chosen and account_of(request) is None:
        name = services(request).settings.default_rater
    response: Response = (templates.TemplateResponse(request, "_history_rater.html",
                                                     {**rater_context(request, name), "saved": True})
                          if is_htmx(request) else RedirectResponse("/history", status_code=303))
    if chosen:
        remember_rater(response, name)
    elif account_of(request) is None:
        response.delete_cookie(RATER_COOKIE)
    return response
