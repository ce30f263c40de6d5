"""The durable job queue. Every state change is one guarded UPDATE: the ``WHERE`` names the
states it may start from and, for a worker's calls, the attempt (fencing) token, so a stale
worker can never overwrite a newer attempt (the procrastinate / PgQueuer pattern).

On PostgreSQL a claim locks its row with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers
never wait on each other; SQLite serialises writers with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, null, select, update
from sqlalchemy.orm import Session

from loraloop.db.engine import utcnow
from loraloop.db.tables import Job, JobEvent, User
from loraloop.errors import Conflict, NotFound
from loraloop.jobs import kinds
from loraloop.jobs.states import ACTIVE, OPERATIONS, TERMINAL, Status

__all__ = [
    "FINISHED",
    "Finished",
    "add_event",
    "cancel",
    "claim",
    "complete",
    "enqueue",
    "events_after",
    "fail",
    "get_own",
    "hand_over",
    "heartbeat",
    "list_own",
    "reap",
    "retry",
    "start",
]


#: ``session.info`` key listing the jobs this session's transaction brought to an end state, so
#: an observer (``/metrics``) can count them once the transaction commits, and only then.
FINISHED = "loraloop.jobs.finished"


@dataclass(frozen=True)
class Finished:
    """A job that reached ``succeeded``, ``failed`` or ``cancelled``."""

    kind: str
    status: str
    seconds: float | None
    """From its (last) start to its end; None for a job that never started."""


def _note_finished(
    session: Session, kind: str, status: str, started: datetime | None, ended: datetime | None
) -> None:
    if status not in TERMINAL:
        return
    seconds = (ended - started).total_seconds() if started and ended else None
    session.info.setdefault(FINISHED, []).append(Finished(kind, str(status), seconds))


def enqueue(
    session: Session,
    owner: User,
    kind: str,
    payload: dict[str, Any],
    *,
    priority: int = 0,
    max_attempts: int = 3,
    submitted: bool = True,
) -> Job:
    """Validate the payload for its kind and queue the job."""
    job_kind = kinds.get(kind, submitted=submitted)
    job = Job(
        owner_id=owner.id,
        kind=job_kind.name,
        status=Status.queued,
        payload=kinds.validate_payload(job_kind, payload),
        priority=priority,
        attempts=0,
        max_attempts=max_attempts,
    )
    session.add(job)
    session.flush()
    return job


def get_own(session: Session, owner: User, job_id: int) -> Job:
    """The job if ``owner`` owns it; another user's job is "not found", never "forbidden"."""
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner.id:
        raise NotFound(f"job {job_id} not found", param="job_id")
    return job


def list_own(
    session: Session, owner: User, *, status: str | None = None, limit: int = 50
) -> list[Job]:
    query = select(Job).where(Job.owner_id == owner.id)
    if status is not None:
        query = query.where(Job.status == Status(status))
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def _from(operation: str) -> ColumnElement[bool]:
    return Job.status.in_([s.value for s in OPERATIONS[operation][0]])


