"""Drift monitoring without running the MiniLM job: which deployments are due, what a check's
payload holds, and what the ``drift_check`` success hook does with a hand-made result."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import AdapterVersion, Deployment, DriftReport, Job, RetrainRun
from loraloop.mlops import monitor, policy
from tests.mlops_world import (
    World,
    add_traces,
    make_alias_deployment,
    make_job,
    make_world,
    quick_user,
    rate,
)

TRAIN_FILE = "/srv/loraloop/artifacts/ab/ab12cd34"


@pytest.fixture
def small(settings: Settings) -> Settings:
    return settings.model_copy(update={"drift_window": 10, "drift_every": 5})


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    world = make_world(db, tmp_path, versions=2)
    for number in (1, 2):
        job = make_job(db, world.owner, "train", {"train_file": f"{TRAIN_FILE}-v{number}"})
        with db.session() as session:
            row = session.get(AdapterVersion, world.version_id(number))
            assert row is not None
            row.job_id = job.id
    return world


def _due(db: Database, settings: Settings) -> dict[int, int]:
    with db.session() as session:
        return {d.id: n for d, n in monitor.due(session, settings)}


def _report(db: Database, world: World, deployment: int, requests: int) -> None:
    with db.session() as session:
        session.add(
            DriftReport(
                deployment_id=deployment,
                adapter_id=world.adapter_id,
                version_id=world.version_id(1),
                requests=requests,
                input={},
                quality={},
            )
        )


def test_a_deployment_is_due_after_a_full_window_then_every_n(
    db: Database, world: World, small: Settings
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    version = world.version_id(1)

    def serve(count: int, status: str = "ok") -> None:
        add_traces(
            db,
            world.owner,
            count=count,
            deployment_id=deployment,
            version_id=version,
            status=status,
        )

    serve(9)
    serve(5, status="error")  # failures are not traffic
    assert _due(db, small) == {}
    serve(1)
    assert _due(db, small) == {deployment: 10}
    _report(db, world, deployment, 10)
    serve(4)
    assert _due(db, small) == {}
    serve(1)
    assert _due(db, small) == {deployment: 15}


def test_only_active_adapter_deployments_are_checked(
    db: Database, world: World, small: Settings
) -> None:
    paused = make_alias_deployment(db, world.owner, world.adapter_id)
    with db.session() as session:
        row = session.get(Deployment, paused)
        assert row is not None
        row.status = "paused"
        base = Deployment(
            owner_id=world.owner.id, name="bare", kind="base", base_model_id=world.base_id
        )
        session.add(base)
        session.flush()
        base_id = base.id
    add_traces(db, world.owner, count=12, deployment_id=paused, version_id=world.version_id(1))
    add_traces(db, world.owner, count=12, deployment_id=base_id)
    add_traces(db, world.owner, count=30)  # the playground: no deployment
    assert _due(db, small) == {}


def _deployment_row(db: Database, deployment: int) -> Deployment:
    with db.session() as session:
        row = session.get(Deployment, deployment)
        assert row is not None
        return row


def _enqueue(db: Database, settings: Settings, deployment: int, requests: int) -> Job | None:
    with db.session() as session:
        row = session.get(Deployment, deployment)
        assert row is not None
        return monitor.enqueue_check(session, settings, row, requests)


def test_a_check_holds_the_newest_window_in_order(
    db: Database, world: World, small: Settings
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    other = make_alias_deployment(db, world.owner, world.adapter_id)
    start = utcnow() - timedelta(hours=1)
    texts = [f"question {i}" for i in range(14)]
    # v1 served the first 11, v2 (a canary) the last 3: v1 served most of the window
    add_traces(
        db,
        world.owner,
        count=11,
        deployment_id=deployment,
        version_id=world.version_id(1),
        start=start,
        texts=texts[:11],
    )
    add_traces(
        db,
        world.owner,
        count=3,
        deployment_id=deployment,
        version_id=world.version_id(2),
        start=start + timedelta(seconds=11),
        texts=texts[11:],
    )
    add_traces(
        db,
        world.owner,
        count=3,
        deployment_id=other,
        version_id=world.version_id(1),
        start=start + timedelta(seconds=5),
        texts=["elsewhere"] * 3,
    )
    add_traces(
        db,
        world.owner,
        count=2,
        deployment_id=deployment,
        status="error",
        start=start + timedelta(seconds=30),
        texts=["failed"] * 2,
    )
    job = _enqueue(db, small, deployment, 14)
    assert job is not None
    payload = job.payload
    assert (job.kind, job.status, job.owner_id) == ("drift_check", "queued", world.owner.id)
    assert payload["texts"] == texts[4:]  # oldest first, the newest 10 of this deployment
    assert payload["requests"] == 14
    assert payload["deployment_id"] == deployment
    assert payload["adapter_id"] == world.adapter_id
    assert payload["version_id"] == world.version_id(1)
    assert payload["train_file"] == f"{TRAIN_FILE}-v1"
    assert payload["reference_cache"] == str(
        small.home / "cache" / "embeddings" / "ab12cd34-v1.safetensors"
    )
    assert payload["first_trace_at"] < payload["last_trace_at"]
    assert payload["alpha"] == small.drift_alpha


def test_a_second_check_waits_for_the_first(db: Database, world: World, small: Settings) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    add_traces(db, world.owner, count=10, deployment_id=deployment, version_id=world.version_id(1))
    first = _enqueue(db, small, deployment, 10)
    assert first is not None
    assert _enqueue(db, small, deployment, 10) is None
    with db.session() as session:
        job = session.get(Job, first.id)
        assert job is not None
        job.status = "succeeded"
    assert _enqueue(db, small, deployment, 10) is not None


def test_a_failed_check_is_not_retried_until_more_traffic(
    db: Database, world: World, small: Settings
) -> None:
    """A check that failed (say its training file is gone) must not be queued again on every
    tick: the next one waits for ``drift_every`` more requests."""
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    add_traces(db, world.owner, count=10, deployment_id=deployment, version_id=world.version_id(1))
    first = _enqueue(db, small, deployment, 10)
    assert first is not None
    with db.session() as session:
        job = session.get(Job, first.id)
        assert job is not None
        job.status, job.error = "failed", "FileNotFoundError: the training file"
    assert _enqueue(db, small, deployment, 10) is None
    assert _enqueue(db, small, deployment, 14) is None
    assert _enqueue(db, small, deployment, 15) is not None


def test_a_window_without_an_adapter_version_is_not_checked(
    db: Database, world: World, small: Settings
) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    add_traces(db, world.owner, count=10, deployment_id=deployment)
    assert _enqueue(db, small, deployment, 10) is None


# --- the drift_check hook ----------------------------------------------------------------


def _checked(
    db: Database,
    world: World,
    deployment: int,
    checked: dict[str, Any],
) -> DriftReport:
    now = utcnow()
    payload = {
        "deployment_id": deployment,
        "adapter_id": world.adapter_id,
        "version_id": world.version_id(1),
        "requests": 100,
        "first_trace_at": (now - timedelta(hours=1)).isoformat(),
        "last_trace_at": now.isoformat(),
    }
    job = make_job(db, world.owner, "drift_check", payload, result={"input": checked})
    with db.session() as session:
        found = session.get(Job, job.id)
        assert found is not None
        return monitor.drift_checked(session, found)


DRIFTED = {"alarm": True, "p_value": 0.0001, "mmd2": 0.3, "ood_share": 0.6, "clusters": []}
CALM = {"alarm": False, "p_value": 0.4, "mmd2": 0.0, "ood_share": 0.02, "clusters": []}


def _runs(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    with db.session() as session:
        return [
            (r.trigger, r.status, r.detail)
            for r in session.scalars(select(RetrainRun).order_by(RetrainRun.id))
        ]


def test_a_drift_alarm_is_stored_and_proposes_a_retraining(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    report = _checked(db, world, deployment, DRIFTED)
    assert report.alarm == "drift"
    assert report.input == DRIFTED
    assert report.requests == 100
    assert report.quality["alarm"] is False
    assert report.first_trace_at is not None
    assert report.last_trace_at is not None
    assert report.first_trace_at < report.last_trace_at
    assert _runs(db) == [
        ("drift", "proposed", {"report_id": report.id, "deployment_id": deployment})
    ]
    with db.session() as session:
        assert [r.id for r in monitor.reports(session, world.owner, world.adapter_id)] == [
            report.id
        ]


def test_an_auto_policy_approves_at_once(db: Database, world: World) -> None:
    with db.session() as session:
        policy.update(session, world.owner, world.adapter_id, mode="auto")
    _checked(db, world, make_alias_deployment(db, world.owner, world.adapter_id), DRIFTED)
    assert [status for _, status, _ in _runs(db)] == ["approved"]


@pytest.mark.parametrize(
    ("changes", "checked", "alarm"),
    [
        ({}, CALM, None),
        ({"on_drift": False}, DRIFTED, "drift"),
        ({"mode": "off"}, DRIFTED, "drift"),
    ],
    ids=["calm", "drift-ignored", "policy-off"],
)
def test_no_retraining_without_an_alarm_the_policy_acts_on(
    db: Database, world: World, changes: dict[str, Any], checked: dict[str, Any], alarm: str | None
) -> None:
    if changes:
        with db.session() as session:
            policy.update(session, world.owner, world.adapter_id, **changes)
    report = _checked(db, world, make_alias_deployment(db, world.owner, world.adapter_id), checked)
    assert report.alarm == alarm
    assert _runs(db) == []


def _rated_traffic(db: Database, world: World, deployment: int, bad: list[bool]) -> None:
    traces = add_traces(
        db,
        world.owner,
        count=len(bad),
        deployment_id=deployment,
        version_id=world.version_id(1),
        start=utcnow() - timedelta(hours=2),
    )
    rate(db, world.owner, traces, bad)


def test_a_jump_in_bad_answers_is_a_quality_alarm(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    _rated_traffic(db, world, deployment, [i % 10 == 0 for i in range(60)] + [True] * 40)
    report = _checked(db, world, deployment, CALM)
    assert report.alarm == "quality"
    assert report.quality["alarm"] is True
    assert report.quality["n"] == 100
    assert report.quality["recent_rate"] > 0.7
    assert report.quality["change"]["after"] > report.quality["change"]["before"]
    assert [(t, s) for t, s, _ in _runs(db)] == [("quality", "proposed")]


def test_a_steady_bad_rate_is_no_alarm(db: Database, world: World) -> None:
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    _rated_traffic(db, world, deployment, [i % 5 == 0 for i in range(100)])
    report = _checked(db, world, deployment, CALM)
    assert report.alarm is None
    assert report.quality["n"] == 100
    assert _runs(db) == []


def test_a_quality_alarm_still_counts_when_drift_is_ignored(db: Database, world: World) -> None:
    """Input drift and a quality drop at once, under a policy that acts only on quality:
    the quality alarm must still propose a retraining."""
    with db.session() as session:
        policy.update(session, world.owner, world.adapter_id, on_drift=False)
    deployment = make_alias_deployment(db, world.owner, world.adapter_id)
    _rated_traffic(db, world, deployment, [False] * 60 + [True] * 40)
    report = _checked(db, world, deployment, DRIFTED)
    assert report.quality["alarm"] is True
    assert [t for t, _, _ in _runs(db)] == ["quality"]


def test_drift_reports_are_the_owners(db: Database, world: World) -> None:
    from loraloop.errors import NotFound

    stranger = quick_user(db)
    with db.session() as session, pytest.raises(NotFound):
        monitor.reports(session, stranger, world.adapter_id)


@pytest.mark.parametrize(
    ("request_body", "text"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "c",
        ),
        ({"prompt": "complete me"}, "complete me"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, ""),
        ({}, ""),
    ],
)
def test_the_text_of_a_request(request_body: dict[str, Any], text: str) -> None:
    assert monitor.text_of(request_body) == text
