"""Signing in and out with a per-rater account (when the playground runs with a users file)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.web.deps import AccountsDep
from app.web.security import ACCOUNT_COOKIE, set_cookie_header
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


def safe_next(target: object) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a scheme)."""
    text = target if isinstance(target, str) else ""
    return text if text.startswith("/") and not text.startswith(("//", "/\\")) else "/"


def _page(request: Request, next_path: str, name: str = "", error: str | None = None,
          status_code: int = 200, accounts_on: bool = True) -> HTMLResponse:
    context = {"next": next_path, "name": name, "error": error, "accounts_on": accounts_on}
    return templates.TemplateResponse(request, "login.html", context, status_code=status_code)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, accounts: AccountsDep, next: str = "/") -> HTMLResponse:
    """The sign-in form (without accounts it says there is nothing to sign in to)."""
    return _page(request, safe_next(next), accounts_on=accounts is not None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, accounts: AccountsDep) -> Response:
    """Check the name and secret; on success an HttpOnly SameSite=Strict cookie carries the credential."""
    form = await request.form()
    name, secret = str(form.get("name") or "").strip(), str(form.get("secret") or "")
    next_path = safe_next(form.get("next"))
    if accounts is None:
        return _page(request, next_path, name, "this playground has no accounts: raters name themselves",
                     409, accounts_on=False)
    account = await accounts.check(f"{name}:{secret}") if name and secret else None
    if account is None:
        return _page(request, next_path, name, "wrong name or secret", 401)
    response = RedirectResponse(next_path, status_code=303)
    response.raw_headers.append(set_cookie_header(ACCOUNT_COOKIE, f"{name}:{secret}"))
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the sign-in cookie and go back to the sign-in form."""
    response = RedirectResponse("/login", status_code=303)
    response.raw_headers.append(set_cookie_header(ACCOUNT_COOKIE, "", clear=True))
    return response
