"""Small factories: ``make_user(db)``, ``sign_in(client, user)``, ``make_key(db, user)``,
``make_dataset(db, user, data)``, ``make_base_model(db, path)``,
``make_adapter_version(db, user, base, folder)``, ``make_deployment(db, user, settings, ...)``."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases
from loraloop.config import Settings
from loraloop.datasets import service
from loraloop.db.engine import Database
from loraloop.db.tables import (
    Adapter,
    AdapterVersion,
    BaseModel,
    DatasetVersion,
    Deployment,
    Job,
    Trace,
    User,
)
from loraloop.gateway import deployments
from loraloop.gateway.credentials import Vault
from loraloop.identity import accounts, api_keys
from loraloop.jobs import queue
from loraloop.storage import Storage, sha256_file

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


def make_adapter_version(
    db: Database,
    user: User,
    base: BaseModel,
    folder: Path,
    *,
    adapter: Adapter | None = None,
    name: str | None = None,
    visibility: str = "private",
) -> AdapterVersion:
    """Record the PEFT ``folder`` as the next version of ``adapter`` (a new adapter on ``base``
    by default); the first version becomes the champion, as after a training job."""
    with db.session() as session:
        if adapter is None:
            adapter = adapters.create(
                session,
                user,
                name=name or f"adapter-{next(_counter)}",
                base_model_id=base.id,
                visibility=visibility,
            )
        latest = len(adapters.versions(session, user, adapter.id))
        row = AdapterVersion(
            adapter_id=adapter.id,
            version=latest + 1,
            path=str(folder),
            sha256=sha256_file(folder / "adapter_model.safetensors"),
            spec={},
            metrics={},
        )
        session.add(row)
        session.flush()
        aliases.ensure_champion(session, row)
        return row


def make_deployment(db: Database, user: User, settings: Settings, **target: Any) -> Deployment:
    with db.session() as session:
        target.setdefault("name", f"deploy-{next(_counter)}")
        return deployments.create(session, user, Vault(settings.secret()), **target)


def make_trace(db: Database, user: User, *, answer: str = "480円です。") -> Trace:
    """A served answer of ``user`` (as the gateway records one), to give feedback on."""
    with db.session() as session:
        row = Trace(
            id=f"chatcmpl-test{next(_counter):08d}",
            owner_id=user.id,
            source="api",
            endpoint="chat",
            model="kumo",
            request={"messages": [{"role": "user", "content": "雲ブレンドは？"}]},
            response=answer,
            finish_reason="stop",
            status="ok",
        )
        session.add(row)
        session.flush()
        return row


def link_wallet(client: TestClient, auth: dict[str, str], account: Any) -> str:
    """Link ``account`` (an eth-account key) as the payout wallet through Sign-In with
    Ethereum; returns the lower-case address."""
    from eth_account.messages import encode_defunct

    issued = client.post("/api/wallet/nonce", headers=auth, json={"address": account.address})
    assert issued.status_code == 201, issued.text
    message = issued.json()["message"]
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()
    linked = client.post(
        "/api/wallet/link",
        headers=auth,
        json={"message": message, "signature": "0x" + signature.removeprefix("0x")},
    )
    assert linked.status_code == 200, linked.text
    return str(linked.json()["address"])


def make_points(
    session: Session, user: User, millipoints: int, *, kind: str = "contribution"
) -> None:
    """A points ledger entry for ``user``, as a decided contribution or verified work writes."""
    from loraloop.rewards import ledger

    ledger.append(
        session,
        user_id=user.id,
        adapter_id=None,
        millipoints=millipoints,
        kind=kind,
        source_type="test",
        source_id=0,
        key=f"test:{user.id}:{kind}:{next(_counter)}",
        breakdown={},
    )
