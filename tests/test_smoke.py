from fastapi.testclient import TestClient

from loraloop.db.engine import Database
from tests.factories import make_user, sign_in


def test_health_and_sign_in(client: TestClient, db: Database) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    user = make_user(db)
    sign_in(client, user)
    assert client.get("/api/me").json()["email"] == user.email
