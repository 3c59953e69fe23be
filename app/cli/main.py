"""`vlm-playground` command line: models, tiny-models, run, serve, demo, runtimes, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.cli import runtimes, users
from app.cli.errors import CommandError
from app.core.catalog import Catalog, CatalogError, ModelSpec, load_catalog, model_summary
from app.core.settings import Settings

MODELS_HELP = "catalogue file (default: $VLM_MODELS, else models.yaml)"
DATA_DIR_HELP = "data directory (default: $VLM_DATA_DIR, else ./data)"
# The demo's CPU budget: three tiny models (0.5 GB each in the catalogue) with their processes (0.4–0.9 GB each,
# measured at start-up: torch and transformers) and a spare worker.
DEMO_BUDGET_GB = 4.0


def _catalog(path: str | None) -> Catalog:
    """The catalogue named by the flag, else by $VLM_MODELS, else models.yaml (as the server finds it)."""
    try:
        return load_catalog(Settings.from_args(models_path=path).models_path)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None


def _spec(catalog: Catalog, model_id: str) -> ModelSpec:
    try:
        return catalog.get(model_id)
    except KeyError:
        raise CommandError(f"unknown model '{model_id}' (known: {', '.join(catalog.ids())})") from None


# --- models -------------------------------------------------------------------------------------

def _model_rows(catalog: Catalog, settings: Settings) -> list[dict]:
    """Each entry as `GET /api/models` lists it: availability by the server's own check (`reason_unreachable`:
    a checkpoint missing from the local Hugging Face cache while HF_HUB_OFFLINE=1 is unavailable there too)."""
    from app.pool.reachability import reason_unreachable
    from app.pool.sizes import SizeBook

    measured: dict[str, float] = {}
    if (settings.data_dir / "playground.db").exists() or settings.database_url:
        from app.storage.db import init_db, make_engine
        from app.storage.sizes import load_measured_sizes

        engine = make_engine(settings.database_url, settings.data_dir)
        init_db(engine)
        measured = load_measured_sizes(engine)
    sizes = SizeBook(measured)
    rows = []
    for spec in catalog.models:
        reason = reason_unreachable(spec)
        rows.append({**model_summary(spec), "available": reason is None, "unavailable_reason": reason,
                     "measured_gb": sizes.get(spec.id), "planned_gb": sizes.planned_gb(spec)})
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = _model_rows(_catalog(args.models), Settings.from_args(data_dir=args.data_dir))
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    header = ("id", "family", "min GB", "source", "measured", "planned", "runtime", "images", "context",
              "decoding", "languages", "status")
    table: list[tuple[Any, ...]] = [header]
    for row in rows:
        status = "ok" if row["available"] else "unavailable"
        if row["endpoint"]:
            status = f"remote {row['endpoint']}"
        table.append((
            row["id"], row["family"] or "-", _gb(row["min_gpu_gb"]), row["min_gpu_gb_source"],
            _gb(row["measured_gb"]), _gb(row["planned_gb"]), row["runtime"],
            "multi" if row["multi_image"] else "one", _context(row["input_budget"]["context_tokens"]),
            _decoding(row["capabilities"]), ",".join(row["languages"]) or "-", status,
        ))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    unavailable = [row for row in rows if not row["available"]]
    if unavailable:
        print("\nunavailable here:")
        for row in unavailable:
            print(f"  {row['id']}: {row['unavailable_reason']}")
    return 0


def _context(tokens: int | None) -> str:
    return "-" if tokens is None else f"{tokens:,}"


def _decoding(capabilities: dict) -> str:
    if not capabilities["sampling"]:
        return "greedy only"
    return "sampling" if capabilities["seed"] else "sampling, no seed"


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- tiny-models ----------------------------------------------------------------------------------

def cmd_tiny_models(args: argparse.Namespace) -> int:
    from app.tiny.checkpoints import BUILDERS, build_tiny_models

    families = args.only.split(",") if args.only else None
    unknown = [f for f in families or [] if f not in BUILDERS]
    if unknown:
        raise CommandError(f"unknown tiny family {', '.join(unknown)} (known: {', '.join(BUILDERS)})")
    started = time.perf_counter()
    path = build_tiny_models(args.out_dir, families, force=args.force)
    print(f"wrote {path} ({time.perf_counter() - started:.1f} s)")
    return 0


# --- run ------------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from app.adapters import ModelLoadError, adapter_for
    from app.core.budget import InputTooLarge
    from app.core.generation import GenerationParams, StreamClock
    from app.core.images import ImageError, decode_image

    catalog = _catalog(args.models)
    spec = _spec(catalog, args.model)
    if not spec.available:
        raise CommandError(f"{spec.id} is unavailable: {spec.unavailable_reason}")
    if spec.is_remote:
        raise CommandError(f"{spec.id} is served by {spec.endpoint}; `run` loads local models only")
    images = []
    for path in args.image:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            images.append(decode_image(data, path))
        except ImageError as exc:
            raise CommandError(str(exc)) from None
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed)
    device = _device()
    _quiet_transformers()
    try:
        adapter = adapter_for(spec.family or "").load(spec, device)
    except ModelLoadError as exc:
        raise CommandError(f"cannot load {spec.id}: {exc}") from None
    clock = StreamClock()
    pieces: list[str] = []
    finish = None
    try:
        call = adapter.prepare(images, args.prompt, params)
    except InputTooLarge as exc:
        raise CommandError(str(exc)) from None
    first: float | None = None
    for piece in adapter.run(call):
        first, _ = clock.mark(piece)
        if isinstance(piece, str):
            pieces.append(piece)
            if not args.json:
                print(piece, end="", flush=True)
        else:
            finish = piece
    total = clock.elapsed()
    if finish and finish.image_note:
        print(f"\n[{finish.image_note}]", file=sys.stderr)
    for note in (finish.applied or {}).get("notes", []) if finish else []:
        print(f"[{note}]", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "model": spec.id, "text": "".join(pieces), "tokens": finish.completion_tokens if finish else 0,
            "prompt_tokens": finish.prompt_tokens if finish else 0, "ttft_s": round(first or total, 4),
            "total_s": round(total, 4), "finish_reason": finish.finish_reason if finish else None,
            "image_note": finish.image_note if finish else None, "applied": finish.applied if finish else None,
        }, ensure_ascii=False))
    else:
        print()
    return 0


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


# --- serve, demo, export ---------------------------------------------------------------------------

def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    """The server's settings from its flags over the environment; a token or users file that cannot work
    is a one-line error here, before anything starts."""
    from app.web.accounts import AccessError
    from app.web.security import resolve_access

    settings = Settings.from_args(models_path=getattr(args, "models", None), data_dir=args.data_dir,
                                  budget_gb=args.budget_gb, auth_token_file=args.auth_token_file,
                                  users_file=args.users_file, allowed_hosts=args.allowed_hosts,
                                  idle_timeout_s=args.idle_timeout, overhead_gb=args.overhead_gb, **extra)
    try:
        resolve_access(settings)
    except AccessError as exc:
        raise CommandError(str(exc)) from None
    return settings


def _serve(settings, host: str, port: int) -> int:
    import uvicorn

    from app.storage.health import StoreError, check_store
    from app.web.app import create_app
    from app.web.connections import LimitedServer, uvicorn_options

    try:  # the data directory takes data, the database opens, is intact and at a known migration
        check_store(settings.database_url, settings.data_dir)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        app = create_app(settings, bind_host=host)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None
    print(f"VLM Playground on http://{host}:{port}  (data: {settings.data_dir}, catalogue: {settings.models_path})",
          flush=True)
    # On SIGTERM the answers in flight get the grace period to finish and the rest are marked interrupted
    # first, so the requests waiting on them are answered; then uvicorn closes what is left.

    class Server(LimitedServer):  # header deadline, connection cap, guarded logs
        async def shutdown(self, sockets: list | None = None) -> None:
            running = getattr(app.state, "services", None)  # absent when start-up failed
            if running is not None:
                await running.runner.shutdown(settings.shutdown_grace_s)
            await super().shutdown(sockets)

    Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                          timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
                          **uvicorn_options(settings))).run()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _serve(_settings(args), args.host, args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from app.tiny.checkpoints import build_tiny_models

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tiny_dir = Settings.from_args(data_dir=args.data_dir).data_dir / "tiny"
    started = time.perf_counter()
    catalogue = build_tiny_models(tiny_dir)
    print(f"tiny random-weight checkpoints ready in {tiny_dir} ({time.perf_counter() - started:.1f} s)", flush=True)
    args.models = str(catalogue)
    return _serve(_settings(args, demo=True, cpu_budget_gb=DEMO_BUDGET_GB), args.host, args.port)


def cmd_export(args: argparse.Namespace) -> int:
    from datetime import datetime

    from app.storage.db import init_db, make_engine
    from app.storage.export import write_ratings_csv

    settings = Settings.from_args(data_dir=args.data_dir)
    engine = make_engine(settings.database_url, settings.data_dir)
    init_db(engine)
    since = datetime.fromisoformat(args.since) if args.since else None
    until = datetime.fromisoformat(args.until) if args.until else None
    if args.out == "-":
        count = write_ratings_csv(engine, sys.stdout, model=args.model, since=since, until=until)
    else:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            count = write_ratings_csv(engine, out, model=args.model, since=since, until=until)
        print(f"wrote {count} ratings to {args.out}", file=sys.stderr)
    return 0


class _TokenFlagGone(argparse.Action):
    """`--auth-token T` is refused with what to do instead (and not taken as an abbreviation of --auth-token-file)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error("--auth-token is gone: a token on the command line shows in ps; put it in a file "
                     "(--auth-token-file PATH) or in $VLM_AUTH_TOKEN")


