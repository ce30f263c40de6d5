"""The maintenance routes over HTTP: everything is the adapter owner's (anyone else, even on a
public adapter, gets 404 and changes nothing; nobody signed in gets 401), bad input is a 4xx
whose message says what to fix, and the owner's round trips work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from loraloop.catalog import aliases
from loraloop.db.engine import Database
from loraloop.db.tables import (
    DriftReport,
    EvalCase,
    EvalRun,
    EvalSuite,
    GateDecision,
    Job,
    RetrainPolicy,
    RetrainRun,
    TrainingCandidate,
)
from tests.factories import make_key
from tests.mlops_world import (
    World,
    make_alias_deployment,
    make_job,
    make_suite,
    make_world,
    quick_user,
)


@dataclass
class Ids:
    adapter: int
    run: int
    suite: int
    evaluation: int
    decision: int
    candidate: int


def _populate(db: Database, world: World) -> Ids:
    """One of everything the maintenance routes show, on the world's adapter."""
    suite, cases = make_suite(db, world.adapter_id, cases=2)
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    job = make_job(db, world.owner, "evaluate", {"adapter_id": world.adapter_id})
    with db.session() as session:
        run = RetrainRun(adapter_id=world.adapter_id, trigger="drift", detail={}, status="proposed")
        evaluation = EvalRun(
            adapter_id=world.adapter_id,
            version_id=world.version_id(2),
            suite_id=suite,
            job_id=job.id,
            metric="contains",
            score=1.0,
            summary={"cases": 2},
            cases=[{"id": c, "answer": "yen", "score": 1.0} for c in cases],
        )
        decision = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=world.version_id(2),
            outcome="refuse",
            reason="the gain is below the margin",
            numbers={},
        )
        candidate = TrainingCandidate(
            adapter_id=world.adapter_id,
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            status="pending",
            role="train",
        )
        report = DriftReport(
            deployment_id=deployment,
            adapter_id=world.adapter_id,
            version_id=world.version_id(1),
            requests=100,
            input={"alarm": False},
            quality={},
        )
        session.add_all([run, evaluation, decision, candidate, report])
        session.flush()
        return Ids(world.adapter_id, run.id, suite, evaluation.id, decision.id, candidate.id)


#: every maintenance operation, with a body valid enough that only ownership decides
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/adapters/{adapter}/policy", None),
    ("PUT", "/api/adapters/{adapter}/policy", {"mode": "off"}),
    ("POST", "/api/adapters/{adapter}/retrain", None),
    ("POST", "/api/adapters/{adapter}/challenge", {"version": 2}),
    ("GET", "/api/adapters/{adapter}/retrain-runs", None),
    ("POST", "/api/retrain-runs/{run}/approve", None),
    ("POST", "/api/retrain-runs/{run}/dismiss", None),
    ("GET", "/api/adapters/{adapter}/suites", None),
    ("POST", "/api/adapters/{adapter}/suites", {"name": "mine now"}),
    ("POST", "/api/suites/{suite}/cases", {"cases": [{"prompt": "x", "expected": "y"}]}),
    ("POST", "/api/adapters/{adapter}/evaluations", {"versions": [1, 2]}),
    ("GET", "/api/adapters/{adapter}/evaluations", None),
    ("GET", "/api/adapters/{adapter}/evaluations/{evaluation}", None),
    ("GET", "/api/adapters/{adapter}/decisions", None),
    ("POST", "/api/decisions/{decision}/override", {"promote": True, "reason": "mine now"}),
    ("POST", "/api/adapters/{adapter}/rollback", {"version": 2}),
    ("GET", "/api/adapters/{adapter}/candidates", None),
    ("POST", "/api/candidates/{candidate}/accept", {}),
    ("POST", "/api/candidates/{candidate}/reject", {"reason": "not mine"}),
    ("GET", "/api/adapters/{adapter}/drift", None),
    ("GET", "/api/adapters/{adapter}/quality", None),
]

