"""The one exception tree. Each error knows its HTTP status; ``api/errors.py`` maps them.

The body shape everywhere is OpenAI's: ``{"error": {"message", "type", "code", "param"}}``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "Conflict",
    "InvalidRequest",
    "LoraloopError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "UpstreamFailed",
]


class LoraloopError(Exception):
    """Base of every error loraloop raises on purpose."""

    status_code = 500
    type = "server_error"
    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param

    def to_body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


class ConfigurationError(LoraloopError):
    """Settings that cannot be used; raised before the server starts."""

    default_code = "bad_configuration"


class InvalidRequest(LoraloopError):
    status_code = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class Unauthenticated(LoraloopError):
    status_code = 401
    type = "authentication_error"
    default_code = "unauthenticated"


class PermissionDenied(LoraloopError):
    status_code = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFound(LoraloopError):
    """Also what another user's private thing looks like: never reveal that it exists."""

    status_code = 404
    type = "not_found_error"
    default_code = "not_found"


class Conflict(LoraloopError):
    status_code = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(LoraloopError):
    status_code = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class RateLimited(LoraloopError):
    status_code = 429
    type = "rate_limit_error"
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamFailed(LoraloopError):
    """An external OpenAI-compatible service behind a deployment failed or timed out."""

    status_code = 502
    type = "api_error"
    default_code = "upstream_error"
