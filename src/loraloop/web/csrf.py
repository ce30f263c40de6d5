"""CSRF protection for HTML forms, carried in the hidden ``csrf_token`` field.

Signed in, the token is the session row's ``csrf_token`` (the value the API wants in
``X-CSRF-Token``). Anonymous (sign-in, sign-up, language), it is a double-submit cookie:
a random ``loraloop_csrf`` cookie (HttpOnly, SameSite=Lax) whose value the form repeats;
another site can make the browser send the cookie but cannot read it to fill in the field.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from loraloop.config import Settings
from loraloop.db.tables import WebSession
from loraloop.errors import PermissionDenied
from loraloop.identity.tokens import new_secret, same

__all__ = ["COOKIE", "FIELD", "check", "remember", "token_for"]

COOKIE = "loraloop_csrf"
FIELD = "csrf_token"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


def _cookie(request: Request) -> str | None:
    value = request.cookies.get(COOKIE, "")
    return value if _WELL_FORMED.match(value) else None


def token_for(request: Request, web_session: WebSession | None) -> str:
    """The value a form rendered for this request must carry."""
    if web_session is not None:
        return web_session.csrf_token
    return _cookie(request) or new_secret(32)


def remember(response: Response, request: Request, token: str, settings: Settings) -> None:
    """Set the anonymous double-submit cookie unless the browser already holds ``token``."""
    if request.cookies.get(COOKIE) == token:
        return
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def check(request: Request, given: str, web_session: WebSession | None) -> None:
    """Refuse a form whose token is missing or not the one this browser was given."""
    expected = web_session.csrf_token if web_session is not None else _cookie(request)
    if not given or not expected or not same(given, expected):
        raise PermissionDenied(
            "missing or wrong CSRF token: reload the page and submit the form again",
            code="csrf_failed",
        )