_PARAMS = {
    "adapter_id": "{adapter}",
    "run_id": "{run}",
    "suite_id": "{suite}",
    "decision_id": "{decision}",
    "candidate_id": "{candidate}",
}


def test_the_table_lists_every_maintenance_route(app: FastAPI) -> None:
    routes = set()
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if "maintenance" not in operation.get("tags", []):
                continue
            shown = path.replace("/evaluations/{run_id}", "/evaluations/{evaluation}")
            for name, placeholder in _PARAMS.items():
                shown = shown.replace("{" + name + "}", placeholder)
            routes.add((method.upper(), shown))
    assert routes == {(m, p) for m, p, _ in ENDPOINTS}


def _url(path: str, ids: Ids) -> str:
    return path.format(**vars(ids))


def _state(db: Database, world: World, ids: Ids) -> dict[str, Any]:
    """What an intruder might try to change."""
    with db.session() as session:
        run = session.get(RetrainRun, ids.run)
        candidate = session.get(TrainingCandidate, ids.candidate)
        assert run is not None
        assert candidate is not None
        return {
            "policy": session.get(RetrainPolicy, world.adapter_id) is not None,
            "runs": [(r.id, r.status) for r in session.scalars(select(RetrainRun))],
            "candidate": candidate.status,
            "decisions": session.scalar(select(func.count()).select_from(GateDecision)),
            "aliases": aliases.aliases_of(session, world.adapter_id),
            "suites": session.scalar(select(func.count()).select_from(EvalSuite)),
            "cases": session.scalar(select(func.count()).select_from(EvalCase)),
            "jobs": session.scalar(select(func.count()).select_from(Job)),
        }


@pytest.mark.parametrize("visibility", ["private", "public"])
def test_another_user_gets_404_everywhere_and_changes_nothing(
    client: TestClient, db: Database, tmp_path: Path, visibility: str
) -> None:
    world = make_world(db, tmp_path, versions=2, visibility=visibility)
    ids = _populate(db, world)
    before = _state(db, world, ids)
    intruder = quick_user(db)
    client.headers["Authorization"] = f"Bearer {make_key(db, intruder, scopes=['manage'])}"
    for method, path, body in ENDPOINTS:
        theirs = client.request(method, _url(path, ids), json=body)
        assert theirs.status_code == 404, f"{method} {path}: {theirs.status_code} {theirs.text}"
        error = theirs.json()["error"]
        assert error["type"] == "not_found_error"
        assert str(ids.adapter) in error["message"] or "not found" in error["message"]
    assert _state(db, world, ids) == before


def test_the_owner_reaches_every_endpoint(client: TestClient, db: Database, tmp_path: Path) -> None:
    """The same table succeeds for the owner (so the 404s above are about ownership)."""
    world = make_world(db, tmp_path, versions=2)
    ids = _populate(db, world)
    client.headers["Authorization"] = f"Bearer {make_key(db, world.owner, scopes=['manage'])}"
    answers = {}
    for method, path, body in ENDPOINTS:
        if path.endswith(
            ("/retrain", "/challenge", "/approve", "/override", "/rollback", "/reject")
        ):
            continue  # these change the adapter's state; the round trips below cover them
        response = client.request(method, _url(path, ids), json=body)
        answers[(method, path)] = response.status_code
    assert set(answers.values()) <= {200, 201}, answers


def test_nobody_signed_in_gets_401(client: TestClient, db: Database, tmp_path: Path) -> None:
    world = make_world(db, tmp_path, versions=2)
    ids = _populate(db, world)
    for method, path, body in ENDPOINTS:
        response = client.request(method, _url(path, ids), json=body)
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response.json()["error"]["type"] == "authentication_error"


# --- bad input --------------------------------------------------------------------------


