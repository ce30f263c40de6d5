"""The queue obeys ``OPERATIONS`` exactly: every operation from every status either leads to
one of its targets or is refused with ``illegal_transition`` and leaves the row untouched."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import Job, User
from loraloop.errors import Conflict
from loraloop.jobs import queue
from loraloop.jobs.states import OPERATIONS, Status
from tests.factories import make_job, make_user

TOKEN = "0123456789abcdef0123456789abcdef"

Apply = Callable[[Session, User, int], Job | None]


def _claim(session: Session, _owner: User, job_id: int) -> Job | None:
    job = queue.claim(session, "other-worker", lease_seconds=30)
    assert job is None or job.id == job_id  # the only job in the table
    return job


def _reap(session: Session, _owner: User, job_id: int) -> Job | None:
    requeued, failed = queue.reap(session)
    return session.get(Job, job_id) if job_id in requeued + failed else None


# operation -> how the test applies it, with the right token; None means "did nothing"
# (claim and reap pick their own rows, so they refuse by finding none instead of raising)
APPLY: dict[str, Apply] = {
    "claim": _claim,
    "start": lambda s, _o, job_id: queue.start(s, job_id, TOKEN),
    "heartbeat": lambda s, _o, job_id: queue.heartbeat(s, job_id, TOKEN, lease_seconds=30),
    "complete": lambda s, _o, job_id: queue.complete(s, job_id, TOKEN, {"ok": True}),
    "fail": lambda s, _o, job_id: queue.fail(s, job_id, TOKEN, "boom"),
    "hand_over": lambda s, _o, job_id: queue.hand_over(
        s, job_id, TOKEN, to_token="f" * 32, hold_seconds=60, result={"claimed": True}
    ),
    "reap": _reap,
    "cancel": lambda s, owner, job_id: queue.cancel(s, owner, job_id),
    "retry": lambda s, owner, job_id: queue.retry(s, owner, job_id),
}
SELECTORS = {"claim", "reap"}

CASES = sorted(OPERATIONS)


def _force(db: Database, job_id: int, status: Status) -> None:
    """Put the job in ``status`` holding ``TOKEN``, with a lease that has already expired."""
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=status,
                lease_token=TOKEN,
                worker_id="worker-1",
                attempts=1,
                max_attempts=3,
                lease_expires_at=utcnow() - timedelta(seconds=5),
            )
        )


def _row(db: Database, job_id: int) -> tuple[Any, ...]:
    with db.session() as session:
        return tuple(session.execute(select(Job.__table__).where(Job.id == job_id)).one())


def test_every_operation_has_a_case() -> None:
    assert set(APPLY) == set(OPERATIONS)


@pytest.mark.parametrize("operation", CASES)
def test_operation_from_every_status(db: Database, operation: str) -> None:
    sources, targets = OPERATIONS[operation]
    owner = make_user(db)
    problems: list[str] = []
    for status in Status:
        job_id = make_job(db, owner).id
        _force(db, job_id, status)
        before = _row(db, job_id)
        refusal: Conflict | None = None
        with db.session() as session:  # commits: a refused statement must change nothing
            try:
                job = APPLY[operation](session, owner, job_id)
            except Conflict as exc:
                refusal, job = exc, None
        after = _row(db, job_id)
        _park(db, job_id)
        if status in sources:
            if job is None or job.status not in targets:
                problems.append(f"{status}: got {job and job.status} ({refusal}), want {targets}")
            elif after == before:
                problems.append(f"{status}: allowed but the row did not change")
            continue
        if operation == "complete" and status == Status.succeeded:
            # idempotent completion: the attempt that succeeded gets the job back, unchanged
            if job is None or job.status != Status.succeeded:
                problems.append(f"{status}: a repeated completion should return the job")
        elif operation in SELECTORS:
            if job is not None:
                problems.append(f"{status}: {operation} took a job it must not touch")
        elif refusal is None or refusal.code != "illegal_transition":
            problems.append(f"{status}: want illegal_transition, got {refusal and refusal.code}")
        if after != before:
            changed = [
                str(c.name)
                for c, x, y in zip(Job.__table__.c, before, after, strict=True)
                if x != y
            ]
            problems.append(f"{status}: refused but changed {changed}")
    assert not problems, f"{operation}:\n" + "\n".join(problems)


def _park(db: Database, job_id: int) -> None:
    """Finish the job so claim and reap cannot pick it up while the next status is tried."""
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=Status.succeeded))
