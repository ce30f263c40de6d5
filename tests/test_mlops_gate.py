"""The evaluation gate: ``compare`` (the promotion rule), the ``evaluate`` job's success hook
with hand-made jobs (eval runs stored, decision recorded, aliases moved or not, canary), and
the owner's override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from loraloop.catalog import aliases
from loraloop.db.engine import Database
from loraloop.db.tables import (
    AliasChange,
    Deployment,
    EvalRun,
    GateDecision,
    Job,
    RetrainPolicy,
    RetrainRun,
)
from loraloop.errors import InvalidRequest, NotFound
from loraloop.mlops import gate, promotion
from tests.mlops_world import (
    World,
    make_alias_deployment,
    make_job,
    make_suite,
    make_world,
    quick_user,
    scored,
)


def _suite(ids: list[int], scores: list[float]) -> dict[str, Any]:
    return {"cases": [{"id": i, "score": s} for i, s in zip(ids, scores, strict=True)]}


IDS = list(range(40))

# --- compare -----------------------------------------------------------------------------


def test_a_clearly_better_challenger_is_promoted_with_the_pooled_numbers() -> None:
    champion = {"1": _suite(IDS[:30], [0.0] * 30), "2": _suite(IDS[30:], [0.5] * 10)}
    challenger = {"1": _suite(IDS[:30], [1.0] * 25 + [0.0] * 5), "2": _suite(IDS[30:], [0.5] * 10)}
    verdict = gate.compare(
        champion, challenger, {"1": "prices", "2": "tone"}, margin=0.02, tolerance=0.02
    )
    assert verdict.outcome == "promote", verdict.reason
    pooled = verdict.pooled
    assert pooled["n"] == 40
    assert pooled["mean_a"] == pytest.approx(5 / 40)
    assert pooled["mean_b"] == pytest.approx(30 / 40)
    assert pooled["delta"] == pytest.approx(25 / 40)
    assert 0 < pooled["low"] <= pooled["delta"] <= pooled["high"]
    assert "+0.625" in verdict.reason
    assert "40 cases" in verdict.reason
    assert set(verdict.suites) == {"1", "2"}
    assert verdict.suites["1"]["name"] == "prices"
    numbers = verdict.numbers()
    assert set(numbers) == {"pooled", "suites", "judge", "margin", "tolerance"}
    assert numbers["margin"] == 0.02


def test_better_on_average_but_an_interval_with_zero_is_refused() -> None:
    # four noisy cases: +1, -1, +1, 0 → mean +0.25, but resampling easily gives ≤ 0
    champion = {"1": _suite([1, 2, 3, 4], [0.0, 1.0, 0.0, 0.5])}
    challenger = {"1": _suite([1, 2, 3, 4], [1.0, 0.0, 1.0, 0.5])}
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.5)
    assert verdict.pooled["delta"] == pytest.approx(0.25)
    assert verdict.pooled["low"] <= 0
    assert verdict.outcome == "refuse"
    interval = f"[{verdict.pooled['low']:+.3f}, {verdict.pooled['high']:+.3f}]"
    assert f"the 95% interval {interval} includes zero" in verdict.reason


def test_a_gain_below_the_margin_is_refused_even_when_certain() -> None:
    champion = {"1": _suite(IDS, [0.5] * 40)}
    challenger = {"1": _suite(IDS, [0.51] * 40)}
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.02)
    assert verdict.pooled["low"] > 0
    assert verdict.outcome == "refuse"
    assert "below the margin 0.020" in verdict.reason


def test_a_suite_regressing_beyond_tolerance_is_refused_by_name() -> None:
    # prices gains a lot, tone loses 0.5: pooled still clearly better
    champion = {"1": _suite(IDS[:30], [0.0] * 30), "2": _suite(IDS[30:], [1.0] * 10)}
    challenger = {"1": _suite(IDS[:30], [1.0] * 30), "2": _suite(IDS[30:], [0.5] * 10)}
    verdict = gate.compare(
        champion, challenger, {"1": "prices", "2": "tone"}, margin=0.02, tolerance=0.1
    )
    assert verdict.pooled["delta"] > 0.5
    assert verdict.pooled["low"] > 0
    assert verdict.outcome == "refuse"
    assert "regressed beyond 0.100 on tone (-0.500)" in verdict.reason
    assert "prices" not in verdict.reason


def test_a_small_regression_within_tolerance_does_not_block() -> None:
    champion = {"1": _suite(IDS[:30], [0.0] * 30), "2": _suite(IDS[30:], [1.0] * 10)}
    challenger = {"1": _suite(IDS[:30], [1.0] * 30), "2": _suite(IDS[30:], [0.95] * 10)}
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.1)
    assert verdict.outcome == "promote", verdict.reason


@pytest.mark.parametrize(
    ("champion", "challenger"),
    [
        ({"1": _suite([1, 2], [0.0, 0.0])}, {"1": _suite([3, 4], [1.0, 1.0])}),
        ({"1": _suite([1, 2], [0.0, 0.0])}, {"2": _suite([1, 2], [1.0, 1.0])}),
        ({}, {"1": _suite([1, 2], [1.0, 1.0])}),
    ],
    ids=["other-cases", "other-suite", "champion-unscored"],
)
def test_no_shared_cases_is_refused(champion: dict[str, Any], challenger: dict[str, Any]) -> None:
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.02)
    assert verdict.outcome == "refuse"
    assert verdict.reason == "no case was scored for both versions"
    assert verdict.pooled == {}


def test_a_judge_preferring_the_champion_is_refused() -> None:
    champion = {"1": _suite(IDS, [0.0] * 40)}
    challenger = {"1": _suite(IDS, [1.0] * 40)}
    judge: dict[str, list[float | None]] = {"1": [0.0] * 30 + [None] * 10}
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.02, judge=judge)
    assert verdict.outcome == "refuse"
    assert "the judge prefers the champion (0.00)" in verdict.reason
    assert verdict.judge == {"mean": 0.0, "n": 30}


@pytest.mark.parametrize(
    ("judge", "expected"),
    [
        ({"1": [1.0, 0.5, 1.0]}, {"mean": pytest.approx(2.5 / 3), "n": 3}),
        ({"1": [None, None]}, None),  # a judge that never answered is no judge
        ({}, None),
    ],
)
def test_a_judge_that_agrees_or_abstains_does_not_block(
    judge: dict[str, list[float | None]], expected: dict[str, Any] | None
) -> None:
    champion = {"1": _suite(IDS, [0.0] * 40)}
    challenger = {"1": _suite(IDS, [1.0] * 40)}
    verdict = gate.compare(champion, challenger, {}, margin=0.02, tolerance=0.02, judge=judge)
    assert verdict.outcome == "promote", verdict.reason
    assert verdict.judge == expected


def test_compare_is_deterministic_for_a_seed() -> None:
    champion = {"1": _suite([1, 2, 3, 4, 5], [0.0, 1.0, 0.0, 0.2, 0.3])}
    challenger = {"1": _suite([1, 2, 3, 4, 5], [1.0, 0.5, 1.0, 0.1, 0.9])}
    first = gate.compare(champion, challenger, {}, margin=0.0, tolerance=1.0, seed=3)
    again = gate.compare(champion, challenger, {}, margin=0.0, tolerance=1.0, seed=3)
    assert first.pooled == again.pooled


# --- the evaluate job's success hook -----------------------------------------------------


def _gated_run(db: Database, world: World) -> int:
    """A retrain run at the gate, v2 the challenger (as policy._queue_gate leaves it)."""
    with db.session() as session:
        run = RetrainRun(
            adapter_id=world.adapter_id,
            trigger="manual",
            detail={},
            status="evaluating",
            challenger_version_id=world.version_id(2),
        )
        session.add(run)
        aliases.move(session, world.adapter_id, "challenger", world.version_id(2), cause="retrain")
        session.flush()
        return run.id


def _evaluate_job(
    db: Database,
    world: World,
    versions: dict[int, dict[int, dict[str, Any]]],
    *,
    run_id: int | None,
    judge: dict[str, Any] | None = None,
) -> Job:
    gate_info = {
        "retrain_run_id": run_id,
        "champion_id": world.version_id(1),
        "challenger_id": world.version_id(2),
    }
    result: dict[str, Any] = {
        "versions": {
            str(vid): {str(sid): out for sid, out in per.items()} for vid, per in versions.items()
        }
    }
    if judge is not None:
        result["judge"] = judge
    return make_job(
        db,
        world.owner,
        "evaluate",
        {"adapter_id": world.adapter_id, "gate": gate_info if run_id is not None else None},
        result=result,
    )


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return make_world(db, tmp_path, versions=2)


def _hook(db: Database, job: Job) -> None:
    with db.session() as session:
        found = session.get(Job, job.id)
        assert found is not None
        gate.evaluation_succeeded(session, found)


def test_a_passing_gate_stores_runs_and_promotes(db: Database, world: World) -> None:
    prices, p_cases = make_suite(db, world.adapter_id, name="prices", cases=30)
    tone, t_cases = make_suite(db, world.adapter_id, name="tone", cases=5)
    run_id = _gated_run(db, world)
    v1, v2 = world.versions
    job = _evaluate_job(
        db,
        world,
        {
            v1: {prices: scored(p_cases, [0.0] * 30), tone: scored(t_cases, [1.0] * 5)},
            v2: {prices: scored(p_cases, [1.0] * 30), tone: scored(t_cases, [1.0] * 5)},
        },
        run_id=run_id,
    )
    _hook(db, job)
    with db.session() as session:
        runs = session.scalars(select(EvalRun).order_by(EvalRun.id)).all()
        stored = {(r.version_id, r.suite_id): (r.score, r.metric, r.summary["cases"]) for r in runs}
        assert stored == {
            (v1, prices): (0.0, "contains", 30),
            (v1, tone): (1.0, "contains", 5),
            (v2, prices): (1.0, "contains", 30),
            (v2, tone): (1.0, "contains", 5),
        }
        assert all(r.job_id == job.id for r in runs)
        assert len(runs[0].cases) == 30
        decision = session.scalars(select(GateDecision)).one()
        assert decision.outcome == "promote", decision.reason
        assert (decision.champion_version_id, decision.challenger_version_id) == (v1, v2)
        assert decision.job_id == job.id
        assert decision.numbers["pooled"]["n"] == 35
        assert decision.numbers["suites"][str(prices)]["name"] == "prices"
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 2}
        moves = session.scalars(
            select(AliasChange).where(AliasChange.cause == "gate").order_by(AliasChange.id)
        ).all()
        assert [(m.alias, m.from_version_id, m.to_version_id) for m in moves] == [
            ("champion", v1, v2),
            ("challenger", v2, None),
        ]
        assert moves[0].decision_id == decision.id
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert (run.status, run.decision_id) == ("promoted", decision.id)


def test_a_failing_gate_clears_the_challenger_and_keeps_the_champion(
    db: Database, world: World
) -> None:
    prices, p_cases = make_suite(db, world.adapter_id, name="prices", cases=20)
    tone, t_cases = make_suite(db, world.adapter_id, name="tone", cases=20)
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    run_id = _gated_run(db, world)
    v1, v2 = world.versions
    job = _evaluate_job(
        db,
        world,
        {
            v1: {prices: scored(p_cases, [0.0] * 20), tone: scored(t_cases, [1.0] * 20)},
            v2: {prices: scored(p_cases, [1.0] * 20), tone: scored(t_cases, [0.0] * 20)},
        },
        run_id=run_id,
    )
    _hook(db, job)
    with db.session() as session:
        decision = session.scalars(select(GateDecision)).one()
        assert decision.outcome == "refuse"
        assert "on tone (-1.000)" in decision.reason  # the suite named, not its id
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
        cleared = session.scalars(
            select(AliasChange).where(
                AliasChange.alias == "challenger", AliasChange.cause == "gate"
            )
        ).one()
        assert (cleared.from_version_id, cleared.to_version_id) == (v2, None)
        assert not session.scalars(
            select(AliasChange).where(AliasChange.alias == "champion", AliasChange.cause == "gate")
        ).all()
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert (run.status, run.decision_id) == ("refused", decision.id)
        row = session.get(Deployment, deployment)
        assert row is not None
        assert row.canary_share == 0.0


def test_a_passing_gate_with_a_canary_share_starts_a_canary(db: Database, world: World) -> None:
    prices, cases = make_suite(db, world.adapter_id, cases=30)
    on_alias = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        session.add(RetrainPolicy(adapter_id=world.adapter_id, canary_share=0.25))
        pinned = Deployment(
            owner_id=world.owner.id,
            name="pinned",
            kind="adapter",
            adapter_id=world.adapter_id,
            adapter_version_id=world.version_id(1),
        )
        session.add(pinned)
        session.flush()
        pinned_id = pinned.id
    run_id = _gated_run(db, world)
    v1, v2 = world.versions
    job = _evaluate_job(
        db,
        world,
        {v1: {prices: scored(cases, [0.0] * 30)}, v2: {prices: scored(cases, [1.0] * 30)}},
        run_id=run_id,
    )
    _hook(db, job)
    with db.session() as session:
        decision = session.scalars(select(GateDecision)).one()
        assert decision.outcome == "canary"
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1, "challenger": 2}
        shares = {
            d.id: d.canary_share
            for d in session.scalars(select(Deployment).order_by(Deployment.id))
        }
        assert shares == {on_alias: 0.25, pinned_id: 0.0}
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert (run.status, run.decision_id) == ("canary", decision.id)


def test_a_judge_in_the_result_is_taken_into_account(db: Database, world: World) -> None:
    prices, cases = make_suite(db, world.adapter_id, cases=30)
    run_id = _gated_run(db, world)
    v1, v2 = world.versions
    job = _evaluate_job(
        db,
        world,
        {v1: {prices: scored(cases, [0.0] * 30)}, v2: {prices: scored(cases, [1.0] * 30)}},
        run_id=run_id,
        judge={str(prices): [0.0] * 30},
    )
    _hook(db, job)
    with db.session() as session:
        decision = session.scalars(select(GateDecision)).one()
        assert decision.outcome == "refuse"
        assert "judge prefers the champion" in decision.reason
        assert decision.numbers["judge"] == {"mean": 0.0, "n": 30}
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}


def test_an_evaluation_without_a_gate_only_records_history(db: Database, world: World) -> None:
    prices, cases = make_suite(db, world.adapter_id, cases=3)
    v1, v2 = world.versions
    job = _evaluate_job(
        db,
        world,
        {
            v1: {prices: scored(cases, [0.0] * 3), 999_999: scored([1], [1.0])},
            v2: {prices: scored(cases, [1.0] * 3)},
        },
        run_id=None,
    )
    _hook(db, job)
    with db.session() as session:
        runs = session.scalars(select(EvalRun)).all()
        # a suite deleted while the job ran (999999) is skipped
        assert sorted((r.version_id, r.suite_id) for r in runs) == [(v1, prices), (v2, prices)]
        assert session.scalars(select(GateDecision)).all() == []
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}


# --- override ------------------------------------------------------------------------------


def _decision(db: Database, world: World, outcome: str) -> int:
    with db.session() as session:
        row = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=world.version_id(2),
            outcome=outcome,
            reason="the gate's reason",
            numbers={"pooled": {"delta": 0.01}},
        )
        session.add(row)
        session.flush()
        if outcome == "promote":
            promotion.promote(
                session, world.adapter_id, world.version_id(2), cause="gate", decision=row
            )
        return row.id


def test_the_owner_promotes_a_refused_challenger(db: Database, world: World) -> None:
    refused = _decision(db, world, "refuse")
    with db.session() as session:
        row = gate.override(
            session, world.owner, refused, promote=True, reason="  I read the answers  "
        )
        assert (row.outcome, row.override_of, row.actor_id) == ("promote", refused, world.owner.id)
        assert row.reason == "I read the answers"
        assert row.numbers == {"pooled": {"delta": 0.01}}
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 2}
        move = session.scalars(
            select(AliasChange).where(
                AliasChange.cause == "override", AliasChange.alias == "champion"
            )
        ).one()
        assert (move.actor_id, move.decision_id) == (world.owner.id, row.id)
        assert [d.id for d in gate.decisions(session, world.owner, world.adapter_id)] == [
            row.id,
            refused,
        ]


def test_the_owner_undoes_a_promotion(db: Database, world: World) -> None:
    promoted = _decision(db, world, "promote")
    with db.session() as session:
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 2}
        row = gate.override(session, world.owner, promoted, promote=False, reason="too terse")
        assert (row.outcome, row.override_of, row.actor_id) == ("refuse", promoted, world.owner.id)
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
        move = session.scalars(
            select(AliasChange).where(
                AliasChange.cause == "override", AliasChange.alias == "champion"
            )
        ).one()
        assert (move.from_version_id, move.to_version_id) == (
            world.version_id(2),
            world.version_id(1),
        )
        assert move.actor_id == world.owner.id


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_an_override_needs_a_reason(db: Database, world: World, reason: str) -> None:
    refused = _decision(db, world, "refuse")
    with db.session() as session, pytest.raises(InvalidRequest, match="say why") as raised:
        gate.override(session, world.owner, refused, promote=True, reason=reason)
    assert raised.value.param == "reason"
    with db.session() as session:
        assert len(session.scalars(select(GateDecision)).all()) == 1
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}


def test_nobody_else_overrides_and_a_missing_decision_is_not_found(
    db: Database, world: World
) -> None:
    refused = _decision(db, world, "refuse")
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(NotFound):
            gate.override(session, stranger, refused, promote=True, reason="mine now")
        with pytest.raises(NotFound):
            gate.override(session, world.owner, 999_999, promote=True, reason="why not")
        with pytest.raises(NotFound):
            gate.decisions(session, stranger, world.adapter_id)
    with db.session() as session:
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