@pytest.fixture
def owner_client(client: TestClient, db: Database, tmp_path: Path) -> tuple[TestClient, World]:
    world = make_world(db, tmp_path, versions=2)
    client.headers["Authorization"] = f"Bearer {make_key(db, world.owner, scopes=['manage'])}"
    return client, world


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"canary_share": 1.5}, "canary_share", "field 'canary_share' = 1.5"),
        ({"margin": -0.1}, "margin", "field 'margin' = -0.1"),
        ({"mode": "sometimes"}, "mode", "field 'mode' = 'sometimes'"),
        ({"colour": "blue"}, "colour", "unknown field 'colour'"),
        ({"min_new_examples": 0}, "min_new_examples", "field 'min_new_examples' = 0"),
        # an explicit null where null means nothing is a problem to report, not a crash
        ({"margin": None}, None, "margin None must be a number"),
        ({"on_drift": None}, None, "on_drift None must be true or false"),
        ({"mode": None}, None, "mode None must be one of auto, propose, off"),
    ],
)
def test_a_bad_policy_names_the_field(
    owner_client: tuple[TestClient, World], body: dict[str, Any], param: str | None, says: str
) -> None:
    client, world = owner_client
    refused = client.put(f"/api/adapters/{world.adapter_id}/policy", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert says in error["message"]
    if param:
        assert error["param"] == param
    assert client.get(f"/api/adapters/{world.adapter_id}/policy").json()["mode"] == "propose"


def test_every_problem_of_a_policy_is_reported_together(
    owner_client: tuple[TestClient, World],
) -> None:
    client, world = owner_client
    body = {"canary_share": 1.5, "margin": 2, "mode": "sometimes"}
    message = client.put(f"/api/adapters/{world.adapter_id}/policy", json=body).json()["error"][
        "message"
    ]
    assert all(f"field '{name}'" in message for name in body)


def test_bad_cases_are_named_by_number(owner_client: tuple[TestClient, World]) -> None:
    client, world = owner_client
    suite = client.post(f"/api/adapters/{world.adapter_id}/suites", json={"name": "hours"})
    assert suite.status_code == 201, suite.text
    cases = [
        {"prompt": "When do you open?", "expected": r"\d+ ?am", "metric": "regex"},
        {"prompt": "When do you close?", "expected": "([0-9]+", "metric": "regex"},
    ]
    refused = client.post(f"/api/suites/{suite.json()['id']}/cases", json={"cases": cases})
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith("case 2: expected: the pattern '([0-9]+' does not compile")
    listed = client.get(f"/api/adapters/{world.adapter_id}/suites").json()
    assert [(s["name"], s["cases"]) for s in listed] == [("hours", 0)]  # nothing added


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("suites", {"name": "x", "metric": "bleu"}, 400, "field 'metric' = 'bleu'"),
        ("suites", {"name": ""}, 400, "field 'name'"),
        ("evaluations", {"versions": []}, 400, "field 'versions'"),
        ("evaluations", {"versions": [7]}, 404, "has no version 7"),
        ("challenge", {"version": 0}, 400, "field 'version' = 0"),
        ("challenge", {"version": 1}, 409, "version 1 is the champion already"),
        ("challenge", {"version": 2}, 400, "no evaluation cases"),
        ("rollback", {}, 409, "only one champion; name a version to roll back to"),
        ("rollback", {"version": 1}, 409, "version 1 is already the champion"),
    ],
)
def test_bad_requests_say_what_to_do(
    owner_client: tuple[TestClient, World],
    path: str,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    client, world = owner_client
    refused = client.post(f"/api/adapters/{world.adapter_id}/{path}", json=body)
    assert refused.status_code == status, refused.text
    assert says in refused.json()["error"]["message"]


def test_overrides_and_rejections_need_a_reason(
    owner_client: tuple[TestClient, World], db: Database
) -> None:
    client, world = owner_client
    ids = _populate(db, world)
    for reason, says in (("", "field 'reason'"), ("   ", "say why you override")):
        refused = client.post(
            f"/api/decisions/{ids.decision}/override", json={"promote": True, "reason": reason}
        )
        assert refused.status_code == 400
        assert says in refused.json()["error"]["message"]
    refused = client.post(f"/api/candidates/{ids.candidate}/reject", json={})
    assert refused.status_code == 400
    assert "say why the candidate is rejected" in refused.json()["error"]["message"]
    assert client.get(f"/api/adapters/{world.adapter_id}/quality").json()["aliases"] == {
        "champion": 1
    }


# --- the owner's round trips ------------------------------------------------------------


def test_policy_round_trip(owner_client: tuple[TestClient, World]) -> None:
    client, world = owner_client
    url = f"/api/adapters/{world.adapter_id}/policy"
    assert client.get(url).json()["mode"] == "propose"
    changed = client.put(url, json={"mode": "auto", "canary_share": 0.2, "every_hours": None})
    assert changed.status_code == 200, changed.text
    shown = client.get(url).json()
    assert (shown["mode"], shown["canary_share"], shown["every_hours"]) == ("auto", 0.2, None)
    assert shown["margin"] == 0.02  # untouched


def test_runs_retrain_dismiss_and_conflicts(owner_client: tuple[TestClient, World]) -> None:
    client, world = owner_client
    started = client.post(f"/api/adapters/{world.adapter_id}/retrain")
    assert started.status_code == 201, started.text
    run = started.json()
    assert (run["trigger"], run["status"]) == ("manual", "approved")
    again = client.post(f"/api/adapters/{world.adapter_id}/retrain")
    assert again.status_code == 409
    assert f"retrain run {run['id']} is still approved" in again.json()["error"]["message"]
    assert client.post(f"/api/retrain-runs/{run['id']}/approve").status_code == 409
    dismissed = client.post(f"/api/retrain-runs/{run['id']}/dismiss")
    assert dismissed.json()["status"] == "dismissed"
    listed = client.get(f"/api/adapters/{world.adapter_id}/retrain-runs").json()
    assert [(r["id"], r["status"]) for r in listed] == [(run["id"], "dismissed")]


def test_override_and_rollback_over_http(
    owner_client: tuple[TestClient, World], db: Database
) -> None:
    client, world = owner_client
    ids = _populate(db, world)
    override = client.post(
        f"/api/decisions/{ids.decision}/override",
        json={"promote": True, "reason": "I read the answers"},
    )
    assert override.status_code == 201, override.text
    assert (override.json()["actor_id"], override.json()["override_of"]) == (
        world.owner.id,
        ids.decision,
    )
    decisions = client.get(f"/api/adapters/{world.adapter_id}/decisions").json()
    assert [d["outcome"] for d in decisions] == ["promote", "refuse"]
    back = client.post(f"/api/adapters/{world.adapter_id}/rollback", json={})
    assert back.json() == {"champion": 1}
    history = client.get(f"/api/adapters/{world.adapter_id}/quality").json()["history"]
    assert [(h["cause"], h["from"], h["to"]) for h in history[:2]] == [
        ("rollback", 2, 1),
        ("override", 1, 2),
    ]


def test_candidates_and_evaluations_over_http(
    owner_client: tuple[TestClient, World], db: Database
) -> None:
    client, world = owner_client
    ids = _populate(db, world)
    pending = client.get(f"/api/adapters/{world.adapter_id}/candidates?status=pending").json()
    assert [c["id"] for c in pending] == [ids.candidate]
    accepted = client.post(f"/api/candidates/{ids.candidate}/accept", json={"reason": "good"})
    assert accepted.json()["status"] == "accepted"
    again = client.post(f"/api/candidates/{ids.candidate}/reject", json={"reason": "changed"})
    assert again.status_code == 409
    assert client.get(f"/api/adapters/{world.adapter_id}/candidates?status=pending").json() == []
    runs = client.get(f"/api/adapters/{world.adapter_id}/evaluations").json()
    assert [r["id"] for r in runs] == [ids.evaluation]
    one = client.get(f"/api/adapters/{world.adapter_id}/evaluations/{ids.evaluation}").json()
    assert [c["answer"] for c in one["cases"]] == ["yen", "yen"]
    missing = client.get(f"/api/adapters/{world.adapter_id}/evaluations/999999")
    assert missing.status_code == 404
    drift = client.get(f"/api/adapters/{world.adapter_id}/drift").json()
    assert [d["requests"] for d in drift] == [100]
