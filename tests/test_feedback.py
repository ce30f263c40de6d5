"""Feedback on answers: from the playground (session), from programs (``/v1/feedback`` with a
key of the answer's owner), never on someone else's answer, and always validated."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from loraloop.db.engine import Database
from tests.factories import make_key, make_trace, make_user, sign_in


def test_the_owner_rates_and_corrects_in_the_playground(client: TestClient, db: Database) -> None:
    user = make_user(db)
    trace = make_trace(db, user)
    sign_in(client, user)
    given = client.post(
        "/api/feedback",
        json={"trace_id": trace.id, "rating": -1, "correction": "480円（税込）です。"},
    )
    assert given.status_code == 201, given.text
    assert given.json()["correction"] == "480円（税込）です。"
    listed = client.get("/api/feedback").json()
    assert [f["trace_id"] for f in listed] == [trace.id]


def test_a_program_gives_feedback_with_its_key(client: TestClient, db: Database) -> None:
    user = make_user(db)
    trace = make_trace(db, user)
    headers = {"Authorization": f"Bearer {make_key(db, user)}"}
    given = client.post(
        "/v1/feedback", json={"trace_id": trace.id, "rating": 5, "scale": "stars"}, headers=headers
    )
    assert given.status_code == 201, given.text
    assert given.json()["rating"] == 5


def test_nobody_else_can_rate_my_answers(client: TestClient, db: Database) -> None:
    trace = make_trace(db, make_user(db))
    stranger = make_user(db)
    headers = {"Authorization": f"Bearer {make_key(db, stranger)}"}
    body = {"trace_id": trace.id, "rating": 1}
    assert client.post("/v1/feedback", json=body, headers=headers).status_code == 404
    sign_in(client, stranger)
    refused = client.post("/api/feedback", json=body)
    assert refused.status_code == 404
    assert client.get("/api/feedback").json() == []


BAD = [
    ({"rating": 3}, "must be -1 or 1"),
    ({"rating": 0, "scale": "stars"}, "must be 1 to 5"),
    ({}, "give a rating, a correction"),
    ({"correction": "   "}, "correction is empty"),
    ({"rating": 1, "tags": ["Bad Tag"]}, "tags"),
    ({"rating": 1, "comment": "nul\x00byte"}, "NUL character"),
]


@pytest.mark.parametrize(("body", "says"), BAD)
def test_bad_feedback_says_what_is_wrong(
    client: TestClient, db: Database, body: dict[str, Any], says: str
) -> None:
    user = make_user(db)
    trace = make_trace(db, user)
    sign_in(client, user)
    refused = client.post("/api/feedback", json={"trace_id": trace.id, **body})
    assert refused.status_code == 400
    assert says in refused.json()["error"]["message"]
