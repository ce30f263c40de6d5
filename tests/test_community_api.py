"""The community routes over HTTP: a whole round trip with API keys, refusals as 4xx a
person can act on, and isolation (private adapters, someone else's review, contribution or
points: 404; nobody signed in: 401)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from loraloop.contributions import review
from loraloop.db.engine import Database
from loraloop.db.tables import Contribution, PointsEntry, ReviewAssignment, User
from tests.factories import make_key
from tests.mlops_world import World, make_world, quick_user


def _as(client: TestClient, db: Database, user: User) -> TestClient:
    client.headers["Authorization"] = f"Bearer {make_key(db, user, scopes=['manage'])}"
    return client


def _example(question: str, answer: str = "It is 660 yen.") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def test_contribute_review_and_see_the_points(
    client: TestClient, db: Database, tmp_path: Path
) -> None:
    world = make_world(db, tmp_path, versions=1, visibility="public")
    author, *reviewers = [quick_user(db) for _ in range(4)]
    keys = {u.id: make_key(db, u, scopes=["manage"]) for u in (author, *reviewers)}

    def call(user: User, method: str, path: str, **kw: Any) -> Any:
        return client.request(
            method, path, headers={"Authorization": f"Bearer {keys[user.id]}"}, **kw
        )

    for r in reviewers:
        joined = call(r, "PUT", f"/api/adapters/{world.adapter_id}/reviewer", json={})
        assert joined.status_code == 200, joined.text
        assert joined.json()["reviewer"] is True
    offered = call(
        author,
        "POST",
        f"/api/adapters/{world.adapter_id}/contributions",
        json={
            "kind": "example",
            "item": _example("How much is a Sakura Latte?"),
            "source": "the menu board",
        },
    )
    assert offered.status_code == 201, offered.text
    item = offered.json()
    assert item["status"] == "pending"
    assert item["provenance"] == {"via": "api", "source": "the menu board"}
    again = call(
        author,
        "POST",
        f"/api/adapters/{world.adapter_id}/contributions",
        json={"kind": "example", "item": _example("How much is a Sakura Latte?")},
    )
    assert again.status_code == 409
    assert f"#{item['id']}" in again.json()["error"]["message"]

    tasks = {}
    for r in reviewers:
        queue = call(r, "GET", "/api/reviews").json()
        assert len(queue) == 1
        assert "author" not in str(queue[0])
        assert str(author.id) not in queue[0]["item"].values()
        assert queue[0]["item"]["source"] == "the menu board"
        tasks[r.id] = queue[0]["assignment_id"]
    first = reviewers[0]
    sealed = call(first, "GET", f"/api/contributions/{item['id']}/verdicts")
    assert sealed.status_code == 403
    assert "sealed" in sealed.json()["error"]["message"]
    salt = "a-long-random-salt"
    for r in reviewers:
        digest = review.commitment_of(tasks[r.id], "accept", salt)
        done = call(r, "POST", f"/api/reviews/{tasks[r.id]}/commit", json={"commitment": digest})
        assert done.json() == {"state": "committed"}
    wrong = call(
        first,
        "POST",
        f"/api/reviews/{tasks[first.id]}/reveal",
        json={"verdict": "reject", "salt": salt},
    )
    assert wrong.status_code == 400
    assert "do not hash" in wrong.json()["error"]["message"]
    for r in reviewers:
        shown = call(
            r,
            "POST",
            f"/api/reviews/{tasks[r.id]}/reveal",
            json={"verdict": "accept", "salt": salt},
        )
        assert shown.json() == {"state": "revealed"}, shown.text
    decided = call(author, "GET", f"/api/contributions/{item['id']}").json()
    assert decided["status"] == "accepted"
    assert decided["decided_via"] == "consensus"
    verdicts = call(first, "GET", f"/api/contributions/{item['id']}/verdicts").json()
    assert [v["verdict"] for v in verdicts] == ["accept"] * 3
    mine = call(author, "GET", "/api/me/points").json()
    assert mine["points"] > 0
    (entry,) = mine["entries"]
    assert entry["source"]["id"] == item["id"]
    assert {"base", "quality", "novelty", "drift_bonus", "formula"} <= set(entry["breakdown"])
    assert mine["points"] == pytest.approx(entry["breakdown"]["points"], abs=1e-3)
    board = call(reviewers[0], "GET", f"/api/adapters/{world.adapter_id}/leaderboard").json()
    assert board[0]["display_name"] == author.display_name
    assert board[0]["accepted"] == 1
    assert len(board) == 4
    standing = call(first, "GET", "/api/me/reputation").json()
    assert standing["on_probation"] is True
    assert standing["reputation"] > 0.5


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            {"kind": "example", "item": {"messages": [{"role": "user", "content": "hi"}]}},
            400,
            "no assistant turn",
        ),
        (
            {"kind": "eval_case", "item": {"prompt": "Price?", "expected": "1", "metric": "vibes"}},
            400,
            "metric",
        ),
        ({"kind": "correction", "item": {}}, 400, "kind"),
        ({"kind": "example"}, 400, "item"),
        ({"kind": "example", "item": _example("x?"), "source": "s" * 501}, 400, "source"),
    ],
)
def test_bad_items_say_what_to_fix(
    client: TestClient,
    db: Database,
    tmp_path: Path,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    world = make_world(db, tmp_path, versions=1, visibility="public")
    response = _as(client, db, quick_user(db)).post(
        f"/api/adapters/{world.adapter_id}/contributions", json=body
    )
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Contribution)) == 0


def test_the_rate_limit_answers_429_with_retry_after(
    app: FastAPI, db: Database, tmp_path: Path
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"contributions_per_hour": 1})
    world = make_world(db, tmp_path, versions=1, visibility="public")
    with TestClient(app) as client:
        _as(client, db, quick_user(db))
        path = f"/api/adapters/{world.adapter_id}/contributions"
        assert (
            client.post(path, json={"kind": "example", "item": _example("A?")}).status_code == 201
        )
        limited = client.post(path, json={"kind": "example", "item": _example("Is it B?")})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 3000
    assert "limit is 1" in limited.json()["error"]["message"]


def _private_world(db: Database, tmp_path: Path) -> tuple[World, dict[str, int]]:
    """A private adapter with one pending item, one review assignment and one ledger entry,
    none of which a stranger may reach."""
    from loraloop.config import Settings
    from loraloop.contributions import items

    world = make_world(db, tmp_path, versions=1)
    guest, reviewer = quick_user(db), quick_user(db)
    settings = Settings(home=tmp_path / "home", database_url="sqlite://", secret_key="x" * 20)
    from loraloop.storage import Storage

    storage = Storage(tmp_path / "home" / "artifacts")
    with db.session() as session:
        items.invite(session, world.owner, world.adapter_id, guest.email)
        items.invite(session, world.owner, world.adapter_id, reviewer.email)
        items.enrol(session, reviewer, world.adapter_id, reviewer=True)
        row = items.submit(
            session,
            settings,
            storage,
            guest,
            world.adapter_id,
            kind="example",
            item=_example("Secret menu price?"),
        )
        assignment = session.scalar(
            select(ReviewAssignment.id).where(ReviewAssignment.contribution_id == row.id)
        )
        entry = PointsEntry(
            user_id=guest.id,
            adapter_id=world.adapter_id,
            millipoints=1000,
            kind="contribution",
            source_type="contribution",
            source_id=row.id,
            idempotency_key="test:1",
            breakdown={},
        )
        session.add(entry)
        session.flush()
        assert assignment is not None
        return world, {"adapter": world.adapter_id, "item": row.id, "review": assignment}


#: every community operation that names something, with a body valid enough that only
#: access decides
NAMED: list[tuple[str, str, dict[str, Any] | None]] = [
    (
        "POST",
        "/api/adapters/{adapter}/contributions",
        {"kind": "example", "item": _example("Mine now?")},
    ),
    ("GET", "/api/adapters/{adapter}/contributions", None),
    ("POST", "/api/adapters/{adapter}/gold", {"item": _example("Gold?"), "verdict": "accept"}),
    ("POST", "/api/adapters/{adapter}/invites", {"email": "someone@example.com"}),
    ("PUT", "/api/adapters/{adapter}/reviewer", {"reviewer": True}),
    ("GET", "/api/adapters/{adapter}/leaderboard", None),
    ("GET", "/api/contributions/{item}", None),
    ("POST", "/api/contributions/{item}/decision", {"accept": True}),
    ("GET", "/api/contributions/{item}/verdicts", None),
    ("POST", "/api/reviews/{review}/commit", {"commitment": "a" * 64}),
    ("POST", "/api/reviews/{review}/reveal", {"verdict": "accept", "salt": "saltsalt"}),
]
MINE = ["/api/contributions", "/api/reviews", "/api/me/points", "/api/me/reputation"]


def test_the_tables_list_every_community_route(app: FastAPI) -> None:
    routes = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if "community" in operation.get("tags", [])
    }
    named = {
        (
            m,
            p.replace("{adapter}", "{adapter_id}")
            .replace("{item}", "{contribution_id}")
            .replace("{review}", "{assignment_id}"),
        )
        for m, p, _ in NAMED
    }
    assert routes == named | {("GET", p) for p in MINE}


def test_a_stranger_reaches_nothing_and_changes_nothing(
    client: TestClient, db: Database, tmp_path: Path
) -> None:
    _world, ids = _private_world(db, tmp_path)
    stranger = quick_user(db)
    _as(client, db, stranger)
    with db.session() as session:
        before = (
            session.scalar(select(func.count()).select_from(Contribution)),
            session.scalar(select(func.count()).select_from(PointsEntry)),
        )
    for method, path, body in NAMED:
        response = client.request(method, path.format(**ids), json=body)
        assert response.status_code == 404, f"{method} {path}: {response.status_code}"
        assert response.json()["error"]["type"] == "not_found_error"
    assert client.get("/api/contributions").json() == []
    assert client.get("/api/reviews").json() == []
    assert client.get("/api/me/points").json() == {"points": 0.0, "entries": []}
    assert client.get("/api/me/reputation").json()["scored_reviews"] == 0
    with db.session() as session:
        after = (
            session.scalar(select(func.count()).select_from(Contribution)),
            session.scalar(select(func.count()).select_from(PointsEntry)),
        )
    assert after == before


def test_nobody_signed_in_gets_401(client: TestClient, db: Database, tmp_path: Path) -> None:
    _, ids = _private_world(db, tmp_path)
    for method, path, body in [*NAMED, *(("GET", p, None) for p in MINE)]:
        response = client.request(method, path.format(**ids), json=body)
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
