"""Small factories: ``make_user(db)``, ``sign_in(client, user)``, ``make_key(db, user)``,
``make_dataset(db, user, data)``, ``make_base_model(db, path)``."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from loraloop.datasets import service
from loraloop.db.engine import Database
from loraloop.db.tables import BaseModel, DatasetVersion, Job, User
from loraloop.identity import accounts, api_keys
from loraloop.jobs import queue
from loraloop.storage import Storage

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


#: Artifacts of datasets made without a storage of their own. Content-addressed files never
#: change once written, so tests can share this folder safely.
_SHARED_STORAGE = Storage(Path(tempfile.gettempdir()) / "loraloop-test-artifacts")


def make_dataset(
    db: Database,
    user: User,
    data: Path | bytes,
    *,
    name: str | None = None,
    storage: Storage | None = None,
    format: str | None = None,
    **options: Any,
) -> DatasetVersion:
    """Upload ``data`` (a file or its bytes) as the next version of ``user``'s dataset."""
    body = data.read_bytes() if isinstance(data, Path) else data
    with db.session() as session:
        return service.upload(
            session,
            storage or _SHARED_STORAGE,
            user,
            name=name or f"dataset-{next(_counter)}",
            chunks=[body],
            format=format,
            **options,
        )


def make_base_model(db: Database, path: Path, *, name: str | None = None) -> BaseModel:
    """Register the model folder ``path`` (e.g. from ``make_tiny_model``) as a base model row."""
    with db.session() as session:
        row = BaseModel(
            name=name or f"base-{next(_counter)}",
            source="local",
            path=str(path),
            architecture="LlamaForCausalLM",
            model_type="llama",
            parameters=1,
            context_length=512,
            chat_template=None,
            sha256="0" * 64,
        )
        session.add(row)
        session.flush()
        return row
