"""A user cannot see or touch another user's things: every route with a path id answers 404
for someone else's id, exactly as for an id that does not exist (never 403).

The routes come from the app itself, so a new route with an id is covered automatically; a
path parameter without a factory below fails the test until one is added."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import (
    AdapterExport,
    AdapterVersion,
    Contribution,
    EvalSuite,
    GateDecision,
    RetrainRun,
    ReviewAssignment,
    TrainingCandidate,
    User,
    WalletLink,
)
from loraloop.gateway import conversations
from loraloop.identity import api_keys
from loraloop.rewards import epochs
from tests.factories import (
    make_base_model,
    make_dataset,
    make_deployment,
    make_job,
    make_key,
    make_points,
    make_user,
    sign_in,
)

# Routes whose ids are not owner-scoped; why, and where that is tested instead.
NOT_OWNER_SCOPED = {
    "/api/base-models/": "the shared catalog: every signed-in user may read base models",
    "/api/worker/": "worker protocol: worker-scoped admin keys and lease tokens (test_worker_api)",
    "/v1/": "the OpenAI surface: model ids are per key owner (test_gateway: a stranger's key)",
}

# Valid bodies for routes that need one, so ownership (not validation) decides the answer.
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/api/adapters/{adapter_id}/train"): {"dataset_id": 999_999},
    ("PUT", "/api/adapters/{adapter_id}/aliases/{alias}"): {"version": 1},
    ("PUT", "/api/playground/conversations/{conversation_id}"): {"title": "mine now"},
    ("PUT", "/api/adapters/{adapter_id}/policy"): {"mode": "off"},
    ("POST", "/api/adapters/{adapter_id}/challenge"): {"version": 1},
    ("POST", "/api/adapters/{adapter_id}/suites"): {"name": "mine now"},
    ("POST", "/api/suites/{suite_id}/cases"): {"cases": [{"prompt": "x", "expected": "y"}]},
    ("POST", "/api/adapters/{adapter_id}/evaluations"): {"versions": [1]},
    ("POST", "/api/decisions/{decision_id}/override"): {"promote": True, "reason": "mine now"},
    ("POST", "/api/adapters/{adapter_id}/contributions"): {
        "kind": "example",
        "item": {"prompt": "mine now?", "completion": "yes"},
    },
    ("POST", "/api/adapters/{adapter_id}/gold"): {
        "item": {"prompt": "gold?", "completion": "yes"},
        "verdict": "accept",
    },
    ("POST", "/api/adapters/{adapter_id}/invites"): {"email": "intruder@example.com"},
    ("PUT", "/api/adapters/{adapter_id}/reviewer"): {"reviewer": True},
    ("POST", "/api/contributions/{contribution_id}/decision"): {"accept": True},
    ("POST", "/api/reviews/{assignment_id}/commit"): {"commitment": "a" * 64},
    ("POST", "/api/reviews/{assignment_id}/reveal"): {"verdict": "accept", "salt": "saltsalt"},
    ("POST", "/api/hub/adapters/{adapter_id}/fork"): {"version": 1},
    ("POST", "/api/adapters/{adapter_id}/versions/{version}/exports"): {"format": "merged"},
    ("POST", "/api/adapters/{adapter_id}/versions/{version}/push"): {
        "repo_id": "intruder/stolen",
        "token": "hf_intruder",
    },
}

_DATASET = b'{"prompt": "Hi", "completion": "Hello"}\n'

OWNED: dict[str, Callable[[Database, User], int]] = {
    "job_id": lambda db, user: make_job(db, user).id,
    "key_id": lambda db, user: _key_id(db, user),
    "adapter_id": lambda db, user: _adapter_id(db, user),
    "version": lambda db, user: 1,
    "dataset_id": lambda db, user: make_dataset(db, user, _DATASET).dataset_id,
    "deployment_id": lambda db, user: _deployment_id(db, user),
    "alias": lambda db, user: "champion",
    "conversation_id": lambda db, user: _conversation_id(db, user),
    # maintenance loop rows, each on an adapter of its own (tests/test_mlops_api.py has more)
    "run_id": lambda db, user: _maintenance_row(db, user, "run"),
    "suite_id": lambda db, user: _maintenance_row(db, user, "suite"),
    "decision_id": lambda db, user: _maintenance_row(db, user, "decision"),
    "candidate_id": lambda db, user: _maintenance_row(db, user, "candidate"),
    # community rows (tests/test_community_api.py has more)
    "contribution_id": lambda db, user: _community_row(db, user, "contribution"),
    "assignment_id": lambda db, user: _community_row(db, user, "assignment"),
    # an epoch whose tree pays the user (tests/test_rewards.py has more)
    "epoch_id": lambda db, user: _epoch_paying(db, user),
    # an export of a version of the user's own (tests/test_interop.py has more)
    "export_id": lambda db, user: _export_id(db, user),
}


def _export_id(db: Database, user: User) -> int:
    """A finished export of version 1 of a private adapter of ``user``."""
    adapter_id = _adapter_id(db, user, name="exported")
    with db.session() as session:
        version = AdapterVersion(
            adapter_id=adapter_id, version=1, path="/nowhere", sha256="0" * 64, spec={}, metrics={}
        )
        session.add(version)
        session.flush()
        export = AdapterExport(
            adapter_id=adapter_id,
            version_id=version.id,
            format="merged",
            options={},
            path="/nowhere",
            files=[{"name": "model.safetensors", "size": 1, "sha256": "0" * 64}],
        )
        session.add(export)
        session.flush()
        return int(export.id)


def _epoch_paying(db: Database, user: User) -> int:
    settings = Settings(env="development", home=Path("/nowhere"), secret_key="isolation-secret")
    with db.session() as session:
        session.add(WalletLink(user_id=user.id, address="0x" + "ab" * 20))
        make_points(session, user, 1000, kind="review")
        return epochs.close(session, settings).id


def _community_row(db: Database, user: User, kind: str) -> int:
    """A pending item the user offered to their own private adapter, or a review the user was
    drawn for on it."""
    adapter_id = _adapter_id(db, user, name=kind)
    with db.session() as session:
        item = Contribution(
            adapter_id=adapter_id,
            author_id=user.id,
            kind="example",
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            provenance={"via": "api"},
            content_sha256=f"{kind}-{user.id}".ljust(64, "0"),
        )
        session.add(item)
        session.flush()
        if kind == "contribution":
            return int(item.id)
        review = ReviewAssignment(
            contribution_id=item.id, reviewer_id=user.id, due_at=utcnow() + timedelta(days=1)
        )
        session.add(review)
        session.flush()
        return int(review.id)


def _maintenance_row(db: Database, user: User, kind: str) -> int:
    adapter_id = _adapter_id(db, user, name=kind)
    rows: dict[str, Callable[[], Any]] = {
        "run": lambda: RetrainRun(
            adapter_id=adapter_id, trigger="manual", detail={}, status="proposed"
        ),
        "suite": lambda: EvalSuite(
            adapter_id=adapter_id, name="s", kind="owner", metric="contains"
        ),
        "decision": lambda: GateDecision(
            adapter_id=adapter_id, outcome="refuse", reason="r", numbers={}
        ),
        "candidate": lambda: TrainingCandidate(
            adapter_id=adapter_id, messages=[], status="pending", role="train"
        ),
    }
    with db.session() as session:
        row = rows[kind]()
        session.add(row)
        session.flush()
        return int(row.id)


def _conversation_id(db: Database, user: User) -> int:
    with db.session() as session:
        return conversations.create(
            session, user, title="private", target={}, settings={}, messages=[]
        ).id


def _deployment_id(db: Database, user: User) -> int:
    base = make_base_model(db, Path("/nowhere"))
    settings = Settings(env="development", home=Path("/nowhere"), secret_key="isolation-secret")
    return make_deployment(db, user, settings, base_model_id=base.id).id


def _adapter_id(db: Database, user: User, name: str = "private") -> int:
    """A private adapter of ``user`` (on a placeholder base model row)."""
    base = make_base_model(db, Path("/nowhere"))
    with db.session() as session:
        return adapters.create(session, user, name=f"{name}-{user.id}", base_model_id=base.id).id


def _key_id(db: Database, user: User) -> int:
    with db.session() as session:
        return api_keys.create(session, user, name="victim's key").key.id


def _operations(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """(method, path, path parameter names) of every documented operation."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            found.append((method.upper(), path, params))
    return found


