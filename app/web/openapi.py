"""The OpenAPI document as the server really answers: every refusal is documented with its real body.

FastAPI documents a 422 as its own `HTTPValidationError`, but this server answers `{detail: str}`
(see `app.web.app._error_handlers`); the middleware's refusals (host, token, cross-site, body size
and time) and the store's 503/507 reach every operation without the routes knowing. This module
rewrites the generated document once, so that clients and Schemathesis can trust it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

REFUSAL = {"$ref": "#/components/schemas/Refusal"}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
OPENAI_ERROR_SCHEMA = {
    "title": "OpenAIError", "type": "object", "required": ["error"],
    "description": "An OpenAI-style error: what went wrong, its kind, and a machine-readable code.",
    "properties": {"error": {"type": "object", "required": ["message"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "code": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}},
}
# Refusals any operation may meet before (or around) its route: (status, description, which operations)
EVERYWHERE = {
    "400": "refused: the Host header names a host this playground does not answer to",
    "401": "this playground needs its access token or an account",
    "403": "refused: a cross-site write, or an admin-only operation for a rater's account",
    "503": "unavailable: the database is unusable, the server is shutting down, or the model is busy",
}
WITH_BODY = {
    "408": "the request body did not arrive within the body time limit",
    "413": "too large: names the file or field and the limit",
    "507": "the server's disk is full: nothing was stored",
}
GATEWAY = {
    "404": "no such model (or it cannot be loaded here)",
    "422": "not acceptable: names the field and what is wrong",
    "429": "this client has as many requests waiting for the model as one client may (see Retry-After)",
    "502": "the model failed while answering",
}
STREAMED = ("text/csv", "application/jsonl", "text/event-stream")


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = corrected(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def corrected(schema: dict[str, Any]) -> dict[str, Any]:
    """The generated document with the server's real error bodies and every refusal it can give."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["OpenAIError"] = OPENAI_ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            gateway = path.startswith("/v1/")
            error = {"anyOf": [OPENAI_ERROR, REFUSAL]} if gateway else REFUSAL
            responses = operation.setdefault("responses", {})
            _real_validation_body(responses, error)
            extra = {**EVERYWHERE, **(WITH_BODY if method in ("post", "put", "patch") else {}),
                     **(GATEWAY if gateway and method == "post" else {})}
            for status, description in extra.items():
                responses.setdefault(status, {"description": description,
                                              "content": {"application/json": {"schema": error}}})
            _streams_only(responses)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def _real_validation_body(responses: dict[str, Any], error: dict[str, Any]) -> None:
    """422 answers `{detail: str}` (or an OpenAI error on the gateway), not FastAPI's list of errors."""
    found = responses.get("422")
    if found is None:
        return
    schema = found.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref", "").endswith("/HTTPValidationError") or not schema:
        responses["422"] = {"description": "not acceptable: names the field and what is wrong",
                            "content": {"application/json": {"schema": error}}}


def _streams_only(responses: dict[str, Any]) -> None:
    """A CSV, JSON Lines or event-stream answer is documented as that type alone, not as JSON too."""
    ok = responses.get("200", {}).get("content", {})
    if any(kind in ok for kind in STREAMED):
        ok.pop("application/json", None)
