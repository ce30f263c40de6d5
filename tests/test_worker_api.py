"""The worker job protocol over HTTP: worker-scoped admin keys only, lease tokens as fencing
tokens (a stale completion is a 409 that changes nothing), strict bodies, one error shape."""

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import select, update

from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import Job, User
from loraloop.jobs import queue
from tests.factories import make_job, make_key, make_user, sign_in

ERROR_FIELDS = {"message", "type", "code", "param"}


def _worker_key(db: Database, **kwargs: Any) -> dict[str, str]:
    admin = make_user(db, role="admin")
    return {"Authorization": f"Bearer {make_key(db, admin, scopes=['worker'], **kwargs)}"}


def _claim(client: TestClient, auth: dict[str, str], **body: Any) -> Response:
    return client.post("/api/worker/claim", json={"worker_id": "gpu-1", **body}, headers=auth)


def _call(
    client: TestClient, auth: dict[str, str], job_id: int, action: str, **body: Any
) -> Response:
    return client.post(f"/api/worker/jobs/{job_id}/{action}", json=body, headers=auth)


def _row(db: Database, job_id: int) -> tuple[Any, ...]:
    with db.session() as session:
        return tuple(session.execute(select(Job.__table__).where(Job.id == job_id)).one())


def _status(db: Database, job_id: int) -> str | None:
    with db.session() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def _error(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_FIELDS
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def test_a_worker_claims_starts_reports_and_completes(
    client: TestClient, db: Database, settings: Settings
) -> None:
    owner = make_user(db)
    job_id = make_job(db, owner, steps=2).id
    auth = _worker_key(db)
    claimed = _claim(client, auth, kinds=["selftest"])
    assert claimed.status_code == 200, claimed.text
    body = claimed.json()
    token = body.pop("lease_token")
    assert len(token) == 32
    assert body == {
        "id": job_id,
        "kind": "selftest",
        "payload": {"steps": 2, "seconds_per_step": 0},
        "attempt": 1,
        "lease_seconds": settings.job_lease_seconds,
    }
    started = _call(client, auth, job_id, "start", lease_token=token).json()
    assert (started["id"], started["status"], started["attempt"]) == (job_id, "running", 1)
    for step in (1, 2):
        posted = _call(client, auth, job_id, "events", lease_token=token, data={"step": step})
        assert posted.status_code == 201
        assert posted.json() == {"seq": step, "attempt": 1}
    beat = _call(client, auth, job_id, "heartbeat", lease_token=token)
    assert beat.status_code == 200
    assert beat.json()["lease_expires_at"] is not None
    done = _call(client, auth, job_id, "complete", lease_token=token, result={"loss": 0.1})
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["lease_expires_at"]) == ("succeeded", None)
    with db.session() as session:
        job = queue.get_own(session, owner, job_id)
        events = queue.events_after(session, owner, job_id)
    assert (job.status, job.result, job.worker_id) == ("succeeded", {"loss": 0.1}, "gpu-1")
    assert [e.data for e in events] == [{"step": 1}, {"step": 2}]
    idle = _claim(client, auth)
    assert idle.status_code == 204
    assert idle.content == b""


def test_a_stale_completion_is_refused_and_changes_nothing(
    client: TestClient, db: Database
) -> None:
    job_id = make_job(db, make_user(db)).id
    auth = _worker_key(db)
    old = _claim(client, auth).json()["lease_token"]
    assert _call(client, auth, job_id, "start", lease_token=old).status_code == 200
    with db.session() as session:  # the worker went silent; its lease ran out
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    again = _claim(client, auth, worker_id="gpu-2").json()  # takes the lease back, re-leases
    assert (again["id"], again["attempt"]) == (job_id, 2)
    assert again["lease_token"] != old
    before = _row(db, job_id)
    stale = _call(client, auth, job_id, "complete", lease_token=old, result={"stale": True})
    error = _error(stale, 409, "stale_attempt")
    assert error["type"] == "conflict_error"
    assert _row(db, job_id) == before
    new = again["lease_token"]
    assert _call(client, auth, job_id, "start", lease_token=new).status_code == 200
    done = _call(client, auth, job_id, "complete", lease_token=new, result={"fresh": True})
    assert done.json()["status"] == "succeeded"


def test_a_retryable_failure_goes_back_to_the_queue(client: TestClient, db: Database) -> None:
    job_id = make_job(db, make_user(db)).id
    auth = _worker_key(db)
    token = _claim(client, auth).json()["lease_token"]
    failed = _call(client, auth, job_id, "fail", lease_token=token, error="OOM", retryable=True)
    assert (failed.json()["status"], failed.json()["attempt"]) == ("queued", 1)
    assert _claim(client, auth).json()["attempt"] == 2