def _routes_with_ids(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    return [
        (method, path, params)
        for method, path, params in _operations(app)
        if params and not path.startswith(tuple(NOT_OWNER_SCOPED))
    ]


def test_every_id_route_is_covered(app: FastAPI) -> None:
    routes = _routes_with_ids(app)
    assert routes, "expected routes with path ids"
    missing = {p for _, _, params in routes for p in params if p not in OWNED}
    assert not missing, f"add a factory to OWNED for path parameters: {missing}"


@pytest.mark.parametrize("auth", ["cookie", "bearer"])
def test_other_users_ids_look_like_missing_ones(
    app: FastAPI, client: TestClient, db: Database, auth: str
) -> None:
    victim, intruder = make_user(db), make_user(db)
    ids = {name: factory(db, victim) for name, factory in OWNED.items()}
    if auth == "cookie":
        sign_in(client, intruder)
    else:
        secret = make_key(db, intruder, scopes=["manage"], rate_limit_per_minute=10_000)
        client.headers["Authorization"] = f"Bearer {secret}"
    checked = 0
    for method, path, params in _routes_with_ids(app):
        url = path.format(**{p: ids[p] for p in params})
        missing = path.format(**{p: 999_999 for p in params})
        body = BODIES.get((method, path), {}) if method != "GET" else None
        theirs = client.request(method, url, json=body)
        absent = client.request(method, missing, json=body)
        assert theirs.status_code == 404, f"{method} {url} gave {theirs.status_code}"
        assert absent.status_code == 404
        assert theirs.json()["error"]["type"] == absent.json()["error"]["type"] == "not_found_error"
        checked += 1
    assert checked >= 7
    # and nothing of the victim's changed: the job is still queued, the key still active
    owner = TestClient(app, base_url="http://127.0.0.1:8000")
    sign_in(owner, victim)
    assert owner.get(f"/api/jobs/{ids['job_id']}").json()["status"] == "queued"
    assert owner.get(f"/api/keys/{ids['key_id']}").json()["revoked_at"] is None


def test_lists_only_show_own_things(client: TestClient, db: Database) -> None:
    victim, intruder = make_user(db), make_user(db)
    make_job(db, victim)
    make_key(db, victim)
    _deployment_id(db, victim)
    sign_in(client, intruder)
    assert client.get("/api/jobs").json() == []
    assert client.get("/api/keys").json() == []
    assert client.get("/api/deployments").json() == []
    _conversation_id(db, victim)
    assert client.get("/api/playground/conversations").json() == []


PUBLIC = ("/api/auth/signup", "/api/auth/signin")


def test_anonymous_requests_are_refused(app: FastAPI, client: TestClient) -> None:
    checked = 0
    for method, path, params in _operations(app):
        if not path.startswith("/api/") or path.startswith(PUBLIC):
            continue
        url = path.format(**dict.fromkeys(params, 1))
        response = client.request(method, url)
        assert response.status_code == 401, f"{method} {url} gave {response.status_code}"
        checked += 1
    assert checked >= 10
