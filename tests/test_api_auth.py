"""Sign-up, sign-in, sessions and CSRF over HTTP."""

from fastapi.testclient import TestClient
from sqlalchemy import select

from loraloop.db.engine import Database
from loraloop.db.tables import WebSession
from loraloop.identity import sessions
from tests.factories import PASSWORD, make_key, make_user, sign_in


def test_sign_up_signs_in_with_a_safe_cookie(client: TestClient) -> None:
    response = client.post(
        "/api/auth/signup", json={"email": "aiko@example.com", "password": PASSWORD, "locale": "en"}
    )
    assert response.status_code == 201
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert client.get("/api/me").json()["locale"] == "en"


def test_session_token_is_stored_hashed(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    token = client.cookies[sessions.COOKIE]
    with db.session() as session:
        rows = session.scalars(select(WebSession)).all()
    assert len(rows) == 1
    assert rows[0].token_hash != token
    assert token not in rows[0].token_hash


def test_sign_in_rotates_the_session(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    user = make_user(db)
    sign_in(client, user)
    old = client.cookies[sessions.COOKIE]
    sign_in(client, user)
    new = client.cookies[sessions.COOKIE]
    assert new != old
    other_client.cookies.set(sessions.COOKIE, old)
    assert other_client.get("/api/me").status_code == 401  # the replaced session is gone


def test_sign_out_ends_the_session(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    token = client.cookies[sessions.COOKIE]
    assert client.post("/api/auth/signout").status_code == 204
    client.cookies.set(sessions.COOKIE, token)
    assert client.get("/api/me").status_code == 401


def test_cookie_mutations_need_the_csrf_token(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    del client.headers["X-CSRF-Token"]
    refused = client.post("/api/keys", json={"name": "no csrf"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    client.headers["X-CSRF-Token"] = "forged"
    assert client.post("/api/keys", json={"name": "forged"}).status_code == 403
    assert client.get("/api/keys").json() == []  # reads need no token; nothing was created


def test_bearer_key_with_manage_scope_needs_no_csrf(client: TestClient, db: Database) -> None:
    secret = make_key(db, make_user(db), scopes=["manage"])
    response = client.post(
        "/api/keys", json={"name": "by key"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 201


def test_inference_key_cannot_manage(client: TestClient, db: Database) -> None:
    secret = make_key(db, make_user(db))  # default scope inference:*
    response = client.get("/api/keys", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_wrong_credentials_over_http(client: TestClient, db: Database) -> None:
    user = make_user(db)
    wrong = client.post("/api/auth/signin", json={"email": user.email, "password": "not it at all"})
    unknown = client.post("/api/auth/signin", json={"email": "x@example.com", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_throttled_sign_in_says_when_to_retry(client: TestClient, db: Database) -> None:
    user = make_user(db)
    for _ in range(5):
        client.post("/api/auth/signin", json={"email": user.email, "password": "not it at all"})
    response = client.post("/api/auth/signin", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Wait" in response.json()["error"]["message"]


def test_profile_update(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    response = client.patch("/api/me", json={"display_name": "三浦 花子", "locale": "en"})
    assert response.json()["display_name"] == "三浦 花子"
    bad = client.patch("/api/me", json={"locale": "fr"})
    assert bad.status_code == 400
    assert "locale" in bad.json()["error"]["message"]


def test_admin_routes_are_invisible_to_members(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    assert client.post("/api/admin/invites", json={}).status_code == 404


def test_admin_invite_creates_an_admin_in_closed_mode(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    sign_in(client, make_user(db, role="admin"))
    invite = client.post("/api/admin/invites", json={"role": "admin"}).json()
    assert invite["signup_url"].endswith(f"/signup?invite={invite['code']}")
    created = other_client.post(
        "/api/auth/signup",
        json={"email": "second-admin@example.com", "password": PASSWORD, "invite": invite["code"]},
    )
    assert created.status_code == 201
    assert created.json()["user"]["role"] == "admin"