def test_a_cancelled_job_tells_its_worker_to_stop(client: TestClient, db: Database) -> None:
    owner = make_user(db)
    job_id = make_job(db, owner).id
    auth = _worker_key(db)
    token = _claim(client, auth).json()["lease_token"]
    with db.session() as session:
        queue.cancel(session, owner, job_id)
    _error(_call(client, auth, job_id, "heartbeat", lease_token=token), 409, "illegal_transition")
    _error(_call(client, auth, job_id, "events", lease_token=token, data={}), 409)


def test_only_admins_may_create_worker_keys(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    refused = client.post("/api/keys", json={"name": "w", "scopes": ["worker"]})
    _error(refused, 403, "admin_only_scope")
    client.cookies.clear()
    sign_in(client, make_user(db, role="admin"))
    assert client.post("/api/keys", json={"name": "w", "scopes": ["worker"]}).status_code == 201


# (name, scopes of the key or None for no key, expected code)
KEYS = [
    ("no key", None, "not_signed_in"),
    ("manage key", ["manage"], "insufficient_scope"),
    ("inference key", ["inference:*"], "insufficient_scope"),
]


@pytest.mark.parametrize(("name", "scopes", "code"), KEYS, ids=[case[0] for case in KEYS])
def test_keys_without_the_worker_scope_are_refused(
    client: TestClient, db: Database, name: str, scopes: list[str] | None, code: str
) -> None:
    job_id = make_job(db, make_user(db)).id
    admin = make_user(db, role="admin")
    auth = {"Authorization": f"Bearer {make_key(db, admin, scopes=scopes)}"} if scopes else {}
    _error(_claim(client, auth), 401, code)
    _error(_call(client, auth, job_id, "start", lease_token="a" * 32), 401, code)
    assert _status(db, job_id) == "queued", name


def test_a_signed_in_browser_is_not_a_worker(client: TestClient, db: Database) -> None:
    job_id = make_job(db, make_user(db)).id
    sign_in(client, make_user(db, role="admin"))  # cookie and CSRF header, no bearer key
    _error(_claim(client, {}), 401, "not_signed_in")
    assert _status(db, job_id) == "queued"


def test_a_demoted_admins_worker_key_stops_working(client: TestClient, db: Database) -> None:
    auth = _worker_key(db)
    with db.session() as session:
        session.execute(update(User).where(User.role == "admin").values(role="member"))
    _error(_claim(client, auth), 403, "admin_only_scope")


# (name, action or "claim", request keyword arguments with {token} in place of the token)
BAD_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("malformed JSON", "claim", {"content": b'{"worker_id": "gpu-1",'}),
    ("unknown field", "claim", {"json": {"worker_id": "gpu-1", "gpus": 8}}),
    ("no worker id", "claim", {"json": {}}),
    ("worker id too long", "claim", {"json": {"worker_id": "w" * 81}}),
    ("empty kinds", "claim", {"json": {"worker_id": "gpu-1", "kinds": []}}),
    (
        "unknown field with a token",
        "complete",
        {"json": {"lease_token": "{token}", "result": {}, "x": 1}},
    ),
    ("no token", "heartbeat", {"json": {}}),
    ("token not hex", "heartbeat", {"json": {"lease_token": "not-a-token"}}),
    ("result not an object", "complete", {"json": {"lease_token": "{token}", "result": [1]}}),
    (
        "event too large",
        "events",
        {"json": {"lease_token": "{token}", "data": {"x": "y" * 20_000}}},
    ),
    ("error too long", "fail", {"json": {"lease_token": "{token}", "error": "e" * 10_001}}),
    (
        "retryable not a bool",
        "fail",
        {"json": {"lease_token": "{token}", "error": "x", "retryable": "maybe"}},
    ),
]


def _with_token(value: Any, token: str) -> Any:
    if isinstance(value, dict):
        return {k: _with_token(v, token) for k, v in value.items()}
    return token if value == "{token}" else value


def test_bad_bodies_are_400_in_the_common_shape(client: TestClient, db: Database) -> None:
    job_id = make_job(db, make_user(db)).id
    auth = {**_worker_key(db, rate_limit_per_minute=1000), "content-type": "application/json"}
    token = _claim(client, auth).json()["lease_token"]
    before = _row(db, job_id)
    for name, action, kwargs in BAD_BODIES:
        path = "/api/worker/claim" if action == "claim" else f"/api/worker/jobs/{job_id}/{action}"
        response = client.post(path, headers=auth, **_with_token(kwargs, token))
        error = _error(response, 400)
        assert error["type"] == "invalid_request_error", name
        assert error["message"], name
    assert _row(db, job_id) == before  # still leased to the same attempt
