"""Where the page's templates and static files are: the repository's folders, or the installed package's."""

from __future__ import annotations

from pathlib import Path

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
