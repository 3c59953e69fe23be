"""`create_app(settings)`: the FastAPI application with its pool, database and pages."""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DatabaseError

from app.compare.runner import ComparisonRunner
from app.core.catalog import Catalog, load_catalog
from app.core.protocol import first_problem
from app.core.settings import Settings
from app.core.shared_images import SHARED_ENV, SharedImages
from app.pool.launcher import ProcessLauncher
from app.pool.pool import ModelPool, detect_budget_gb, detect_warm_budget_gb
from app.pool.reachability import reachability
from app.pool.runtimes import RuntimeManager
from app.pool.sizes import SizeBook
from app.storage import outputs, sweep
from app.storage.db import init_db, make_engine
from app.storage.files import DiskFull
from app.storage.sizes import load_measured_sizes, save_measured_size
from app.web import failures, openapi
from app.web.deps import Services
from app.web.middleware import BodyLimit
from app.web.routes import api, battles, export, gateway, history, leaderboard, login, pages, ratings, stream
from app.web.security import HostCheck, Security, resolve_access
from app.web.templating import STATIC_DIR

log = logging.getLogger("vlm_playground")


def create_app(settings: Settings, bind_host: str = "127.0.0.1") -> FastAPI:
    """The whole playground: JSON API, pages, the pool; workers start on first use. `bind_host` is the
    address the server listens on: with the localhost names, the Host headers it answers to.
    Raises AccessError for a token or users file that cannot work."""
    catalog = load_catalog(settings.models_path)
    auth_token, accounts = resolve_access(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, settings.data_dir)
        init_db(engine)
        interrupted = outputs.mark_unfinished_interrupted(engine, _sweep_before(engine, settings))
        if interrupted:
            log.warning("%d answers were cut short by the last shutdown; marked interrupted", interrupted)
        swept = sweep.sweep_images(engine, settings.data_dir,
                                   temp_age_s=0 if _sweep_before(engine, settings) is None else sweep.ORPHAN_AGE_S)
        if swept.temps_removed or swept.orphans_removed:
            log.warning("removed %d unfinished upload files and %d images no comparison uses",
                        swept.temps_removed, swept.orphans_removed)
        if swept.missing:
            log.warning("%d stored images have no file (uploads cut short; uploading them again restores them): %s",
                        len(swept.missing), ", ".join(sha[:12] for sha in swept.missing[:5]))
        budget, why = (settings.budget_gb, "--budget-gb") if settings.budget_gb else detect_budget_gb(
            settings.cpu_budget_gb)
        warm, warm_why = (settings.warm_budget_gb, "VLM_WARM_BUDGET_GB") if settings.warm_budget_gb is not None \
            else detect_warm_budget_gb()
        runtimes = RuntimeManager(catalog.runtimes, settings.data_dir / "runtimes")
        shared = SharedImages(settings.data_dir / "shared" / secrets.token_hex(6))  # this server's own folder
        if stale := sweep.sweep_shared(shared.folder.parent, keep=shared.folder):
            log.warning("removed %d shared-image folders that servers which stopped abruptly left", stale)
        launcher = ProcessLauncher(settings.data_dir / "logs", python_for=runtimes.python_for,
                                   threads=settings.worker_threads, env={SHARED_ENV: str(shared.folder)},
                                   load_timeout_s=settings.load_timeout_s, spares=settings.spare_workers,
                                   warm=families_by_runtime(catalog))
        sizes = SizeBook(load_measured_sizes(engine), settings.overhead_gb,
                         persist=functools.partial(save_measured_size, engine))
        pool = ModelPool(catalog, launcher, budget, sizes, wait_timeout_s=settings.wait_timeout_s,
                         retry_after_s=settings.retry_after_s, idle_timeout_s=settings.idle_timeout_s,
                         queue_timeout_s=settings.queue_timeout_s,
                         max_queued_per_client=settings.max_queued_per_client, swap_patience=settings.swap_patience,
                         warm_budget_gb=warm)
        runner = ComparisonRunner(engine, settings.data_dir, catalog, pool, settings.limits,
                                  generation_timeout_s=settings.generation_timeout_s,
                                  abandon_after_s=settings.abandon_after_s, shared=shared)
        runner.unreachable = reachable = reachability(catalog)
        app.state.services = Services(settings, catalog, engine, pool, runner, reachable)
        log.info("pool budget %.2f GB (%s); warm budget for parked weights %.2f GB (%s)", budget, why, warm, warm_why)
        await pool.start()
        try:
            yield
        finally:
            await runner.shutdown(2.0)  # uvicorn already waited the grace period for open requests
            await pool.close()
            shared.remove()
            engine.dispose()

    app = FastAPI(title="VLM Playground", version="0.1.0", lifespan=lifespan,
                  description="Compare vision-language models side by side.")
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_request_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(Security, auth_token=auth_token, accounts=accounts,
                       hosts=HostCheck(bind_host, settings.allowed_hosts))
    app.state.accounts = accounts
    _error_handlers(app)
    openapi.install(app)
    for routes in (api, battles, export, gateway, leaderboard, pages, stream, ratings, history, login):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def families_by_runtime(catalog: Catalog) -> dict[str, list[str]]:
    """The families of each runtime's local models: what its spare worker imports ahead of a load."""
    found: dict[str, set[str]] = {}
    for spec in catalog.models:
        if not spec.is_remote and spec.family:
            found.setdefault(spec.runtime, set()).add(spec.family)
    return {runtime: sorted(families) for runtime, families in found.items()}


def _sweep_before(engine: object, settings: Settings) -> datetime | None:
    """Which unfinished answers a start-up may call interrupted: all of them on this instance's own
    SQLite file; on a shared server database only those older than any answer can take."""
    if engine.url.get_backend_name() == "sqlite":  # type: ignore[attr-defined]
        return None
    longest = settings.wait_timeout_s + settings.load_timeout_s + settings.generation_timeout_s
    return datetime.now(UTC) - timedelta(seconds=longest)


def _error_handlers(app: FastAPI) -> None:
    """Errors are JSON `{detail}` with the field named, never a traceback."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": first_problem(exc.errors(), skip=("body", "query", "path"))}, status_code=422)

    app.add_exception_handler(DatabaseError, failures.store_failed)  # 503 (507 for a full disk), not a 500
    app.add_exception_handler(DiskFull, failures.disk_full)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
