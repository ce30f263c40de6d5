"""Dependencies that make routes read like sentences: ``user: CurrentUser, db: DbSession``.

A request is authenticated either by a bearer API key with the ``manage`` scope or by the
browser session cookie; cookie-authenticated requests that change something must carry the
session's CSRF token in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import ApiKey, User, WebSession
from loraloop.errors import NotFound, PermissionDenied, Unauthenticated
from loraloop.identity import api_keys, sessions
from loraloop.identity.tokens import same
from loraloop.storage import Storage

__all__ = [
    "SAFE_METHODS",
    "AdminUser",
    "AppSettings",
    "AppStorage",
    "Auth",
    "CurrentAuth",
    "CurrentUser",
    "DbSession",
    "bearer_secret",
    "client_address",
    "optional_auth",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def _session(request: Request) -> Iterator[Session]:
    with _database(request).session() as session:
        yield session


AppSettings = Annotated[Settings, Depends(_settings)]
AppStorage = Annotated[Storage, Depends(_storage)]
AppDatabase = Annotated[Database, Depends(_database)]
# scope="function": the transaction commits when the route returns, before the response is
# sent, so a client never reads its own write too early and a stream holds no lock.
DbSession = Annotated[Session, Depends(_session, scope="function")]


@dataclass
class Auth:
    user: User
    web_session: WebSession | None = None
    key: ApiKey | None = None


def bearer_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def optional_auth(request: Request, settings: Settings) -> Auth | None:
    """Who is asking, or None for an anonymous request. Invalid credentials raise.

    Runs in its own short transaction: on SQLite a request's own transaction takes the write
    lock at its first statement, and a long request (an upload) must not hold it from here."""
    db = _database(request)
    secret = bearer_secret(request)
    if secret is not None:
        user, key = api_keys.authenticate(db, secret, scope="manage")
        return Auth(user=user, key=key)
    token = request.cookies.get(sessions.COOKIE)
    if not token:
        return None
    with db.session() as session:
        found = sessions.resolve(session, token, days=settings.session_days)
    if found is None:
        return None
    return Auth(user=found[0], web_session=found[1])


def _current_auth(request: Request, settings: AppSettings) -> Auth:
    auth = optional_auth(request, settings)
    if auth is None:
        raise Unauthenticated(
            "sign in first, or send an API key with the 'manage' scope as "
            "'Authorization: Bearer ll_...'",
            code="not_signed_in",
        )
    if auth.web_session is not None and request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER, "")
        if not given or not same(given, auth.web_session.csrf_token):
            raise PermissionDenied(
                "missing or wrong CSRF token: send the X-CSRF-Token header with the value "
                "from the page (or from the sign-in response)",
                code="csrf_failed",
            )
    return auth


CurrentAuth = Annotated[Auth, Depends(_current_auth)]


def _current_user(auth: CurrentAuth) -> User:
    return auth.user


CurrentUser = Annotated[User, Depends(_current_user)]


def _admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise NotFound("no such endpoint; see /docs for the API")
    return user


AdminUser = Annotated[User, Depends(_admin_user)]
