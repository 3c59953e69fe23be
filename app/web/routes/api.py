"""JSON API for scripts and tests, and the CSV export of ratings."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.compare.validation import MAX_ID, InputError, RowId, Upload, read_stored_image
from app.core.catalog import model_summary
from app.storage import battles, comparisons, ratings
from app.storage.health import monitor
from app.web.deps import CatalogDep, EngineDep, PoolDep, RaterDep, RunnerDep, ServicesDep, client_of, rater_of, services
from app.web.schemas import (
    ComparisonOut,
    ComparisonPage,
    HealthOut,
    ModelOut,
    PoolOut,
    RatingIn,
    RatingOut,
    Refusal,
)

router = APIRouter()


async def read_comparison_form(request: Request) -> tuple[str | None, list[Upload], list[str], dict[str, Any], bool]:
    """The multipart fields of a comparison: prompt, images, models, generation settings, blind."""
    limits = services(request).settings.limits
    most_files = limits.max_images * 4
    try:
        form = await request.form(max_files=most_files, max_fields=200)
    except StarletteHTTPException as exc:  # the parser's own limits, or a malformed body
        if "files" in str(exc.detail):
            raise InputError("images", f"more than {most_files} files; the limit is {limits.max_images} images",
                             413) from None
        raise InputError("request", f"could not read the form: {exc.detail}") from None
    uploads: list[Upload] = []
    for item in form.getlist("images"):
        if isinstance(item, UploadFile):
            data = await item.read()
            if item.filename or data:
                uploads.append(Upload(item.filename or "image", data))
        elif item:
            raise InputError("images", "must be uploaded files")
    reused = [str(sha) for sha in form.getlist("reuse_images") if str(sha)]
    if len(uploads) + len(reused) > most_files:
        raise InputError("images", f"more than {most_files} images; the limit is {limits.max_images}", 413)
    names = [str(name) for name in form.getlist("reuse_names")]
    data_dir = services(request).settings.data_dir
    kept = []  # the stored images come first, as the page shows them above the new ones
    for index, sha in enumerate(reused):
        name = names[index] if len(names) == len(reused) and names[index] else f"image-{sha[:12]}"
        kept.append(Upload(name, await asyncio.to_thread(read_stored_image, data_dir, sha)))
    uploads = kept + uploads
    models = [str(m) for m in form.getlist("models") if str(m)]
    params = {key: form.get(key) for key in ("max_new_tokens", "temperature", "top_p", "seed")}
    prompt = form.get("prompt")
    blind = str(form.get("blind", "")).lower() in ("1", "true", "on", "yes")
    await form.close()
    return (str(prompt) if prompt is not None else None), uploads, models, params, blind


def comparison_body(comparison: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a stored comparison."""
    return {
        "id": comparison["id"], "prompt": comparison["prompt"], "params": comparison["params"],
        "created_at": _iso(comparison["created_at"]), "rater": comparison["rater"], "blind": comparison["blind"],
        "images": [{"sha256": i["sha256"], "name": i["name"], "width": i["width"], "height": i["height"],
                    "format": i["format"]} for i in comparison["images"]],
        "outputs": [{
            "id": o["id"], "model": o["model"], "repo": o["repo"], "revision": o["revision"],
            "backend": o["backend"], "runtime": o["runtime"], "transformers_version": o["transformers_version"],
            "status": o["status"], "text": o["text"], "error": o["error"], "ttft_s": o["ttft_s"],
            "total_s": o["total_s"], "tokens": o["tokens"], "prompt_tokens": o["prompt_tokens"],
            "tokens_per_s": o["tokens_per_s"], "image_note": o["image_note"], "params": o["params"],
            "ratings": [{"id": r["id"], "score": r["score"], "note": r["note"], "rater": r["rater"]}
                        for r in o.get("ratings", [])],
        } for o in comparison["outputs"]],
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def refusal(exc: InputError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "field": exc.field},
                        status_code=exc.status_code)


REFUSALS: dict[int | str, dict[str, Any]] = {
    413: {"model": Refusal, "description": "too large: names the file or field and the limit"},
    422: {"model": Refusal, "description": "not acceptable: names the field and what is wrong"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Refusal, "description": "no such id"}}


@router.post("/api/comparisons", status_code=201, tags=["comparisons"], response_model=ComparisonOut,
             responses=REFUSALS)
async def create_comparison(request: Request, runner: RunnerDep, engine: EngineDep, rater: RaterDep) -> JSONResponse:
    """Multipart: prompt, images (files), models (repeated ids), max_new_tokens, temperature, top_p, seed.
    Waits for every answer; 201 with the comparison and its outputs."""
    try:
        prompt, uploads, models, params, blind = await read_comparison_form(request)
        comparison_id = await runner.submit(prompt, uploads, models, params, rater, blind, client=client_of(request))
    except InputError as exc:
        return refusal(exc)
    waiting = asyncio.create_task(runner.wait(comparison_id))
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=0.5)
        if not waiting.done() and await request.is_disconnected():
            runner.cancel(comparison_id, "the client went away")
    comparison = await asyncio.to_thread(comparisons.get_comparison, engine, comparison_id)
    return JSONResponse(comparison_body(comparison), status_code=201)