def _register_serving(add: Callable) -> None:
    for name, handler, text in (("serve", cmd_serve, "Serve the playground."),
                                ("demo", cmd_demo, "Build tiny offline models and serve the playground on them.")):
        command = add(name, handler, text)
        if name == "serve":
            command.add_argument("--models", default=None, help=MODELS_HELP)
        command.add_argument("--data-dir", default=None,
                             help=DATA_DIR_HELP + ("; the tiny checkpoints go to DIR/tiny" if name == "demo" else ""))
        command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
        command.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
        cpu = (f"{DEMO_BUDGET_GB:g} GB (the demo's own CPU budget; $VLM_CPU_BUDGET_GB is not read)" if name == "demo"
               else f"$VLM_CPU_BUDGET_GB, else {_setting_default('cpu_budget_gb'):g} GB")
        command.add_argument("--budget-gb", type=float, default=None,
                             help="memory budget for resident models and their processes (default: $VLM_BUDGET_GB, "
                                  f"else 90%% of the GPU's memory, else without a GPU {cpu})")
        command.add_argument("--overhead-gb", type=float, default=None,
                             help="memory added to each model's plan for its process (default: $VLM_OVERHEAD_GB, "
                                  "else what the process measured at start-up: imports, CUDA context)")
        command.add_argument("--idle-timeout", type=float, default=None,
                             help="stop a model's worker after this many idle seconds (default: "
                                  "$VLM_IDLE_TIMEOUT_S, else never)")
        command.add_argument("--auth-token-file", type=Path, default=None,
                             help="require the token on this file's first line (cookie, bearer header or ?token=); "
                                  "default: $VLM_AUTH_TOKEN_FILE, else $VLM_AUTH_TOKEN, else no token "
                                  "(never a flag: it would show in ps)")
        command.add_argument("--auth-token", action=_TokenFlagGone, help=argparse.SUPPRESS)
        command.add_argument("--users-file", type=Path, default=None,
                             help="per-rater accounts (see `vlm-playground users`): ratings are recorded under "
                                  "the signed-in name; exports and flag overrides need an admin (default: "
                                  "$VLM_USERS_FILE, else none)")
        command.add_argument("--allowed-hosts", default=None,
                             help="host names to answer to besides the bind address and localhost, comma-separated "
                                  "('*': any); others get 400 (DNS rebinding) (default: $VLM_ALLOWED_HOSTS, "
                                  "else none)")
    export = add("export", cmd_export, "Write every rating as CSV.")
    export.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    export.add_argument("--out", default="-", help="file to write, - for standard output (default: -)")
    export.add_argument("--model", default=None, help="only this model's ratings (default: every model)")
    export.add_argument("--since", default=None, help="ISO date or time, inclusive (default: from the first)")
    export.add_argument("--until", default=None, help="ISO date or time, exclusive (default: to the last)")


