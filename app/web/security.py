"""Headers that keep untrusted content inert; refusal of foreign Host names (DNS rebinding) and of
cross-site writes; the optional access token or per-rater accounts."""

from __future__ import annotations

import hmac
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import psutil

from app.core.settings import Settings
from app.web.accounts import AccessError, Account, Accounts

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
TOKEN_COOKIE = "vlm_token"
ACCOUNT_COOKIE = "vlm_account"
OPEN_PATHS = ("/health", "/static/")
ACCOUNT_OPEN_PATHS = (*OPEN_PATHS, "/login", "/logout")
ADMIN_PATHS = ("/export/",)
API_PATHS = ("/api/", "/v1/", "/export/", "/openapi.json")
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


# ---------------------------------------------------------------- cookies

def parse_cookies(header: str) -> dict[str, str]:
    """name → value (percent-decoded) of a Cookie header; a malformed cookie is skipped, not the header."""
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, equals, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found.setdefault(name, unquote(value))
    return found


def set_cookie_header(name: str, value: str, clear: bool = False) -> tuple[bytes, bytes]:
    """A Set-Cookie header: HttpOnly, SameSite=Strict, the value percent-encoded (any token survives)."""
    expiry = "; Max-Age=0" if clear else ""
    cookie = f"{name}={quote(value, safe='')}; HttpOnly; SameSite=Strict; Path=/{expiry}"
    return b"set-cookie", cookie.encode("ascii")


# ---------------------------------------------------------------- hosts

def host_name(host: str) -> str:
    """The name in a Host header or an --allowed-hosts entry: lower case, no port, no brackets, no final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def machine_names() -> set[str]:
    """This machine's host name, fully qualified name and every interface address."""
    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        names.update(a.address.partition("%")[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
    return {host_name(name) for name in names if name}


class HostCheck:
    """The Host names this server answers to: its bind address, the localhost names (and, bound to every
    address, the machine's names and addresses), and the configured ones; '*' allows any."""

    def __init__(self, bind_host: str = "127.0.0.1", allowed: str = "") -> None:
        extra = [item.strip() for item in allowed.split(",") if item.strip()]
        self.any = "*" in extra
        names = {*LOCAL_NAMES, host_name(bind_host), *(host_name(item) for item in extra if item != "*")}
        if bind_host.strip("[]") in ANY_ADDRESS:
            names |= machine_names()
        self.names = frozenset(name for name in names if name and name not in ANY_ADDRESS)

    def allows(self, host: str | None) -> bool:
        """Whether to answer a request with this Host header (none: an HTTP/1.0 script, never a browser)."""
        return self.any or not host or host_name(host) in self.names

    def refusal(self, host: str) -> str:
        return (f"host {host[:100]!r} is not one this playground answers to; allowed: {', '.join(sorted(self.names))}; "
                "add it with --allowed-hosts")


# ---------------------------------------------------------------- settings

def read_token_file(path: Path) -> str:
    """The first line of the token file; AccessError naming the file when it is missing, unreadable or empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AccessError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"token file {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise AccessError(f"token file {path} is empty: its first line must be the access token")
    return token


def resolve_access(settings: Settings) -> tuple[str | None, Accounts | None]:
    """(shared token, accounts) from the settings; AccessError when they cannot work together."""
    if settings.auth_token and settings.auth_token_file:
        raise AccessError("the access token is given twice (VLM_AUTH_TOKEN and --auth-token-file): keep one")
    token = read_token_file(settings.auth_token_file) if settings.auth_token_file else settings.auth_token
    if token and settings.users_file:
        raise AccessError("pick one way in: a shared access token (VLM_AUTH_TOKEN, --auth-token-file) or "
                          "per-rater accounts (--users-file), not both")
    return token or None, Accounts(settings.users_file) if settings.users_file else None


# ---------------------------------------------------------------- the middleware

class Security:
    """ASGI middleware: security headers on every answer; 400 for a foreign Host; 403 for cross-site writes;
    401 without the token or a valid account; 403 for a rater on an admin path."""

    def __init__(self, app: Any, auth_token: str | None = None, accounts: Accounts | None = None,
                 hosts: HostCheck | None = None) -> None:
        self.app = app
        self.auth_token = auth_token
        self.accounts = accounts
        self.hosts = hosts or HostCheck()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if not self.hosts.allows(headers.get("host")):
            await _refuse(send, 400, self.hosts.refusal(headers["host"]))
            return
        if scope["method"] in UNSAFE_METHODS and cross_site(headers):
            await _refuse(send, 403, "cross-site request refused: state changes must come from this site")
            return
        path = scope["path"]
        token_from_query = None
        if self.auth_token and not path.startswith(OPEN_PATHS):
            token_from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            if not self._authorised(headers, token_from_query):
                await _refuse(send, 401, "this playground needs its access token (ask whoever runs it)",
                              [(b"www-authenticate", b"Bearer")])
                return
        if self.accounts is not None and not path.startswith(ACCOUNT_OPEN_PATHS):
            account = await self._account(headers)
            if account is None:
                await self._sign_in_first(scope, headers, send)
                return
            if path.startswith(ADMIN_PATHS) and not account.admin:
                await _refuse(send, 403, f"this needs an admin account; {account.name} is a {account.role}")
                return
            scope.setdefault("state", {})["account"] = account

        remember = token_from_query is not None and self._matches(token_from_query)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
                if remember and token_from_query is not None:
                    message["headers"].append(set_cookie_header(TOKEN_COOKIE, token_from_query))
            await send(message)

        await self.app(scope, receive, with_headers)

    def _authorised(self, headers: dict[str, str], from_query: str | None) -> bool:
        offered = [bearer(headers)]
        offered.append(parse_cookies(headers.get("cookie", "")).get(TOKEN_COOKIE))
        offered.append(from_query)
        return any(self._matches(token) for token in offered if token)

    def _matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), (self.auth_token or "").encode())

    async def _account(self, headers: dict[str, str]) -> Account | None:
        """The account of the request's credential (bearer header, else the sign-in cookie), or None."""
        assert self.accounts is not None
        credential = bearer(headers) or parse_cookies(headers.get("cookie", "")).get(ACCOUNT_COOKIE)
        if not credential:
            return None
        return await self.accounts.check(credential)

    @staticmethod
    async def _sign_in_first(scope: dict, headers: dict[str, str], send: Any) -> None:
        """A browser asking for a page goes to the sign-in page (303); anything else gets 401 JSON."""
        path = scope["path"]
        wants_page = (scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", "")
                      and not path.startswith(API_PATHS))
        target = "/login?next=" + quote(path + (f"?{scope['query_string'].decode('latin-1')}"
                                                if scope.get("query_string") else ""), safe="")
        if wants_page and headers.get("hx-request") != "true":
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", target.encode()), (b"content-length", b"0"), *HEADERS]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _refuse(send, 401, "sign in first: send Authorization: Bearer NAME:SECRET, or sign in at /login",
                      [(b"www-authenticate", b'Bearer realm="vlm-playground"'), (b"hx-redirect", target.encode())])


def bearer(headers: dict[str, str]) -> str | None:
    """The credential of an `Authorization: Bearer …` header (UTF-8, as clients send it), or None."""
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    value = auth[7:].strip()
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return value


async def _refuse(send: Any, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def cross_site(headers: dict[str, str]) -> bool:
    """A browser's request from another site. Scripts send neither header and are allowed."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
