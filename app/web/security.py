"""Headers that keep untrusted content inert, refusal of cross-site writes, optional access token."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
OPEN_PATHS = ("/health", "/static/")


class Security:
    """ASGI middleware: security headers on every answer; 403 for cross-site writes; 401 without the token."""

    def __init__(self, app: Any, auth_token: str | None = None) -> None:
        self.app = app
        self.auth_token = auth_token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if scope["method"] in UNSAFE_METHODS and cross_site(headers):
            await self._refuse(send, 403, "cross-site request refused: state changes must come from this site")
            return
        token_from_query = None
        if self.auth_token and not scope["path"].startswith(OPEN_PATHS):
            token_from_query = parse_qs(scope.get("query_string", b"").decode()).get("token", [None])[0]
            if not self._authorised(headers, token_from_query):
                await self._refuse(send, 401, "this playground needs its access token (ask whoever runs it)",
                                   [(b"www-authenticate", b"Bearer")])
                return

        remember = token_from_query is not None and self._matches(token_from_query)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
                if remember:
                    cookie = f"{TOKEN_COOKIE}={token_from_query}; HttpOnly; SameSite=Strict; Path=/"
                    message["headers"].append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, with_headers)

    def _authorised(self, headers: dict[str, str], from_query: str | None) -> bool:
        offered = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        cookie = SimpleCookie(headers.get("cookie", ""))
        if TOKEN_COOKIE in cookie:
            offered.append(cookie[TOKEN_COOKIE].value)
        if from_query:
            offered.append(from_query)
        return any(self._matches(token) for token in offered)

    def _matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), (self.auth_token or "").encode())

    @staticmethod
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