def _refuse(
    session: Session, job_id: int, operation: str, token: str | None
) -> Conflict | NotFound:
    """Explain why a guarded UPDATE matched no row. A worker whose lease another attempt now
    holds hears ``stale_attempt`` whatever state that attempt has reached; otherwise a job in
    the wrong state gives ``illegal_transition``."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return NotFound(f"job {job_id} not found", param="job_id")
    allowed = [s.value for s in OPERATIONS[operation][0]]
    superseded = token is not None and job.lease_token not in (None, token)
    if job.status not in allowed and not superseded:
        return Conflict(
            f"job {job_id} is {job.status}; {operation} needs it to be {' or '.join(allowed)}",
            code="illegal_transition",
        )
    return Conflict(
        f"job {job_id}: attempt token {token!r} is stale (attempt {job.attempts} holds the "
        "lease); this worker's result is discarded",
        code="stale_attempt",
    )


def _guarded(
    session: Session,
    job_id: int,
    operation: str,
    values: dict[str, Any],
    *,
    token: str | None = None,
    extra: Iterable[ColumnElement[bool]] = (),
) -> Job:
    conditions = [Job.id == job_id, _from(operation), *extra]
    if token is not None:
        conditions.append(Job.lease_token == token)
    job = session.scalar(
        update(Job)
        .where(*conditions)
        .values(**values)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    if job is None:
        raise _refuse(session, job_id, operation, token)
    return job


def claim(
    session: Session,
    worker_id: str,
    *,
    lease_seconds: int,
    kinds_: Iterable[str] | None = None,
    job_id: int | None = None,
) -> Job | None:
    """Lease the next queued job (highest priority, oldest first), or None when idle;
    ``job_id`` leases that job only (None when someone else got it first)."""
    now = utcnow()
    candidate = select(Job.id).where(Job.status == Status.queued)
    if job_id is not None:
        candidate = candidate.where(Job.id == job_id)
    if kinds_ is not None:
        candidate = candidate.where(Job.kind.in_(list(kinds_)))
    candidate = (
        candidate.order_by(Job.priority.desc(), Job.id).limit(1).with_for_update(skip_locked=True)
    )
    return session.scalar(
        update(Job)
        .where(Job.id == candidate.scalar_subquery(), Job.status == Status.queued)
        .values(
            status=Status.leased,
            lease_token=uuid.uuid4().hex,
            worker_id=worker_id,
            node_id=None,
            attempts=Job.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def start(session: Session, job_id: int, token: str) -> Job:
    return _guarded(
        session, job_id, "start", {"status": Status.running, "started_at": utcnow()}, token=token
    )


def heartbeat(session: Session, job_id: int, token: str, *, lease_seconds: int) -> Job:
    """Extend the lease. A Conflict tells the worker to stop: cancelled, or lease lost."""
    now = utcnow()
    return _guarded(
        session,
        job_id,
        "heartbeat",
        {"heartbeat_at": now, "lease_expires_at": now + timedelta(seconds=lease_seconds)},
        token=token,
    )


def _finished(status: Status, **values: Any) -> dict[str, Any]:
    return {
        "status": status,
        "lease_token": None,
        "lease_expires_at": None,
        "finished_at": utcnow(),
        **values,
    }


def complete(session: Session, job_id: int, token: str, result: dict[str, Any]) -> Job:
    """Record success. Idempotent for the attempt that succeeded: the job keeps that attempt's
    token, so a worker repeating a completion whose response it lost gets the job back, while
    any other token or state is refused without changing anything."""
    try:
        job = _guarded(
            session,
            job_id,
            "complete",
            {**_finished(Status.succeeded, result=result, error=None), "lease_token": token},
            token=token,
        )
    except Conflict:
        done = session.get(Job, job_id)
        if done is not None and done.status == Status.succeeded and done.lease_token == token:
            return done
        raise
    _note_finished(session, job.kind, job.status, job.started_at, job.finished_at)
    hook = kinds.success_hook(kinds.get(job.kind))
    if hook is not None:
        hook(session, job)
    return job


def hand_over(
    session: Session,
    job_id: int,
    token: str,
    *,
    to_token: str,
    hold_seconds: int,
    result: dict[str, Any],
) -> Job:
    """A running job's worker is done but its result waits for a check: the server takes the
    lease (a new token, a long hold) and keeps the claimed result; ``complete`` or ``fail``
    with ``to_token`` ends it."""
    now = utcnow()
    return _guarded(
        session,
        job_id,
        "hand_over",
        {
            "lease_token": to_token,
            "worker_id": "verifier",
            "result": result,
            "heartbeat_at": now,
            "lease_expires_at": now + timedelta(seconds=hold_seconds),
        },
        token=token,
    )


def fail(session: Session, job_id: int, token: str, error: str, *, retryable: bool = False) -> Job:
    """Record a failure; a retryable one goes back to the queue while attempts remain."""
    again = and_(literal(retryable), Job.attempts < Job.max_attempts)
    job = _guarded(
        session,
        job_id,
        "fail",
        {
            "status": case(
                (again, literal(Status.queued.value)), else_=literal(Status.failed.value)
            ),
            "finished_at": case((again, null()), else_=utcnow()),
            "worker_id": case((again, null()), else_=Job.worker_id),
            "lease_token": None,
            "lease_expires_at": None,
            "error": error,
        },
        token=token,
    )
    _note_finished(session, job.kind, job.status, job.started_at, job.finished_at)
    return job


def cancel(session: Session, owner: User, job_id: int) -> Job:
    get_own(session, owner, job_id)
    job = _guarded(
        session, job_id, "cancel", _finished(Status.cancelled, error="cancelled by owner")
    )
    _note_finished(session, job.kind, job.status, job.started_at, job.finished_at)
    return job


def retry(session: Session, owner: User, job_id: int) -> Job:
    """Queue a failed or cancelled job again with a fresh attempt budget."""
    get_own(session, owner, job_id)
    return _guarded(
        session,
        job_id,
        "retry",
        {
            "status": Status.queued,
            "attempts": 0,
            "error": None,
            "finished_at": None,
            "worker_id": None,
            "result": None,
        },
    )


def reap(session: Session) -> tuple[list[int], list[int]]:
    """Take back expired leases: re-queue while attempts remain, else fail with the reason.
    Returns (requeued ids, failed ids)."""
    now = utcnow()
    expired = [Job.status.in_([s.value for s in ACTIVE]), Job.lease_expires_at < now]
    failed = session.execute(
        update(Job)
        .where(*expired, Job.attempts >= Job.max_attempts)
        .values(
            _finished(
                Status.failed,
                error="the worker stopped sending heartbeats and no attempts are left "
                "(max_attempts reached)",
            )
        )
        .returning(Job.id, Job.kind, Job.started_at, Job.finished_at)
        .execution_options(synchronize_session=False)
    ).all()
    for _id, kind, started, ended in failed:
        _note_finished(session, kind, Status.failed, started, ended)
    requeued = session.scalars(
        update(Job)
        .where(*expired, Job.attempts < Job.max_attempts)
        .values(
            status=Status.queued,
            lease_token=None,
            lease_expires_at=None,
            worker_id=None,
            error="lease expired: the worker stopped sending heartbeats; retrying",
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).all()
    return list(requeued), [row.id for row in failed]


def add_event(
    session: Session, job_id: int, token: str, data: dict[str, Any], *, lease_seconds: int
) -> JobEvent:
    """Append a progress event from the attempt that holds the lease (it also extends it)."""
    job = heartbeat(session, job_id, token, lease_seconds=lease_seconds)
    seq = session.scalar(
        select(func.coalesce(func.max(JobEvent.seq), 0)).where(JobEvent.job_id == job_id)
    )
    event = JobEvent(job_id=job_id, seq=(seq or 0) + 1, attempt=job.attempts, data=data)
    session.add(event)
    session.flush()
    return event


def events_after(
    session: Session, owner: User, job_id: int, after: int = 0, limit: int = 500
) -> list[JobEvent]:
    get_own(session, owner, job_id)
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
    )
