"""Small factories: ``make_user(db)``, ``sign_in(client, user)``, ``make_key(db, user)``."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

from loraloop.db.engine import Database
from loraloop.db.tables import Job, User
from loraloop.identity import accounts, api_keys
from loraloop.jobs import queue

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


def make_user(
    db: Database, *, email: str | None = None, role: str = "member", password: str = PASSWORD
) -> User:
    with db.session() as session:
        return accounts.create_user(
            session,
            email=email or f"user{next(_counter)}@example.com",
            password=password,
            role=role,
        )


def make_key(db: Database, user: User, **kwargs: Any) -> str:
    """Create an API key for ``user``; returns the secret."""
    kwargs.setdefault("name", "test key")
    with db.session() as session:
        return api_keys.create(session, user, **kwargs).secret


def make_job(db: Database, user: User, **payload: Any) -> Job:
    payload.setdefault("seconds_per_step", 0)
    with db.session() as session:
        return queue.enqueue(session, user, "selftest", payload)


def sign_in(client: TestClient, user: User, password: str = PASSWORD) -> str:
    """Sign ``client`` in as ``user`` (cookie set on the client); returns the CSRF token."""
    response = client.post("/api/auth/signin", json={"email": user.email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    client.headers["X-CSRF-Token"] = token
    return token
