"""API keys: shown once, stored hashed, scoped, rate-limited, revocable, expiring."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import ApiKey
from loraloop.identity import api_keys
from tests.factories import make_key, make_user, sign_in


def test_secret_is_shown_once_and_stored_as_hash(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    created = client.post(
        "/api/keys", json={"name": "prod", "scopes": ["inference:support-bot"]}
    ).json()
    secret = created["secret"]
    assert secret.startswith(created["prefix"] + "_")
    assert len(secret.split("_", 2)[2]) >= 43  # 32 random bytes, url-safe base64: 256 bits
    listed = client.get("/api/keys").json()
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert all("secret" not in k for k in listed)
    assert "secret" not in client.get(f"/api/keys/{created['id']}").json()
    with db.session() as session:
        row = session.scalars(select(ApiKey)).one()
    assert secret not in (row.secret_hash, row.public_id, row.name)


def test_issued_key_repr_hides_the_secret(db: Database) -> None:
    with db.session() as session:
        issued = api_keys.create(session, make_user(db), name="x")
    assert issued.secret not in repr(issued)
    assert "[secure]" in repr(issued)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_revoked_key_stops_working(client: TestClient, db: Database) -> None:
    user = make_user(db)
    secret = make_key(db, user, scopes=["manage"])
    assert client.get("/api/me", headers=_bearer(secret)).status_code == 200
    key_id = client.get("/api/keys", headers=_bearer(secret)).json()[0]["id"]
    revoked = client.delete(f"/api/keys/{key_id}", headers=_bearer(secret)).json()
    assert revoked["revoked_at"] is not None
    assert client.get("/api/me", headers=_bearer(secret)).status_code == 401


def test_expired_key_stops_working(client: TestClient, db: Database) -> None:
    secret = make_key(db, make_user(db), scopes=["manage"], expires_in_days=1)
    with db.session() as session:
        session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = client.get("/api/me", headers=_bearer(secret))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "secret",
    ["", "ll_", "ll_abc", "ll_abc_def", "sk-something", "ll_" + "a" * 500],
    ids=["empty", "prefix", "no-secret", "unknown", "foreign", "long"],
)
def test_malformed_keys_are_refused(client: TestClient, db: Database, secret: str) -> None:
    make_key(db, make_user(db), scopes=["manage"])
    response = client.get("/api/me", headers=_bearer(secret))
    assert response.status_code == 401


def test_tampered_secret_with_valid_prefix_is_refused(client: TestClient, db: Database) -> None:
    secret = make_key(db, make_user(db), scopes=["manage"])
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert client.get("/api/me", headers=_bearer(tampered)).status_code == 401


def test_rate_limit_per_key(client: TestClient, db: Database) -> None:
    user = make_user(db)
    limited = make_key(db, user, scopes=["manage"], rate_limit_per_minute=3)
    other = make_key(db, user, scopes=["manage"], rate_limit_per_minute=3)
    statuses = [client.get("/api/me", headers=_bearer(limited)).status_code for _ in range(4)]
    if statuses[-1] == 200:  # the minute turned over mid-test; the next burst must still stop
        statuses += [client.get("/api/me", headers=_bearer(limited)).status_code for _ in range(3)]
    assert 429 in statuses
    last = client.get("/api/me", headers=_bearer(limited))
    assert last.status_code == 429
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    assert client.get("/api/me", headers=_bearer(other)).status_code == 200  # limits are per key


BAD_CREATE = [
    ({"name": ""}, "name"),
    ({"name": "x", "scopes": ["admin"]}, "scopes"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "x", "secret": "mine"}, "secret"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATE)
def test_bad_key_requests_name_the_field(
    client: TestClient, db: Database, body: dict[str, object], field: str
) -> None:
    sign_in(client, make_user(db))
    response = client.post("/api/keys", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]["message"]
    assert client.get("/api/keys").json() == []


def test_members_cannot_mint_worker_keys(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    response = client.post("/api/keys", json={"name": "w", "scopes": ["worker"]})
    assert response.status_code == 403


def test_refused_requests_count_against_the_limit(client: TestClient, db: Database) -> None:
    secret = make_key(db, make_user(db), scopes=["manage"], rate_limit_per_minute=2)
    for _ in range(2):  # bad requests still spend the key's budget
        assert client.post("/api/keys", json={}, headers=_bearer(secret)).status_code == 400
    assert client.get("/api/me", headers=_bearer(secret)).status_code == 429