@router.get("/api/comparisons", tags=["comparisons"], response_model=ComparisonPage)
async def list_comparisons(engine: EngineDep, limit: int = Query(50, ge=1, le=500),
                           offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
    items = await asyncio.to_thread(comparisons.list_comparisons, engine, limit, offset)
    total = await asyncio.to_thread(comparisons.count_comparisons, engine)
    revealed = await asyncio.to_thread(battles.revealed_battles, engine, [item["id"] for item in items])
    return {"total": total, "items": [_masked({**item, "created_at": _iso(item["created_at"])},
                                              revealed.get(item["id"], True)) for item in items]}


def _masked(item: dict[str, Any], revealed: bool) -> dict[str, Any]:
    """A battle without a vote lists its panels by position, not by model."""
    if revealed:
        return item
    outputs = [{**output, "model": f"panel {index + 1}"} for index, output in enumerate(item["outputs"])]
    return {**item, "models": [output["model"] for output in outputs], "outputs": outputs}


@router.get("/api/comparisons/{comparison_id}", tags=["comparisons"], response_model=ComparisonOut,
            responses={**NOT_FOUND, 409: {"model": Refusal, "description": "a battle not yet voted on"}})
async def get_comparison(engine: EngineDep, comparison_id: RowId) -> dict[str, Any]:
    try:
        comparison = await asyncio.to_thread(comparisons.get_comparison, engine, comparison_id)
    except LookupError:
        raise HTTPException(404, f"comparison {comparison_id} not found") from None
    hidden = await asyncio.to_thread(battles.revealed_battles, engine, [comparison_id])
    if hidden.get(comparison_id) is False:
        battle_id = await asyncio.to_thread(battles.battle_of_comparison, engine, comparison_id)
        raise HTTPException(409, f"comparison {comparison_id} is battle {battle_id}, not yet voted on: "
                                 f"see /api/battles/{battle_id}")
    return comparison_body(comparison)


@router.post("/api/comparisons/{comparison_id}/stop", tags=["comparisons"],
             responses={404: {"model": Refusal, "description": "no such comparison running"}})
async def stop_comparison(runner: RunnerDep, comparison_id: RowId) -> dict[str, Any]:
    """Stop every answer of the comparison still running (the models stop generating; the text so far is
    kept, the panels marked stopped). `stopped`: the outputs stopped (none when all had finished)."""
    if comparison_id not in runner.runs:
        raise HTTPException(404, f"comparison {comparison_id} is not running")
    return {"stopped": await runner.stop(comparison_id)}


@router.post("/api/outputs/{output_id}/stop", tags=["comparisons"],
             responses={404: {"model": Refusal, "description": "no such answer running"}})
async def stop_output(runner: RunnerDep, output_id: RowId) -> dict[str, Any]:
    """Stop one answer (one panel) while the others go on."""
    comparison_id = runner.comparison_of(output_id)
    if comparison_id is None:
        raise HTTPException(404, f"output {output_id} is not running")
    return {"stopped": await runner.stop(comparison_id, output_id)}


@router.post("/api/comparisons/{comparison_id}/outputs/{output_id}/retry", status_code=202, tags=["comparisons"],
             responses={**NOT_FOUND, 409: {"model": Refusal, "description": "the answer is not failed or stopped"}})
async def retry_output(request: Request, runner: RunnerDep, comparison_id: RowId, output_id: RowId) -> JSONResponse:
    """Answer a failed or stopped panel again (same model, prompt, stored images and settings); follow it on
    the comparison's event stream or poll the comparison."""
    try:
        await runner.retry(comparison_id, output_id, client=client_of(request))
    except LookupError as exc:
        raise HTTPException(404, str(exc).strip("'\"")) from None
    except InputError as exc:
        return refusal(exc)
    return JSONResponse({"retrying": output_id, "comparison_id": comparison_id}, status_code=202)


@router.post("/api/outputs/{output_id}/rating", status_code=201, tags=["ratings"], response_model=RatingOut,
             responses={200: {"model": RatingOut, "description": "the rater's earlier rating, replaced"},
                        **NOT_FOUND, 422: REFUSALS[422]})
async def rate_output(request: Request, engine: EngineDep, output_id: RowId, rating: RatingIn) -> JSONResponse:
    """One rating per output and rater: rating again as the same rater replaces it (200). Without `note` the
    earlier note is kept; a given note, "" included, replaces it."""
    rater = rater_of(request, rating.rater)
    note = rating.note if "note" in rating.model_fields_set else None
    try:
        outcome = await asyncio.to_thread(ratings.rate_unless_hidden, engine, output_id, rating.score, note, rater)
    except LookupError:
        raise HTTPException(404, f"output {output_id} not found") from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if outcome is None:
        raise HTTPException(409, f"output {output_id} is a panel of a battle without a vote: vote first")
    saved, created = outcome
    body = {"id": saved.id, "output_id": output_id, "score": saved.score, "note": saved.note,
            "rater": saved.rater, "updated_at": _iso(saved.updated_at)}
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/api/models", tags=["models"], response_model=list[ModelOut])
async def list_models(running: ServicesDep) -> list[dict[str, Any]]:
    return [{**model_summary(spec), "planned_gb": running.pool.sizes.planned_gb(spec),
             "available": spec.available and running.reachability.get(spec.id) is None,
             "unavailable_reason": running.reachability.get(spec.id), "pool_state": running.pool.state_of(spec.id)}
            for spec in running.catalog.models]


@router.get("/api/pool", tags=["models"], response_model=PoolOut)
async def pool_status(pool: PoolDep) -> dict[str, Any]:
    return pool.status()


@router.get("/health", tags=["health"], response_model=HealthOut,
            responses={503: {"model": Refusal, "description": "the database is unusable: what is wrong with it"}})
async def health(pool: PoolDep, catalog: CatalogDep, engine: EngineDep) -> Any:
    """ok, or 503 while the store is unusable (its quick check runs at most every few seconds)."""
    problem = await asyncio.to_thread(monitor(engine).problem)
    if problem is not None:
        return JSONResponse({"detail": f"the database is unusable: {problem}"}, status_code=503,
                            headers={"Retry-After": "30"})
    return {"status": "ok", "models": len(catalog.models), "resident": len(pool.status()["resident"])}
