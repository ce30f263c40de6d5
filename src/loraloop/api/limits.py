"""Request body size limit, enforced while the body streams in (not only by Content-Length).

Upload endpoints (``exempt_prefixes``) are let through: each enforces its own, larger limit
while it reads the stream.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loraloop.api.errors import error_response
from loraloop.errors import PayloadTooLarge

__all__ = ["BodyLimit"]


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with a 413 in the common error shape."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes
        self.message = (
            f"the request body is larger than the {max_bytes} byte limit; send less data "
            "(or use the upload endpoint for large files)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(PayloadTooLarge(self.message))(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; errors.py shapes it.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)

    def _exempt(self, path: str) -> bool:
        """``/api/datasets`` covers ``/api/datasets/1`` but not ``/api/datasets-other``."""
        return any(
            path == prefix or path.startswith(prefix.rstrip("/") + "/")
            for prefix in self.exempt_prefixes
        )
