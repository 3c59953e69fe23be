"""One comparison: check and store the request, fan out to the models, stream, record timings.

`ComparisonRunner.submit` stores the comparison and starts one task per model; each task leases
its model from the pool, streams the answer and records it. Pages and API clients follow a
comparison through `subscribe`, which replays what happened so far and then the live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.compare.downsize import Downsizer
from app.compare.validation import (
    CheckedImage,
    InputError,
    Upload,
    check_images,
    check_models,
    check_params,
    check_prompt,
    read_stored_image,
)
from app.core.catalog import Catalog, ModelSpec
from app.core.generation import Finish, GenerationParams, StreamClock
from app.core.memory import give_back
from app.core.protocol import ImagePart
from app.core.settings import Limits
from app.core.shared_images import SharedImages
from app.pool.client import BackendError
from app.pool.pool import ModelPool, PoolError
from app.storage import comparisons, outputs
from app.storage.tables import FINISHED_STATUSES, OutputStatus

log = logging.getLogger("vlm_playground.compare")


class EventKind(StrEnum):
    """What a panel event says: its state so far, a new state, more text, the end of its answer, or the
    end of the whole comparison."""

    SNAPSHOT = "snapshot"
    STATE = "state"
    TEXT = "text"
    DONE = "done"
    ERROR = "error"
    END = "end"


@dataclass(frozen=True)
class PanelEvent:
    """Something that happened to one panel (`output_id` 0 for the comparison's "end")."""

    output_id: int
    model: str
    kind: EventKind
    state: str = ""
    text: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputRun:
    """The live state of one model's answer."""

    output_id: int
    spec: ModelSpec
    state: str = OutputStatus.QUEUED
    text: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task | None = None  # what answers it, while that runs
    stop_reason: str | None = None  # why it was stopped on its own (a person pressed stop)

    def snapshot(self) -> PanelEvent:
        return PanelEvent(self.output_id, self.spec.id, EventKind.SNAPSHOT, self.state, "".join(self.text),
                          dict(self.info))


class ComparisonRun:
    """A comparison in progress: its outputs and the queues of everyone following it."""

    def __init__(self, comparison_id: int, outputs: list[OutputRun]) -> None:
        self.id = comparison_id
        self.outputs = {run.output_id: run for run in outputs}
        self.subscribers: set[asyncio.Queue[PanelEvent]] = set()
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.cancel_reason = "the server stopped before this answer finished"
        self.stop_when_abandoned = False
        self.image_note: str | None = None  # what happened to the uploads for every model (frames dropped)

    def publish(self, event: PanelEvent) -> None:
        for queue in self.subscribers:
            queue.put_nowait(event)

    def finished(self) -> bool:
        return all(run.state in FINISHED_STATUSES for run in self.outputs.values())


class ComparisonRunner:
    """Starts comparisons and lets pages and API clients follow them."""

    def __init__(self, engine: Engine, data_dir: Path, catalog: Catalog, pool: ModelPool, limits: Limits,
                 generation_timeout_s: float = 600.0, keep_finished_s: float = 60.0,
                 abandon_after_s: float = 10.0, shared: SharedImages | None = None) -> None:
        self.engine = engine
        self.data_dir = Path(data_dir)
        self.catalog = catalog
        self.pool = pool
        self.limits = limits
        self.generation_timeout_s = generation_timeout_s
        self.keep_finished_s = keep_finished_s
        self.abandon_after_s = abandon_after_s
        self.runs: dict[int, ComparisonRun] = {}
        self.accepting = True
        self.unreachable: dict[str, str | None] = {}  # model id → why it cannot be loaded here
        self.shared = shared  # the folder local workers read prepared images from (None: data: URLs)

    # --- starting ----------------------------------------------------------------------------------

    def check(self, prompt: str | None, uploads: list[Upload], models: list[str], params: dict[str, Any]
              ) -> tuple[str, list[CheckedImage], list[str], dict[str, Any], Downsizer]:
        """Every check on a request, before anything is stored or started (refusals in the order: prompt,
        images, models, parameters), and the images prepared for each model from the decode that checks
        them. Then the decoded pixels' memory goes back to the system (it can be hundreds of MB). The
        caller releases the Downsizer's shared files when the request is over."""
        try:
            checked_prompt = check_prompt(prompt, self.limits)
            try:
                picked, refused = check_models(models, self.catalog, self.limits, self.unreachable), None
            except InputError as exc:  # told after the images' own refusals, as before
                picked, refused = [], exc
            downsizer = Downsizer([self.catalog.get(model) for model in picked], self.shared)
            try:
                images = check_images(uploads, self.limits, prepare=downsizer)
                if refused is not None:
                    raise refused
                return checked_prompt, images, picked, check_params(params, self.limits), downsizer
            except BaseException:
                downsizer.release()
                raise
        finally:
            give_back()

    async def submit(self, prompt: str | None, uploads: list[Upload], models: list[str], params: dict[str, Any],
                     rater: str = "", blind: bool = False, stop_when_abandoned: bool = False,
                     battle: bool = False, drawn: bool = False, client: str = "") -> int:
        """Check, store and start a comparison; returns its id. Raises InputError for a bad request.

        `stop_when_abandoned`: a page's comparison stops once every page following it is gone.
        `battle`: store it as a battle (blind, panels A, B, … in a random order; `drawn`: models drawn).
        `client`: who asks (an account, else an address), for fair turns on busy models.
        """
        blind = blind or battle
        if not self.accepting:
            raise InputError("server", "the server is shutting down; try again in a moment", 503)
        checked_prompt, images, models, params, downsizer = await asyncio.to_thread(self.check, prompt, uploads,
                                                                                    models, params)
        specs = [self.catalog.get(model) for model in models]
        if blind:  # panel order (and output ids) must not give away which model is which
            random.shuffle(specs)
        note = "; ".join(image.note for image in images if image.note) or None
        try:
            created = await asyncio.to_thread(
                comparisons.create_comparison, self.engine, self.data_dir, checked_prompt, params, rater, blind,
                [comparisons.StoredImageInput(i.name, i.data, i.format, i.width, i.height) for i in images],
                [self._output_input(spec, params, note) for spec in specs], battle, drawn)
        except BaseException:
            await asyncio.to_thread(downsizer.release)
            raise
        run = ComparisonRun(created.id, [OutputRun(oid, spec) for oid, spec in zip(created.output_ids, specs,
                                                                                    strict=True)])
        run.stop_when_abandoned = stop_when_abandoned
        self.runs[created.id] = run
        run.image_note = note
        generation = GenerationParams(max_new_tokens=params["max_new_tokens"], temperature=params["temperature"],
                                      top_p=params["top_p"], seed=params["seed"])
        for output in run.outputs.values():
            output.task = asyncio.create_task(self._answer(run, output, checked_prompt, downsizer, generation, client))
        run.tasks = [output.task for output in run.outputs.values() if output.task]
        asyncio.create_task(self._close_when_done(run, downsizer))
        return created.id

    @staticmethod
    def _output_input(spec: ModelSpec, params: dict[str, Any], note: str | None) -> comparisons.OutputInput:
        return comparisons.OutputInput(
            model=spec.id, repo=spec.repo or "", revision=spec.revision,
            backend="remote" if spec.is_remote else "local", runtime=spec.runtime, dtype=spec.dtype,
            seed=params["seed"], params=params, image_note=note)

    # --- answering ---------------------------------------------------------------------------------

    def _set(self, run: ComparisonRun, output: OutputRun, state: str, **info: Any) -> None:
        output.state = state
        output.info.update(info)
        run.publish(PanelEvent(output.output_id, output.spec.id, EventKind.STATE, state, info=dict(output.info)))

    async def _answer(self, run: ComparisonRun, output: OutputRun, prompt: str, downsizer: Downsizer,
                      params: GenerationParams, client: str) -> None:
        """Take the images as prepared for the model, lease the model, stream its answer to followers, and
        record the outcome."""
        spec = output.spec
        images, shrunk_note = downsizer.for_model(spec)
        asked_at = self.pool.clock()
        pool_state = "resident" if spec.is_remote else self.pool.state_of(spec.id)
        ticker: asyncio.Task | None = None
        if pool_state != "resident":
            self._set(run, output, OutputStatus.LOADING, since=time.time())
            await asyncio.to_thread(outputs.update_output, self.engine, output.output_id,
                                    status=OutputStatus.LOADING)
            ticker = asyncio.create_task(self._report_loading(run, output))
        try:
            def queued(ahead: int) -> None:
                if ticker:
                    ticker.cancel()
                self._set(run, output, OutputStatus.QUEUED, ahead=ahead, detail=f"waiting for its turn: "
                          f"{ahead} request{'s' if ahead != 1 else ''} ahead")

            async with self.pool.lease(spec.id, client=client, on_position=queued) as backend:
                if ticker:
                    ticker.cancel()
                waits = self._waits(spec.id, asked_at)
                self._set(run, output, OutputStatus.GENERATING, since=time.time(), detail=None, ahead=None, **waits)
                # stored while the answer streams, not before it starts (a write: 3.5 ms on the first token)
                recorded = asyncio.ensure_future(asyncio.to_thread(self._record_runtime, output))
                try:
                    finish, ttft, total = await asyncio.wait_for(
                        self._stream(run, output, backend, prompt, images, params), self.generation_timeout_s)
                except TimeoutError:
                    await recorded
                    await self._fail(run, output, await self.pool.timed_out(spec.id, self.generation_timeout_s))
                    return
                except BaseException:
                    await recorded  # its write goes in before any final status does
                    raise
                await recorded
        except (PoolError, BackendError) as exc:
            await self._fail(run, output, str(exc))
            return
        except asyncio.CancelledError:
            await self._interrupt(run, output)
            raise
        except Exception as exc:  # one model's failure never stops the others
            log.exception("output %s failed", output.output_id)
            await self._fail(run, output, f"{type(exc).__name__}: {exc}")
            return
        finally:
            if ticker:
                ticker.cancel()
        stats = {"ttft_s": _round(ttft), "total_s": _round(total), "tokens": finish.completion_tokens,
                 "prompt_tokens": finish.prompt_tokens,
                 "tokens_per_s": _round(finish.completion_tokens / total if total else None),
                 "image_note": "; ".join(n for n in (run.image_note, shrunk_note, finish.image_note) if n) or None,
                 "finish_reason": finish.finish_reason,
                 "applied": finish.applied, "param_notes": (finish.applied or {}).get("notes") or []}
        await asyncio.to_thread(self._record_done, output, stats)
        output.state = OutputStatus.DONE
        output.info.update(stats)
        run.publish(PanelEvent(output.output_id, spec.id, EventKind.DONE, OutputStatus.DONE, info=dict(output.info)))

    def _waits(self, model_id: str, asked_at: float) -> dict[str, float | None]:
        """How long the answer waited before it started: loading its model (or bringing it back from host
        memory) and the rest (memory to free, evictions, its turn), in seconds."""
        waited = self.pool.clock() - asked_at
        window = self.pool.load_window(model_id)
        load_s = max(0.0, window[1] - max(window[0], asked_at)) if window and window[1] > asked_at else 0.0
        return {"wait_s": _round(max(0.0, waited - load_s)), "load_s": _round(load_s)}

    async def _report_loading(self, run: ComparisonRun, output: OutputRun) -> None:
        """While a model loads, pass on what its start is doing (e.g. installing a pinned runtime)."""
        shown = None
        while output.state == OutputStatus.LOADING:
            detail = self.pool.loading_detail(output.spec.id)
            if detail and detail != shown:
                shown = detail
                self._set(run, output, OutputStatus.LOADING, detail=detail)
            await asyncio.sleep(0.5)

    async def _stream(self, run: ComparisonRun, output: OutputRun, backend: Any, prompt: str,
                      images: list[ImagePart], params: GenerationParams) -> tuple[Finish, float | None, float]:
        clock = StreamClock()
        finish: Finish | None = None
        async for piece in backend.stream(prompt, images, params):
            clock.mark(piece)
            if isinstance(piece, Finish):
                finish = piece
                continue
            output.text.append(piece)
            run.publish(PanelEvent(output.output_id, output.spec.id, EventKind.TEXT, OutputStatus.GENERATING, piece))
        if finish is None:
            raise BackendError(f"{output.spec.id}: the answer ended without token counts")
        return finish, clock.first, clock.elapsed()

    def _record_runtime(self, output: OutputRun) -> None:
        info = self.pool.runtime_of(output.spec.id)
        if info.get("transformers"):
            outputs.update_output(self.engine, output.output_id, status=OutputStatus.GENERATING,
                                transformers_version=info["transformers"])
        else:
            outputs.update_output(self.engine, output.output_id, status=OutputStatus.GENERATING)

    def _record_done(self, output: OutputRun, stats: dict[str, Any]) -> None:
        changed: dict[str, Any] = {}
        if stats.get("image_note"):
            changed["image_note"] = stats["image_note"]
        if stats.get("applied"):  # what the model really used replaces what was asked for
            changed["params"] = stats["applied"]
        if changed:
            outputs.update_output(self.engine, output.output_id, **changed)
        outputs.finish_output(self.engine, output.output_id, status=OutputStatus.DONE, text="".join(output.text),
                            ttft_s=stats["ttft_s"], total_s=stats["total_s"], prompt_tokens=stats["prompt_tokens"],
                            tokens=stats["tokens"], tokens_per_s=stats["tokens_per_s"])

    async def _fail(self, run: ComparisonRun, output: OutputRun, message: str) -> None:
        await asyncio.to_thread(outputs.finish_output, self.engine, output.output_id, status=OutputStatus.ERROR,
                                text="".join(output.text), error=message)
        output.state = OutputStatus.ERROR
        output.info["message"] = message
        run.publish(PanelEvent(output.output_id, output.spec.id, EventKind.ERROR, OutputStatus.ERROR,
                               info={"message": message}))

    async def _interrupt(self, run: ComparisonRun, output: OutputRun) -> None:
        message = f"stopped: {output.stop_reason}" if output.stop_reason else f"interrupted: {run.cancel_reason}"
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(
                outputs.finish_output, self.engine, output.output_id, status="interrupted",
                text="".join(output.text), error=message))
        output.state = "interrupted"
        output.info["message"] = message
        run.publish(PanelEvent(output.output_id, output.spec.id, EventKind.ERROR, OutputStatus.INTERRUPTED,
                               info={"message": message}))

    async def _close_when_done(self, run: ComparisonRun, downsizer: Downsizer) -> None:
        await asyncio.gather(*run.tasks, return_exceptions=True)
        await asyncio.to_thread(downsizer.release)  # every worker has read its images by now
        await self._end(run)

    async def _end(self, run: ComparisonRun) -> None:
        """Once every panel has ended (panels tried again included), tell the followers; forget it later."""
        while not all(task.done() for task in run.tasks):
            await asyncio.gather(*run.tasks, return_exceptions=True)
        if run.done.is_set():
            return
        run.done.set()
        run.publish(PanelEvent(0, "", EventKind.END))
        await asyncio.sleep(self.keep_finished_s)
        if self.runs.get(run.id) is run:
            self.runs.pop(run.id, None)

    # --- following ---------------------------------------------------------------------------------

    async def wait(self, comparison_id: int) -> None:
        run = self.runs.get(comparison_id)
        if run is not None:
            await run.done.wait()

    async def subscribe(self, comparison_id: int) -> AsyncIterator[PanelEvent]:
        """What happened so far (one snapshot per output), then live events until the end."""
        run = self.runs.get(comparison_id)
        if run is None:
            for event in await asyncio.to_thread(self._stored_snapshots, comparison_id):
                yield event
            yield PanelEvent(0, "", EventKind.END)
            return
        queue: asyncio.Queue[PanelEvent] = asyncio.Queue()
        run.subscribers.add(queue)
        # taken with no await after subscribing: later text reaches this follower once, through the queue
        snapshots = [output.snapshot() for output in run.outputs.values()]
        try:
            for snapshot in snapshots:
                yield snapshot
            if run.done.is_set():
                yield PanelEvent(0, "", EventKind.END)
                return
            while (event := await queue.get()).kind != EventKind.END:
                yield event
            yield event
        finally:
            run.subscribers.discard(queue)
            if run.stop_when_abandoned and not run.subscribers and not run.done.is_set():
                asyncio.get_running_loop().call_later(self.abandon_after_s, self._cancel_if_abandoned, run)

    def _cancel_if_abandoned(self, run: ComparisonRun) -> None:
        """Everyone watching left (the browser went away): stop generating and free the workers."""
        if not run.subscribers and not run.done.is_set():
            self.cancel(run.id, "the browser went away before the answer finished")

    def _stored_snapshots(self, comparison_id: int) -> list[PanelEvent]:
        comparison = comparisons.get_comparison(self.engine, comparison_id)  # LookupError when unknown
        events = []
        for output in comparison["outputs"]:
            info = {key: output.get(key) for key in ("ttft_s", "total_s", "tokens", "prompt_tokens",
                                                     "tokens_per_s", "image_note")}
            info["param_notes"] = (output.get("params") or {}).get("notes") or []
            if output.get("error"):
                info["message"] = output["error"]
            events.append(PanelEvent(output["id"], output["model"], EventKind.SNAPSHOT, output["status"],
                                     output.get("text") or "", info))
        return events

    # --- stopping ----------------------------------------------------------------------------------

    def cancel(self, comparison_id: int, reason: str) -> None:
        """Stop a comparison's unfinished answers; they are recorded as interrupted with `reason`."""
        run = self.runs.get(comparison_id)
        if run is None:
            return
        run.cancel_reason = reason
        for task in run.tasks:
            task.cancel()

    async def stop(self, comparison_id: int, output_id: int | None = None,
                   reason: str = "by the person following it") -> list[int]:
        """Stop one panel's answer (or every unfinished one): its task is cancelled, the worker's stream
        closed, and the worker stops generating; the text so far is kept. Returns the outputs stopped."""
        run = self.runs.get(comparison_id)
        if run is None:
            return []
        stopped: dict[int, asyncio.Task] = {}
        for output in run.outputs.values():
            if (output_id is None or output.output_id == output_id) and output.task and not output.task.done():
                output.stop_reason = reason
                output.task.cancel()
                stopped[output.output_id] = output.task
        await asyncio.gather(*stopped.values(), return_exceptions=True)  # recorded as stopped by now
        return list(stopped)

    async def retry(self, comparison_id: int, output_id: int, client: str = "") -> None:
        """Answer a failed or stopped panel again: same model, prompt, stored images and settings; the panel's
        old text and error are replaced. Raises LookupError (unknown) or InputError (not failed or stopped,
        or its images are gone)."""
        comparison = await asyncio.to_thread(comparisons.get_comparison, self.engine, comparison_id)
        stored = next((o for o in comparison["outputs"] if o["id"] == output_id), None)
        if stored is None:
            raise LookupError(f"output {output_id} is not part of comparison {comparison_id}")
        if stored["status"] not in (OutputStatus.ERROR, OutputStatus.INTERRUPTED):
            raise InputError("output", f"output {output_id} is {stored['status']}: only a failed or stopped answer "
                                       "is tried again", 409)
        run = self.runs.get(comparison_id)
        if run is not None and output_id in run.outputs and run.outputs[output_id].task \
                and not run.outputs[output_id].task.done():  # type: ignore[union-attr]
            raise InputError("output", f"output {output_id} is being tried again already", 409)
        uploads = [Upload(image["name"], await asyncio.to_thread(read_stored_image, self.data_dir, image["sha256"]))
                   for image in comparison["images"]]
        params = comparison.get("params") or {}
        checked_prompt, _, _, checked, downsizer = await asyncio.to_thread(
            self.check, comparison["prompt"], uploads, [stored["model"]],
            {key: params.get(key) for key in ("max_new_tokens", "temperature", "top_p", "seed")})
        await asyncio.to_thread(outputs.update_output, self.engine, output_id, status=OutputStatus.QUEUED, text="",
                                error=None, ttft_s=None, total_s=None, tokens=None, prompt_tokens=None,
                                tokens_per_s=None, finished_at=None)
        output = OutputRun(output_id, self.catalog.get(stored["model"]))
        if run is None or run.done.is_set():  # the comparison had ended: follow it again
            finished = [OutputRun(o["id"], self.catalog.get(o["model"]) if o["model"] in self.catalog.ids()
                                  else output.spec, o["status"], [o.get("text") or ""])
                        for o in comparison["outputs"] if o["id"] != output_id]
            run = ComparisonRun(comparison_id, [*finished, output])
            self.runs[comparison_id] = run
        else:
            run.outputs[output_id] = output
        generation = GenerationParams(max_new_tokens=checked["max_new_tokens"], temperature=checked["temperature"],
                                      top_p=checked["top_p"], seed=checked["seed"])
        output.task = asyncio.create_task(self._answer(run, output, checked_prompt, downsizer, generation, client))
        run.tasks.append(output.task)
        run.publish(PanelEvent(output_id, output.spec.id, EventKind.STATE, OutputStatus.QUEUED))
        asyncio.create_task(self._release_after(output.task, downsizer, run))

    async def _release_after(self, task: asyncio.Task, downsizer: Downsizer, run: ComparisonRun) -> None:
        """A retried panel's images go once it ends; the comparison ends when its last panel does."""
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(downsizer.release)
        await self._end(run)

    def comparison_of(self, output_id: int) -> int | None:
        """The running comparison an output belongs to (None when none runs it)."""
        return next((run.id for run in self.runs.values() if output_id in run.outputs), None)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; let answers in flight finish within `grace_s`, then mark the rest interrupted."""
        self.accepting = False
        tasks = [task for run in self.runs.values() for task in run.tasks if not task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
