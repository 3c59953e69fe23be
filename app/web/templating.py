"""The page's templates and static files (the repository's folders, or the installed package's), the
Jinja environment with autoescape on, and its formatting filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi.templating import Jinja2Templates

_PACKAGE = Path(__file__).resolve().parents[1]  # app/
_REPOSITORY = _PACKAGE.parent


def resource_dir(name: str) -> Path:
    """`templates` or `static`: beside the package in a checkout, inside it once installed from a wheel."""
    for candidate in (_REPOSITORY / name, _PACKAGE / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is missing from both {_REPOSITORY} and {_PACKAGE}")


TEMPLATES_DIR = resource_dir("templates")
STATIC_DIR = resource_dir("static")

env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                         trim_blocks=True, lstrip_blocks=True)


templates = Jinja2Templates(env=env)


def secs(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def gb(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2f}"


def num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(name: str, **context: Any) -> str:
    return env.get_template(name).render(**context).strip()


env.filters.update(secs=secs, gb=gb, num=num)
