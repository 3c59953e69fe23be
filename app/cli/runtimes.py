"""`vlm-playground runtimes [prepare NAME]`: list the pinned runtimes, or create one ahead of time."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from app.cli.errors import CommandError
from app.core.catalog import CatalogError, load_catalog
from app.core.settings import Settings
from app.pool.runtimes import RuntimeManager, RuntimePrepareError


def cmd_runtimes(args: argparse.Namespace) -> int:
    """`vlm-playground runtimes [prepare NAME]`."""
    try:
        catalog = load_catalog(Settings.from_args(models_path=args.models).models_path)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None
    manager = RuntimeManager(catalog.runtimes, Settings.from_args(data_dir=args.data_dir).data_dir / "runtimes")
    if args.action in (None, "list"):
        if args.name:
            raise CommandError("`runtimes` lists all runtimes; to create one: runtimes prepare NAME")
        _print_status(manager.status(), args.json)
        return 0
    if not args.name:
        raise CommandError("runtimes prepare needs a runtime name")
    try:
        python = manager.python_for(args.name, progress=lambda line: print(line, flush=True))
    except RuntimePrepareError as exc:
        raise CommandError(str(exc)) from None
    print(python)
    return 0


def _print_status(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    header = ("name", "state", "transformers", "size MB", "requirements", "description")
    table = [header] + [(r["name"], r["state"], r["transformers"] or "-",
                         "-" if r["size_mb"] is None else f"{r['size_mb']:.0f}",
                         " ".join(r["requirements"]) or "-", r["description"] or "") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the `runtimes` command."""
    command = add("runtimes", cmd_runtimes,
                  "List the pinned runtimes, or create one: runtimes prepare NAME.")
    command.add_argument("action", nargs="?", choices=["list", "prepare"], help="list (default) or prepare")
    command.add_argument("name", nargs="?", help="the runtime to prepare")
    command.add_argument("--models", default=None, help="catalogue file (default: $VLM_MODELS, else models.yaml)")
    command.add_argument("--data-dir", default=None, help="data directory (default: $VLM_DATA_DIR, else ./data)")
    command.add_argument("--json", action="store_true", help="print JSON instead of a table")
