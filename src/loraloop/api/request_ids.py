"""Request ids: every request gets one, the response says it (``X-Request-ID``), and every log
record written while serving it carries it (:data:`loraloop.logs.REQUEST_ID`).

A caller (a proxy, a client retrying) may bring its own id so its logs and ours line up; one
that is too long or holds other characters than ``[A-Za-z0-9._-]`` is replaced, so an id can
never forge a log line or blow up a log index.
"""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loraloop.logs import REQUEST_ID

__all__ = ["HEADER", "RequestIds", "current", "sane"]

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def sane(value: str) -> bool:
    """Whether a caller's id may be kept: 1 to 64 characters of ``[A-Za-z0-9._-]``."""
    return _SANE.fullmatch(value) is not None


def current() -> str | None:
    """The id of the request being served here, if any (for error bodies and headers)."""
    return REQUEST_ID.get()


def _given(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _HEADER_KEY:
            text = value.decode("latin-1")
            return text if sane(text) else None
    return None


class RequestIds:
    """Pure ASGI middleware (no extra task, so the contextvar reaches uvicorn's access log).

    The id is not reset when the request ends: an unhandled error is answered by Starlette's
    outermost middleware, after this one returned, and its log line must still name the id.
    Each request runs in its own task, so nothing leaks into the next one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _given(scope) or secrets.token_hex(8)
        REQUEST_ID.set(request_id)
        header = (_HEADER_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_KEY]
                message["headers"] = [*kept, header]
            await send(message)

        await self.app(scope, receive, send_with_id)
