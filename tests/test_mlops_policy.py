"""The retraining policy (validation, defaults), triggers and the run's states (approve,
dismiss, retrain now, challenge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import AdapterAlias, RetrainPolicy, RetrainRun
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.mlops import policy
from tests.mlops_world import World, make_world, quick_user


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return make_world(db, tmp_path, versions=2)


def _set(db: Database, world: World, **changes: Any) -> RetrainPolicy:
    with db.session() as session:
        return policy.update(session, world.owner, world.adapter_id, **changes)


def test_the_defaults_until_the_owner_sets_a_policy(db: Database, world: World) -> None:
    with db.session() as session:
        row = policy.get(session, world.owner, world.adapter_id)
        assert (row.mode, row.margin, row.tolerance, row.canary_share) == (
            "propose",
            0.02,
            0.02,
            0.0,
        )
        assert row.trust_owner_corrections is True
        assert session.get(RetrainPolicy, world.adapter_id) is None  # not stored by reading


def test_an_update_changes_only_the_fields_given(db: Database, world: World) -> None:
    _set(db, world, mode="auto", margin=0.05)
    _set(db, world, tolerance=0.1, min_new_examples=None)
    with db.session() as session:
        row = session.get(RetrainPolicy, world.adapter_id)
        assert row is not None
        assert (row.mode, row.margin, row.tolerance) == ("auto", 0.05, 0.1)


def test_every_problem_of_an_update_is_reported_at_once(db: Database, world: World) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _set(db, world, mode="sometimes", margin=1.5, colour="blue", canary_share=1.0)
    message = raised.value.message
    assert raised.value.code == "invalid_policy"
    assert "colour is not a policy setting" in message
    assert "mode 'sometimes' must be one of auto, propose, off" in message
    assert "margin 1.5 must be between 0 and 1" in message
    assert "canary_share must be at least 0 and below 1" in message
    with db.session() as session:
        assert session.get(RetrainPolicy, world.adapter_id) is None  # nothing stored


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"tolerance": -0.1}, "tolerance -0.1 must be between 0 and 1"),
        ({"min_new_examples": 0}, "min_new_examples must be at least 1, or null"),
        ({"every_hours": -2}, "every_hours must be at least 1"),
        ({"canary_min_feedback": 0}, "canary_min_feedback must be at least 1"),
        # wrong kinds of values are problems to report, not crashes
        ({"margin": None}, "margin None must be a number"),
        ({"margin": "high"}, "margin 'high' must be a number"),
        ({"on_drift": None}, "on_drift None must be true or false"),
        ({"canary_min_feedback": 2.5}, "canary_min_feedback 2.5 must be a whole number"),
        ({"every_hours": True}, "every_hours True must be a whole number or null"),
    ],
)
def test_bad_values_name_the_field(
    db: Database, world: World, changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _set(db, world, **changes)
    assert says in raised.value.message


def test_a_whole_number_is_a_fine_margin(db: Database, world: World) -> None:
    assert _set(db, world, margin=0, tolerance=1).margin == 0


def test_the_policy_is_the_owners(db: Database, world: World) -> None:
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(NotFound):
            policy.get(session, stranger, world.adapter_id)
        with pytest.raises(NotFound):
            policy.update(session, stranger, world.adapter_id, mode="off")


# --- triggers ------------------------------------------------------------------------------


def _trigger(db: Database, world: World, kind: str = "drift") -> RetrainRun | None:
    with db.session() as session:
        return policy.trigger(session, world.adapter_id, kind, {"report_id": 1})


@pytest.mark.parametrize(("mode", "status"), [("propose", "proposed"), ("auto", "approved")])
def test_a_trigger_records_one_run(db: Database, world: World, mode: str, status: str) -> None:
    _set(db, world, mode=mode)
    first = _trigger(db, world)
    assert first is not None
    assert (first.status, first.trigger, first.detail) == (status, "drift", {"report_id": 1})
    assert _trigger(db, world, "quality") is None  # a run is open: a burst starts one run
    with db.session() as session:
        assert len(session.scalars(select(RetrainRun)).all()) == 1


def test_a_trigger_does_nothing_when_the_policy_is_off(db: Database, world: World) -> None:
    _set(db, world, mode="off")
    assert _trigger(db, world) is None


def test_a_trigger_without_a_champion_does_nothing(db: Database, world: World) -> None:
    with db.session() as session:
        champion = session.get(AdapterAlias, (world.adapter_id, "champion"))
        session.delete(champion)
    assert _trigger(db, world) is None


def test_a_closed_run_lets_the_next_trigger_through(db: Database, world: World) -> None:
    first = _trigger(db, world)
    assert first is not None
    with db.session() as session:
        policy.dismiss(session, world.owner, first.id)
    second = _trigger(db, world)
    assert second is not None
    assert second.id != first.id


# --- approve, dismiss, retrain now -------------------------------------------------------


def test_approve_only_a_proposed_run(db: Database, world: World) -> None:
    run = _trigger(db, world)
    assert run is not None
    with db.session() as session:
        assert policy.approve(session, world.owner, run.id).status == "approved"
    with db.session() as session, pytest.raises(Conflict, match="approved, not proposed"):
        policy.approve(session, world.owner, run.id)


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("proposed", True),
        ("approved", True),
        ("training", False),
        ("evaluating", False),
        ("promoted", False),
        ("dismissed", False),
    ],
)
def test_dismiss_only_before_training(
    db: Database, world: World, status: str, allowed: bool
) -> None:
    with db.session() as session:
        run = RetrainRun(adapter_id=world.adapter_id, trigger="drift", detail={}, status=status)
        session.add(run)
        session.flush()
        run_id = run.id
    with db.session() as session:
        if allowed:
            assert policy.dismiss(session, world.owner, run_id).status == "dismissed"
        else:
            with pytest.raises(Conflict, match=f"already {status}"):
                policy.dismiss(session, world.owner, run_id)


def test_nobody_else_approves_or_dismisses(db: Database, world: World) -> None:
    run = _trigger(db, world)
    assert run is not None
    stranger = quick_user(db)
    with db.session() as session:
        for action in (policy.approve, policy.dismiss):
            with pytest.raises(NotFound):
                action(session, stranger, run.id)
            with pytest.raises(NotFound):
                action(session, world.owner, 999_999)
        with pytest.raises(NotFound):
            policy.runs(session, stranger, world.adapter_id)
    with db.session() as session:
        assert [r.status for r in policy.runs(session, world.owner, world.adapter_id)] == [
            "proposed"
        ]


def test_retrain_now_is_an_approved_manual_run(db: Database, world: World) -> None:
    with db.session() as session:
        run = policy.retrain_now(session, world.owner, world.adapter_id)
        assert (run.trigger, run.status, run.detail) == (
            "manual",
            "approved",
            {"by": world.owner.id},
        )
    with db.session() as session, pytest.raises(Conflict, match="still approved") as raised:
        policy.retrain_now(session, world.owner, world.adapter_id)
    assert raised.value.code == "run_open"


def test_retrain_now_needs_a_champion_and_ownership(db: Database, world: World) -> None:
    with db.session() as session:
        session.delete(session.get(AdapterAlias, (world.adapter_id, "champion")))
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(Conflict, match="train a first version"):
            policy.retrain_now(session, world.owner, world.adapter_id)
        with pytest.raises(NotFound):
            policy.retrain_now(session, stranger, world.adapter_id)


# --- challenge -----------------------------------------------------------------------------


def test_a_challenge_needs_cases_to_gate_on(db: Database, world: World, settings: Settings) -> None:
    with db.session() as session, pytest.raises(InvalidRequest) as raised:
        policy.challenge(session, settings, world.owner, world.adapter_id, 2)
    assert raised.value.code == "no_eval_cases"


def test_a_challenge_of_the_champion_itself_is_refused(
    db: Database, world: World, settings: Settings
) -> None:
    with db.session() as session, pytest.raises(Conflict, match="champion already"):
        policy.challenge(session, settings, world.owner, world.adapter_id, 1)


def test_a_challenge_queues_the_gate(db: Database, world: World, settings: Settings) -> None:
    from loraloop.catalog import aliases
    from loraloop.db.tables import Job
    from tests.mlops_world import make_suite

    make_suite(db, world.adapter_id, cases=3)
    with db.session() as session:
        run = policy.challenge(session, settings, world.owner, world.adapter_id, 2)
        assert run.status == "evaluating"
        job = session.get(Job, run.eval_job_id)
        assert job is not None
        assert job.kind == "evaluate"
        assert job.payload["gate"] == {
            "retrain_run_id": run.id,
            "champion_id": world.version_id(1),
            "challenger_id": world.version_id(2),
        }
        assert [v["id"] for v in job.payload["versions"]] == world.versions
        assert len(job.payload["suites"][0]["cases"]) == 3
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1, "challenger": 2}
    with db.session() as session, pytest.raises(Conflict, match="still evaluating"):
        policy.challenge(session, settings, world.owner, world.adapter_id, 2)
