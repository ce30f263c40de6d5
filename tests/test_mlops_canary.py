"""Moving traffic: rollback, the canary's live verdict from feedback, and the canary split a
champion deployment makes per request (``deployments.resolve``)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from loraloop.catalog import aliases
from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import (
    AliasChange,
    Deployment,
    Feedback,
    GateDecision,
    RetrainPolicy,
    RetrainRun,
)
from loraloop.errors import Conflict, NotFound
from loraloop.gateway import deployments
from loraloop.gateway.credentials import Vault
from loraloop.mlops import promotion
from tests.mlops_world import (
    World,
    add_traces,
    make_alias_deployment,
    make_world,
    quick_user,
    rate,
)


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return make_world(db, tmp_path, versions=3)


def _champion(db: Database, world: World) -> dict[str, int]:
    with db.session() as session:
        return aliases.aliases_of(session, world.adapter_id)


# --- rollback ----------------------------------------------------------------------------


def test_rollback_returns_to_the_previous_champion(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        promotion.promote(session, world.adapter_id, world.version_id(2), cause="gate")
        promotion.start_canary(session, world.adapter_id, world.version_id(3), 0.3)
    with db.session() as session:
        assert promotion.rollback(session, world.owner, world.adapter_id) == 1
    assert _champion(db, world) == {"champion": 1}  # and the challenger is gone
    with db.session() as session:
        move = session.scalars(select(AliasChange).order_by(AliasChange.id.desc())).first()
        assert move is not None
        back = session.scalars(
            select(AliasChange).where(
                AliasChange.cause == "rollback", AliasChange.alias == "champion"
            )
        ).one()
        assert (back.from_version_id, back.to_version_id) == (
            world.version_id(2),
            world.version_id(1),
        )
        assert back.actor_id == world.owner.id
        row = session.get(Deployment, deployment)
        assert row is not None
        assert row.canary_share == 0.0


def test_rollback_to_a_named_version(db: Database, world: World) -> None:
    with db.session() as session:
        promotion.promote(session, world.adapter_id, world.version_id(3), cause="gate")
        assert promotion.rollback(session, world.owner, world.adapter_id, to_version=2) == 2
    assert _champion(db, world) == {"champion": 2}


def test_rollback_with_a_single_champion_is_refused(db: Database, world: World) -> None:
    with db.session() as session, pytest.raises(Conflict, match="only one champion") as raised:
        promotion.rollback(session, world.owner, world.adapter_id)
    assert raised.value.code == "nothing_to_roll_back"
    assert _champion(db, world) == {"champion": 1}


def test_rollback_to_the_champion_itself_is_refused(db: Database, world: World) -> None:
    with db.session() as session:
        promotion.promote(session, world.adapter_id, world.version_id(2), cause="gate")
    with db.session() as session, pytest.raises(Conflict, match="already the champion") as raised:
        promotion.rollback(session, world.owner, world.adapter_id, to_version=2)
    assert raised.value.code == "already_champion"


def test_nobody_else_rolls_back(db: Database, world: World) -> None:
    with db.session() as session:
        promotion.promote(session, world.adapter_id, world.version_id(2), cause="gate")
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(NotFound):
            promotion.rollback(session, stranger, world.adapter_id)
        with pytest.raises(NotFound):
            promotion.rollback(session, world.owner, world.adapter_id, to_version=9)
    assert _champion(db, world) == {"champion": 2}


# --- the canary's live verdict ---------------------------------------------------------


def _canary(db: Database, world: World, *, min_feedback: int = 10, tolerance: float = 0.05) -> int:
    """v2 on trial against v1 (as the gate leaves a passed challenger with a canary share)."""
    with db.session() as session:
        session.add(
            RetrainPolicy(
                adapter_id=world.adapter_id,
                canary_share=0.2,
                canary_min_feedback=min_feedback,
                tolerance=tolerance,
            )
        )
        decision = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=world.version_id(2),
            outcome="canary",
            reason="passed offline",
            numbers={},
            created_at=utcnow() - timedelta(minutes=5),
        )
        session.add(decision)
        session.flush()
        promotion.start_canary(session, world.adapter_id, world.version_id(2), 0.2)
        run = RetrainRun(
            adapter_id=world.adapter_id,
            trigger="manual",
            detail={},
            status="canary",
            challenger_version_id=world.version_id(2),
            decision_id=decision.id,
        )
        session.add(run)
        session.flush()
        return run.id


def _live(db: Database, world: World, version: int, bad: list[bool]) -> None:
    traces = add_traces(db, world.owner, count=len(bad), version_id=world.version_id(version))
    rate(db, world.owner, traces, bad)


def _check(db: Database, run_id: int) -> tuple[str | None, RetrainRun]:
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        return promotion.check_canary(session, run), run


def test_a_challenger_as_good_as_the_champion_is_promoted(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    run_id = _canary(db, world)
    _live(db, world, 1, [True] * 2 + [False] * 8)
    _live(db, world, 2, [True] * 2 + [False] * 8)
    outcome, run = _check(db, run_id)
    assert outcome == "promoted"
    assert run.status == "promoted"
    assert _champion(db, world) == {"champion": 2}
    with db.session() as session:
        verdict = session.get(GateDecision, run.decision_id)
        assert verdict is not None
        assert verdict.outcome == "promote"
        assert verdict.numbers["live"]["challenger"] == {"rated": 10, "bad": 2, "bad_rate": 0.2}
        assert verdict.numbers["live"]["champion"]["rated"] == 10
        row = session.get(Deployment, deployment)
        assert row is not None
        assert row.canary_share == 0.0


def test_a_worse_challenger_is_rolled_back(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    run_id = _canary(db, world)
    _live(db, world, 1, [True] * 1 + [False] * 9)
    _live(db, world, 2, [True] * 5 + [False] * 5)
    outcome, run = _check(db, run_id)
    assert outcome == "rolled_back"
    assert run.status == "refused"
    assert _champion(db, world) == {"champion": 1}
    with db.session() as session:
        verdict = session.get(GateDecision, run.decision_id)
        assert verdict is not None
        assert verdict.outcome == "refuse"
        assert "50.0% bad of 10" in verdict.reason
        row = session.get(Deployment, deployment)
        assert row is not None
        assert row.canary_share == 0.0


def test_without_enough_feedback_the_canary_keeps_running(db: Database, world: World) -> None:
    run_id = _canary(db, world, min_feedback=10)
    _live(db, world, 1, [False] * 20)
    _live(db, world, 2, [True] * 9)  # one rating short
    outcome, run = _check(db, run_id)
    assert outcome is None
    assert run.status == "canary"
    assert _champion(db, world) == {"champion": 1, "challenger": 2}


def test_feedback_from_before_the_trial_does_not_count(db: Database, world: World) -> None:
    run_id = _canary(db, world, min_feedback=5)
    long_ago = utcnow() - timedelta(days=3)
    old = add_traces(db, world.owner, count=10, version_id=world.version_id(2), start=long_ago)
    rate(db, world.owner, old, [True] * 10)
    _live(db, world, 1, [False] * 5)
    _live(db, world, 2, [False] * 5)
    outcome, _ = _check(db, run_id)
    assert outcome == "promoted"  # the ten old thumbs-down are not the challenger's trial


def test_an_answer_counts_once_by_its_worst_feedback(db: Database, world: World) -> None:
    traces = add_traces(db, world.owner, count=2, version_id=world.version_id(1))
    rate(db, world.owner, traces, [False, False])
    with db.session() as session:
        session.add(
            Feedback(
                trace_id=traces[0],
                owner_id=world.owner.id,
                author_id=world.owner.id,
                correction="better",
                tags=[],
            )
        )
        session.add(
            Feedback(
                trace_id=traces[1],
                owner_id=world.owner.id,
                author_id=world.owner.id,
                rating=2,
                scale="stars",
                tags=[],
            )
        )
        session.flush()
        scores = promotion.live_scores(session, world.adapter_id)
    assert scores[world.version_id(1)].rated == 2
    assert scores[world.version_id(1)].bad == 2


def test_a_canary_ended_by_a_rollback_is_not_promoted_later(db: Database, world: World) -> None:
    """The owner rolls back during the trial (which clears the challenger); the feedback that
    arrives later must not promote the challenger behind their back."""
    run_id = _canary(db, world)
    with db.session() as session:
        promotion.promote(session, world.adapter_id, world.version_id(3), cause="manual")
        assert promotion.rollback(session, world.owner, world.adapter_id) == 1
    _live(db, world, 1, [True] * 5 + [False] * 5)
    _live(db, world, 2, [False] * 10)
    outcome, run = _check(db, run_id)
    assert _champion(db, world) == {"champion": 1}
    assert outcome is None
    assert run.status == "refused"  # closed, so the adapter can retrain again


def test_a_canary_ended_by_an_override_closes_its_run(db: Database, world: World) -> None:
    from loraloop.mlops import gate

    run_id = _canary(db, world)
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        gate.override(session, world.owner, run.decision_id or 0, promote=True, reason="by hand")
    _live(db, world, 1, [False] * 10)
    _live(db, world, 2, [True] * 10)
    outcome, run = _check(db, run_id)
    assert _champion(db, world) == {"champion": 2}  # the owner's word stands
    assert outcome is None
    assert run.status == "promoted"


# --- the canary split per request ------------------------------------------------------


def _resolve_versions(
    db: Database, settings: Settings, deployment_id: int, times: int
) -> list[int | None]:
    vault = Vault(settings.secret())
    out = []
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        assert row is not None
        for _ in range(times):
            out.append(deployments.resolve(session, settings, vault, row).adapter_version_id)
    return out


def _share(db: Database, deployment_id: int, share: float) -> None:
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        assert row is not None
        row.canary_share = share


def test_without_a_canary_share_the_champion_always_answers(
    db: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        aliases.move(session, world.adapter_id, "challenger", world.version_id(2), cause="retrain")
    monkeypatch.setattr(random, "random", lambda: 0.0)  # the split would pick the challenger
    assert set(_resolve_versions(db, settings, deployment, 50)) == {world.version_id(1)}


def test_a_canary_share_sends_that_share_to_the_challenger(
    db: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        promotion.start_canary(session, world.adapter_id, world.version_id(2), 0.5)
    monkeypatch.setattr(random, "random", random.Random(20240601).random)
    served = _resolve_versions(db, settings, deployment, 400)
    to_challenger = served.count(world.version_id(2))
    assert served.count(world.version_id(1)) + to_challenger == 400
    assert 150 <= to_challenger <= 250  # 200 ± 5 standard deviations


def test_a_small_share_is_small(
    db: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        promotion.start_canary(session, world.adapter_id, world.version_id(2), 0.1)
    monkeypatch.setattr(random, "random", random.Random(7).random)
    served = _resolve_versions(db, settings, deployment, 400)
    assert 15 <= served.count(world.version_id(2)) <= 70  # 40 ± 4 standard deviations


def test_a_share_without_a_challenger_serves_the_champion(
    db: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    _share(db, deployment, 0.5)
    monkeypatch.setattr(random, "random", lambda: 0.0)  # every request takes the canary branch
    assert set(_resolve_versions(db, settings, deployment, 20)) == {world.version_id(1)}


def test_the_gateway_lookup_splits_too(
    db: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serving_target`` (what ``/v1`` calls, one joined query) honours the split as well."""
    make_alias_deployment(db, world.owner, world.adapter_id, name="cafe")
    with db.session() as session:
        promotion.start_canary(session, world.adapter_id, world.version_id(2), 0.5)
    vault = Vault(settings.secret())
    picks = iter([0.9, 0.1])
    monkeypatch.setattr(random, "random", lambda: next(picks))
    with db.session() as session:
        first = deployments.serving_target(session, settings, vault, world.owner, "cafe")
        second = deployments.serving_target(session, settings, vault, world.owner, "cafe")
    assert first is not None
    assert second is not None
    assert (first.adapter_version_id, second.adapter_version_id) == (
        world.version_id(1),
        world.version_id(2),
    )
    assert first.adapter is not None
    assert second.adapter is not None
    assert first.adapter.key != second.adapter.key  # different weights really load
