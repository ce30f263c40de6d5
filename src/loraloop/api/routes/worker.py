"""The worker job protocol: how a compute provider (``loraloop worker``) leases and reports jobs.

::

    POST /api/worker/claim                 -> 200 a leased job with its lease token | 204 idle
    POST /api/worker/jobs/{id}/start       leased  -> running
    POST /api/worker/jobs/{id}/heartbeat   extends the lease; 409 means stop (cancelled, lost)
    POST /api/worker/jobs/{id}/events      a progress event (also extends the lease)
    POST /api/worker/jobs/{id}/complete    running -> succeeded
    POST /api/worker/jobs/{id}/fail        -> failed, or queued again when retryable

Authenticated by a bearer API key with the ``worker`` scope, whose owner must be an admin; no
cookies. Every call after the claim carries the ``lease_token`` the claim returned: it is the
fencing token that stops a worker whose lease was taken back from overwriting a newer attempt
(``409 stale_attempt``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loraloop.api.deps import AppDatabase, AppSettings, DbSession, bearer_secret
from loraloop.api.schemas import Strict
from loraloop.db.tables import User
from loraloop.errors import PermissionDenied, Unauthenticated
from loraloop.identity import api_keys
from loraloop.jobs import queue

router = APIRouter(prefix="/api/worker", tags=["worker"])

_EVENT_BYTES = 16 * 1024
_RESULT_BYTES = 256 * 1024
_TOKEN = r"^[0-9a-f]{1,64}$"  # noqa: S105 (a pattern, not a secret)


def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > limit:
        raise ValueError(f"is {size} bytes as JSON; at most {limit} are allowed")
    return value


# schemas --------------------------------------------------------------------------------


class ClaimRequest(Strict):
    worker_id: str = Field(min_length=1, max_length=80)
    kinds: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
        default=None, min_length=1, max_length=50, description="Only these job kinds."
    )


class Lease(Strict):
    lease_token: str = Field(pattern=_TOKEN, description="The token the claim returned.")


class EventCreate(Lease):
    data: dict[str, Any] = Field(description="Any JSON object: step, loss, tokens/s, ETA.")

    @field_validator("data")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded(value, _EVENT_BYTES)


class Completion(Lease):
    result: dict[str, Any]

    @field_validator("result")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded(value, _RESULT_BYTES)


class Failure(Lease):
    error: str = Field(min_length=1, max_length=10_000)
    retryable: bool = Field(
        default=False, description="Queue the job again while it has attempts left."
    )


class ClaimedJob(BaseModel):
    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    lease_token: str
    lease_seconds: int = Field(description="Send a heartbeat well within this many seconds.")


class LeaseState(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: str
    attempt: int = Field(validation_alias="attempts")
    lease_expires_at: datetime | None = Field(description="None once the job has finished.")


class EventRecorded(BaseModel):
    seq: int
    attempt: int


# authentication -------------------------------------------------------------------------


def _worker(request: Request, db: AppDatabase) -> User:
    secret = bearer_secret(request)
    if secret is None:
        raise Unauthenticated(
            "send an API key with the 'worker' scope as 'Authorization: Bearer ll_...'",
            code="not_signed_in",
        )
    user, _key = api_keys.authenticate(db, secret, scope="worker")
    if user.role != "admin":  # the key was made while its owner was an admin
        raise PermissionDenied("only an admin's key may act as a worker", code="admin_only_scope")
    return user


WorkerUser = Annotated[User, Depends(_worker)]


# routes ---------------------------------------------------------------------------------


@router.post(
    "/claim",
    response_model=ClaimedJob,
    responses={204: {"description": "Nothing is queued; ask again later."}},
)
def claim(
    body: ClaimRequest, _user: WorkerUser, session: DbSession, settings: AppSettings
) -> ClaimedJob | Response:
    """Lease the next queued job (highest priority, oldest first), or 204 when there is none."""
    # Remote workers may be the only ones polling (``loraloop serve``), so expired leases are
    # taken back here, before the claim, or a dead worker's job would never run again.
    queue.reap(session)
    lease = settings.job_lease_seconds
    job = queue.claim(session, body.worker_id, lease_seconds=lease, kinds_=body.kinds)
    if job is None:
        return Response(status_code=204)
    assert job.lease_token is not None
    return ClaimedJob(
        id=job.id,
        kind=job.kind,
        payload=job.payload,
        attempt=job.attempts,
        lease_token=job.lease_token,
        lease_seconds=lease,
    )


@router.post("/jobs/{job_id}/start")
def start(job_id: int, body: Lease, _user: WorkerUser, session: DbSession) -> LeaseState:
    """Mark a leased job as running."""
    return LeaseState.model_validate(queue.start(session, job_id, body.lease_token))


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(
    job_id: int, body: Lease, _user: WorkerUser, session: DbSession, settings: AppSettings
) -> LeaseState:
    """Extend the lease. A 409 tells the worker to stop: the job was cancelled or re-leased."""
    lease = settings.job_lease_seconds
    job = queue.heartbeat(session, job_id, body.lease_token, lease_seconds=lease)
    return LeaseState.model_validate(job)


@router.post("/jobs/{job_id}/events", status_code=201)
def add_event(
    job_id: int, body: EventCreate, _user: WorkerUser, session: DbSession, settings: AppSettings
) -> EventRecorded:
    """Append a progress event to the job's stream; it extends the lease like a heartbeat."""
    event = queue.add_event(
        session, job_id, body.lease_token, body.data, lease_seconds=settings.job_lease_seconds
    )
    return EventRecorded(seq=event.seq, attempt=event.attempt)


@router.post("/jobs/{job_id}/complete")
def complete(job_id: int, body: Completion, _user: WorkerUser, session: DbSession) -> LeaseState:
    """Record the result of a running job; the lease ends."""
    return LeaseState.model_validate(queue.complete(session, job_id, body.lease_token, body.result))


@router.post("/jobs/{job_id}/fail")
def fail(job_id: int, body: Failure, _user: WorkerUser, session: DbSession) -> LeaseState:
    """Record a failure; a retryable one is queued again while attempts remain."""
    job = queue.fail(session, job_id, body.lease_token, body.error, retryable=body.retryable)
    return LeaseState.model_validate(job)
