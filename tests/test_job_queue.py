"""The durable queue: claim order, fencing tokens, leases and the reaper, retries, cancellation,
progress events and ownership. Time moves by setting ``lease_expires_at`` into the past."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import Job, JobEvent, User
from loraloop.errors import Conflict, NotFound
from loraloop.jobs import queue
from tests.factories import make_job, make_user

LEASE = 30


def _enqueue(db: Database, owner: User, *, priority: int = 0, max_attempts: int = 3) -> int:
    with db.session() as session:
        job = queue.enqueue(
            session, owner, "selftest", {"steps": 1}, priority=priority, max_attempts=max_attempts
        )
        return job.id


def _claim(db: Database, worker: str = "w1") -> Job | None:
    with db.session() as session:
        return queue.claim(session, worker, lease_seconds=LEASE)


def _claimed(db: Database, worker: str = "w1") -> tuple[int, str]:
    job = _claim(db, worker)
    assert job is not None
    assert job.lease_token is not None
    return job.id, job.lease_token


def _get(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _row(db: Database, job_id: int) -> tuple[Any, ...]:
    with db.session() as session:
        return tuple(session.execute(select(Job.__table__).where(Job.id == job_id)).one())


def _event_count(db: Database, job_id: int) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).where(JobEvent.job_id == job_id)) or 0


def _expire(db: Database, job_id: int) -> None:
    """The worker went silent: its lease ran out a while ago."""
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _reap(db: Database) -> tuple[list[int], list[int]]:
    with db.session() as session:
        return queue.reap(session)


def _start(db: Database, job_id: int, token: str) -> Job:
    with db.session() as session:
        return queue.start(session, job_id, token)


# claim -----------------------------------------------------------------------------------


def test_claim_returns_none_when_nothing_is_queued(db: Database) -> None:
    assert _claim(db) is None
    job_id = make_job(db, make_user(db)).id
    with db.session() as session:
        assert queue.claim(session, "w", lease_seconds=LEASE, kinds_=["train"]) is None
    assert _claimed(db)[0] == job_id
    assert _claim(db) is None  # leased jobs are not handed out twice


def test_claim_order_is_priority_then_age(db: Database) -> None:
    owner = make_user(db)
    ids = {name: _enqueue(db, owner, priority=p) for name, p in CLAIM_ORDER_INPUT}
    order = []
    while (job := _claim(db)) is not None:
        order.append(job.id)
    assert order == [ids[name] for name in CLAIM_ORDER_EXPECTED]


# (name, priority) in the order they are queued; then the order they must be claimed in
CLAIM_ORDER_INPUT = [("low", -1), ("old", 0), ("urgent", 5), ("new", 0), ("urgent2", 5)]
CLAIM_ORDER_EXPECTED = ["urgent", "urgent2", "old", "new", "low"]


def test_every_claim_has_a_new_token_and_counts_an_attempt(db: Database) -> None:
    job_id = make_job(db, make_user(db)).id
    tokens = []
    for attempt in (1, 2, 3):
        claimed = _claim(db, worker=f"w{attempt}")
        assert claimed is not None
        assert (claimed.id, claimed.attempts) == (job_id, attempt)
        assert (claimed.status, claimed.worker_id) == ("leased", f"w{attempt}")
        assert claimed.lease_expires_at is not None
        assert claimed.lease_expires_at > utcnow()
        tokens.append(claimed.lease_token)
        _expire(db, job_id)
        _reap(db)
    assert None not in tokens
    assert len(set(tokens)) == 3


# fencing --------------------------------------------------------------------------------

STALE: list[tuple[str, Callable[[Session, int, str], object]]] = [
    ("start", lambda s, job_id, token: queue.start(s, job_id, token)),
    ("heartbeat", lambda s, job_id, token: queue.heartbeat(s, job_id, token, lease_seconds=LEASE)),
    ("complete", lambda s, job_id, token: queue.complete(s, job_id, token, {"stale": True})),
    ("fail", lambda s, job_id, token: queue.fail(s, job_id, token, "stale", retryable=True)),
    (
        "add_event",
        lambda s, job_id, token: queue.add_event(s, job_id, token, {"x": 1}, lease_seconds=LEASE),
    ),
]


@pytest.mark.parametrize("new_attempt_started", [False, True], ids=["leased", "running"])
@pytest.mark.parametrize(("operation", "apply"), STALE, ids=[name for name, _ in STALE])
def test_a_stale_token_is_refused_and_changes_nothing(
    db: Database,
    operation: str,
    apply: Callable[[Session, int, str], object],
    new_attempt_started: bool,
) -> None:
    make_job(db, make_user(db))
    job_id, old_token = _claimed(db, "slow-worker")
    _expire(db, job_id)
    assert _reap(db) == ([job_id], [])
    _, new_token = _claimed(db, "new-worker")
    if new_attempt_started:
        _start(db, job_id, new_token)
    before, events = _row(db, job_id), _event_count(db, job_id)
    with db.session() as session, pytest.raises(Conflict) as refused:
        apply(session, job_id, old_token)
    assert refused.value.code == "stale_attempt", operation
    assert _row(db, job_id) == before
    assert _event_count(db, job_id) == events
    with db.session() as session:  # the attempt that holds the lease is unaffected
        queue.heartbeat(session, job_id, new_token, lease_seconds=LEASE)


def test_unknown_job_is_not_found(db: Database) -> None:
    with db.session() as session, pytest.raises(NotFound):
        queue.start(session, 999_999, "0" * 32)


# leases and the reaper ------------------------------------------------------------------


def test_reaper_requeues_an_expired_lease_then_fails_it_after_max_attempts(db: Database) -> None:
    job_id = _enqueue(db, make_user(db), max_attempts=2)
    _claimed(db)
    assert _reap(db) == ([], [])  # a live lease is left alone
    _expire(db, job_id)
    assert _reap(db) == ([job_id], [])
    requeued = _get(db, job_id)
    assert (requeued.status, requeued.attempts, requeued.lease_token) == ("queued", 1, None)
    assert requeued.worker_id is None
    assert "heartbeats" in (requeued.error or "")

    assert _claimed(db)[0] == job_id
    assert _get(db, job_id).attempts == 2
    _expire(db, job_id)
    assert _reap(db) == ([], [job_id])
    failed = _get(db, job_id)
    assert (failed.status, failed.attempts, failed.lease_token) == ("failed", 2, None)
    assert "heartbeats" in (failed.error or "")
    assert "max_attempts" in (failed.error or "")
    assert failed.finished_at is not None
    assert _claim(db) is None


def test_reaper_takes_back_running_jobs_too(db: Database) -> None:
    make_job(db, make_user(db))
    job_id, token = _claimed(db)
    _start(db, job_id, token)
    _expire(db, job_id)
    assert _reap(db) == ([job_id], [])
    assert _get(db, job_id).status == "queued"


# failures, retries, cancellation ---------------------------------------------------------


def test_a_retryable_failure_requeues_while_attempts_remain(db: Database) -> None:
    job_id = _enqueue(db, make_user(db), max_attempts=2)
    for attempt, status in ((1, "queued"), (2, "failed")):
        _, token = _claimed(db)
        _start(db, job_id, token)
        with db.session() as session:
            job = queue.fail(session, job_id, token, f"flaky {attempt}", retryable=True)
        assert (job.status, job.attempts, job.error) == (status, attempt, f"flaky {attempt}")
        assert job.lease_token is None
    assert _get(db, job_id).finished_at is not None
    assert _claim(db) is None


def test_a_failure_that_is_not_retryable_is_final(db: Database) -> None:
    make_job(db, make_user(db))
    job_id, token = _claimed(db)
    with db.session() as session:
        job = queue.fail(session, job_id, token, "bad payload")
    assert (job.status, job.attempts, job.worker_id) == ("failed", 1, "w1")
    assert _claim(db) is None


@pytest.mark.parametrize("started", [False, True], ids=["queued", "running"])
def test_cancel(db: Database, started: bool) -> None:
    owner = make_user(db)
    job_id = make_job(db, owner).id
    token = ""
    if started:
        _, token = _claimed(db)
        _start(db, job_id, token)
    with db.session() as session:
        job = queue.cancel(session, owner, job_id)
    assert (job.status, job.lease_token) == ("cancelled", None)
    assert job.finished_at is not None
    assert _claim(db) is None
    if started:  # the worker hears at its next heartbeat that it must stop
        with db.session() as session, pytest.raises(Conflict) as refused:
            queue.heartbeat(session, job_id, token, lease_seconds=LEASE)
        assert refused.value.code == "illegal_transition"
        assert "cancelled" in refused.value.message


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_retry_gives_a_fresh_attempt_budget(db: Database, how: str) -> None:
    owner = make_user(db)
    job_id = _enqueue(db, owner, max_attempts=1)
    _, token = _claimed(db)
    _start(db, job_id, token)
    with db.session() as session:
        if how == "failed":
            queue.fail(session, job_id, token, "boom")
        else:
            queue.cancel(session, owner, job_id)
    with db.session() as session:
        job = queue.retry(session, owner, job_id)
    assert (job.status, job.attempts, job.error, job.result, job.finished_at) == (
        "queued",
        0,
        None,
        None,
        None,
    )
    again = _claim(db)
    assert again is not None
    assert (again.id, again.attempts) == (job_id, 1)


# events and ownership --------------------------------------------------------------------


def test_events_get_consecutive_seq_across_attempts(db: Database) -> None:
    owner = make_user(db)
    job_id = make_job(db, owner).id
    _, token = _claimed(db)
    with db.session() as session:
        for step in (1, 2, 3):
            queue.add_event(session, job_id, token, {"step": step}, lease_seconds=LEASE)
    _expire(db, job_id)
    _reap(db)
    _, token = _claimed(db)
    with db.session() as session:
        queue.add_event(session, job_id, token, {"step": 1}, lease_seconds=LEASE)
    with db.session() as session:
        events = queue.events_after(session, owner, job_id, after=1)
    assert [(e.seq, e.attempt, e.data["step"]) for e in events] == [(2, 1, 2), (3, 1, 3), (4, 2, 1)]


def test_an_event_extends_the_lease(db: Database) -> None:
    make_job(db, make_user(db))
    job_id, token = _claimed(db)
    _expire(db, job_id)
    with db.session() as session:
        queue.add_event(session, job_id, token, {"step": 1}, lease_seconds=LEASE)
    assert _reap(db) == ([], [])
    expires = _get(db, job_id).lease_expires_at
    assert expires is not None
    assert expires > utcnow()


OWNER_ONLY: list[tuple[str, Callable[[Session, User, int], object]]] = [
    ("get_own", lambda s, user, job_id: queue.get_own(s, user, job_id)),
    ("events_after", lambda s, user, job_id: queue.events_after(s, user, job_id)),
    ("cancel", lambda s, user, job_id: queue.cancel(s, user, job_id)),
    ("retry", lambda s, user, job_id: queue.retry(s, user, job_id)),
]


@pytest.mark.parametrize(("name", "call"), OWNER_ONLY, ids=[name for name, _ in OWNER_ONLY])
def test_another_users_job_is_not_found(
    db: Database, name: str, call: Callable[[Session, User, int], object]
) -> None:
    owner, intruder = make_user(db), make_user(db)
    job_id = make_job(db, owner).id
    before = _row(db, job_id)
    with db.session() as session, pytest.raises(NotFound) as refused:
        call(session, intruder, job_id)
    assert refused.value.param == "job_id", name
    assert _row(db, job_id) == before
    with db.session() as session:
        assert queue.list_own(session, intruder) == []


def test_completion_is_idempotent_for_the_attempt_that_succeeded(db: Database) -> None:
    from loraloop.jobs import queue as q
    from tests.factories import make_job as _make_job
    from tests.factories import make_user as _make_user

    _make_job(db, _make_user(db))
    with db.session() as session:
        job = q.claim(session, "w", lease_seconds=60)
        assert job is not None
        assert job.lease_token is not None
        token = job.lease_token
        q.start(session, job.id, token)
        first = q.complete(session, job.id, token, {"ok": 1})
        again = q.complete(session, job.id, token, {"ok": 2})  # a retried request
    assert first.status == again.status == "succeeded"
    assert again.result == {"ok": 1}  # the repeat changed nothing