# --- entry point ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm-playground", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    models = add("models", cmd_models, "List the catalogue: memory figures, languages, availability.")
    models.add_argument("--models", default=None, help=MODELS_HELP)
    models.add_argument("--data-dir", default=None, help=DATA_DIR_HELP + " (where measured sizes are stored)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    tiny = add("tiny-models", cmd_tiny_models, "Build tiny random-weight checkpoints offline.")
    tiny.add_argument("out_dir", help="where the checkpoints and their models.yaml go")
    tiny.add_argument("--only", default="", help="comma-separated families (default: all of "
                                                 "llava, paligemma, idefics3, mllama, qwen2_vl, qwen2_5_vl, "
                                                 "internvl, gemma3)")
    tiny.add_argument("--force", action="store_true",
                      help="rebuild every checkpoint (default: only those missing or built in an older format)")

    run = add("run", cmd_run, "Load one model in this process and stream its answer.")
    run.add_argument("--models", default=None, help=MODELS_HELP)
    run.add_argument("--model", required=True, help="catalogue id")
    run.add_argument("--image", action="append", required=True, help="image file (repeat for several)")
    run.add_argument("--prompt", required=True)
    run.add_argument("--max-new-tokens", type=int, default=256, help="default: %(default)s")
    run.add_argument("--temperature", type=float, default=0.0, help="default: %(default)s (greedy)")
    run.add_argument("--top-p", type=float, default=1.0, help="default: %(default)s")
    run.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    run.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    runtimes.register(add)
    users.register(add)
    _register_serving(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
