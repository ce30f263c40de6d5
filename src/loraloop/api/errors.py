"""The one place where exceptions become HTTP responses, all in one body shape:
``{"error": {"message", "type", "code", "param"}}`` (OpenAI's, used everywhere)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from loraloop.api import request_ids
from loraloop.errors import (
    InvalidRequest,
    LoraloopError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)

__all__ = ["error_response", "install", "validation_message"]

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/v1/", "/healthz")

_BY_STATUS: dict[int, type[LoraloopError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
}


def error_response(exc: LoraloopError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    where = ".".join(loc) or "body"
    kind = error.get("type", "")
    if kind == "json_invalid":
        ctx = error.get("ctx", {})
        return f"the request body is not valid JSON ({ctx.get('error', 'syntax error')})"
    if kind == "extra_forbidden":
        return f"unknown field {where!r}; remove it (check the spelling against the API docs)"
    if kind == "missing":
        return f"field {where!r} is required"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"field {where!r} = {shown[:80]}: {error.get('msg', 'invalid')}"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Every problem in one message, each naming the field and the value."""
    messages = [_describe(e) for e in errors]
    first = errors[0].get("loc", ()) if errors and errors[0].get("type") != "json_invalid" else ()
    param = ".".join(str(p) for p in first if p not in ("body", "query", "path")) or None
    return "; ".join(messages), param


def _respond(request: Request, exc: LoraloopError) -> Response:
    """JSON for programs; the web layer's page for browsers asking for HTML outside /api."""
    render = getattr(request.app.state, "render_error", None)
    wants_html = "text/html" in request.headers.get("accept", "")
    if render is not None and wants_html and not request.url.path.startswith(API_PREFIXES):
        page: Response = render(request, exc)
        return page
    return error_response(exc)


async def _on_loraloop(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoraloopError)
    return _respond(request, exc)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(list(exc.errors()))
    return _respond(request, InvalidRequest(message, code="invalid_request", param=param))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _BY_STATUS.get(exc.status_code, InvalidRequest)
    messages = {
        404: "no such page or endpoint; see /docs for the API",
        405: f"{request.method} is not allowed on {request.url.path}; see /docs for its methods",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    response = _respond(request, cls(message))
    response.status_code = exc.status_code
    return response


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: the log gets the traceback under the request's id, the client the id to quote.

    Starlette answers this outside every middleware, so the ``X-Request-ID`` header is set
    here (the id is still in this task's context)."""
    request_id = request_ids.current()
    log.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    message = "internal error; the server log has details"
    if request_id is not None:
        message += f" (request id {request_id})"
    response = _respond(request, LoraloopError(message))
    if request_id is not None:
        response.headers[request_ids.HEADER] = request_id
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoraloopError, _on_loraloop)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
