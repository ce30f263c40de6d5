"""The worker job protocol: how a compute provider (``loraloop worker``) leases and reports jobs.

::

    POST /api/worker/register              a node reports what it can run -> its node id
    POST /api/worker/claim                 -> 200 a leased job with its lease token | 204 idle
                                              (``wait_seconds``: long-poll until one comes)
    GET  /api/worker/jobs/{id}/inputs/{name}   an input file (X-Lease-Token header)
    GET|PUT /api/worker/uploads/{id}/{name}    resumable upload of a result file
    POST /api/worker/jobs/{id}/start       leased  -> running
    POST /api/worker/jobs/{id}/heartbeat   extends the lease; 409 means stop (cancelled, lost)
    POST /api/worker/jobs/{id}/events      a progress event (also extends the lease)
    POST /api/worker/jobs/{id}/complete    running -> succeeded
    POST /api/worker/jobs/{id}/fail        -> failed, or queued again when retryable

Authenticated by a bearer API key with the ``worker`` scope (an admin's: a trusted worker, whose
results are taken as they are) or the ``provider`` scope (anyone's: a compute provider's node,
whose results are verified before they count; see :mod:`loraloop.providers.work`); no
cookies. Every call after the claim carries the ``lease_token`` the claim returned: it is the
fencing token that stops a worker whose lease was taken back from overwriting a newer attempt
(``409 stale_attempt``), and a node can never act on another node's job (``409``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from loraloop.api.deps import AppDatabase, AppSettings, DbSession, bearer_secret
from loraloop.api.schemas import Strict
from loraloop.db.tables import ApiKey, Job, ProviderNode, User
from loraloop.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unauthenticated,
)
from loraloop.identity import api_keys
from loraloop.jobs import queue
from loraloop.providers import nodes, work

router = APIRouter(prefix="/api/worker", tags=["worker"])

_EVENT_BYTES = 16 * 1024
_RESULT_BYTES = 4 * 1024 * 1024
"""An evaluation's result holds every case's answer: 2,000 cases × 4 versions of 64-token
answers is about 3 MiB of JSON."""
_TOKEN = r"^[0-9a-f]{1,64}$"  # noqa: S105 (a pattern, not a secret)


def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > limit:
        raise ValueError(f"is {size} bytes as JSON; at most {limit} are allowed")
    return value


# schemas --------------------------------------------------------------------------------


class ClaimRequest(Strict):
    worker_id: str | None = Field(
        default=None, min_length=1, max_length=80, description="A trusted worker's name."
    )
    node_id: int | None = Field(default=None, ge=1, description="A registered node's id.")
    kinds: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
        default=None, min_length=1, max_length=50, description="Only these job kinds."
    )
    wait_seconds: float = Field(
        default=0, ge=0, le=30, description="Long-poll: wait this long for a job to come."
    )

    @model_validator(mode="after")
    def _one_identity(self) -> ClaimRequest:
        if (self.worker_id is None) == (self.node_id is None):
            raise ValueError("give worker_id (a trusted worker) or node_id (a registered node)")
        return self


class NodeRegistration(Strict):
    name: str = Field(min_length=1, max_length=80)
    capabilities: dict[str, Any] = Field(
        description="cpu_count, memory_gb, gpus [{name, memory_gb}], torch, cuda, loraloop"
    )


class NodeRegistered(BaseModel):
    node_id: int
    trusted: bool
    lease_seconds: int


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


@dataclass(frozen=True)
class Caller:
    user: User
    key: ApiKey
    trusted: bool
    """An admin's ``worker`` key; a ``provider`` key is not."""


def _worker(request: Request, db: AppDatabase) -> Caller:
    secret = bearer_secret(request)
    if secret is None:
        raise Unauthenticated(
            "send an API key with the 'provider' (or, for admins, 'worker') scope as "
            "'Authorization: Bearer ll_...'",
            code="not_signed_in",
        )
    user, key = api_keys.authenticate(db, secret, scope="worker_api")
    if "worker" in key.scopes:
        if user.role != "admin":  # the key was made while its owner was an admin
            raise PermissionDenied(
                "only an admin's key may act as a worker", code="admin_only_scope"
            )
        return Caller(user, key, trusted=True)
    return Caller(user, key, trusted=False)


WorkerUser = Annotated[Caller, Depends(_worker)]
LeaseHeader = Annotated[str, Header(alias="X-Lease-Token", pattern=_TOKEN)]


def _node_of(session: Session, caller: Caller, job_id: int) -> ProviderNode | None:
    """The node holding the job, which must be one of the caller's (409 otherwise); None for a
    job no node holds (a trusted worker's)."""
    job = session.get(Job, job_id)
    if job is None or job.node_id is None:
        if job is not None and not caller.trusted:
            raise Conflict(f"job {job_id} is not leased to any of your nodes", code="not_your_job")
        return None
    node = session.get(ProviderNode, job.node_id)
    if node is None or node.owner_id != caller.user.id:
        raise Conflict(f"job {job_id} is not leased to any of your nodes", code="not_your_job")
    return node


# routes ---------------------------------------------------------------------------------


@router.post("/register")
def register(
    body: NodeRegistration, caller: WorkerUser, session: DbSession, settings: AppSettings
) -> NodeRegistered:
    """Register a node (again after a restart: same name, same id) with what it can run."""
    node = nodes.register(
        session,
        caller.user,
        caller.key,
        name=body.name,
        capabilities=body.capabilities,
        trusted=caller.trusted,
    )
    return NodeRegistered(
        node_id=node.id, trusted=node.trusted, lease_seconds=settings.job_lease_seconds
    )


@router.post(
    "/claim",
    response_model=ClaimedJob,
    responses={204: {"description": "Nothing is queued; ask again later."}},
)
def claim(
    body: ClaimRequest, caller: WorkerUser, db: AppDatabase, settings: AppSettings
) -> ClaimedJob | Response:
    """Lease the next queued job this worker may run (highest priority, oldest first), or 204
    when none comes within ``wait_seconds``. Provider nodes name their ``node_id`` and get
    only jobs their owner allowed on community compute, with inputs to download by hash."""
    if body.node_id is None and not caller.trusted:
        raise InvalidRequest(
            "a provider key claims for a registered node: register it, then send its node_id",
            param="node_id",
        )
    deadline = time.monotonic() + body.wait_seconds
    lease = settings.job_lease_seconds
    while True:
        with db.session() as session:  # one transaction per look, so each sees new jobs
            if body.node_id is not None:
                node = nodes.seen(session, caller.user, body.node_id)
                job = work.claim(session, settings, node, body.kinds)
                payload = work.inputs(node, job) if job is not None else None
            else:
                # Remote workers may be the only ones polling (``loraloop serve``), so expired
                # leases are taken back here, before the claim, or a dead worker's job would
                # never run again.
                work.reap(session)
                job = queue.claim(
                    session, body.worker_id or "worker", lease_seconds=lease, kinds_=body.kinds
                )
                payload = job.payload if job is not None else None
            if job is not None and payload is not None:
                assert job.lease_token is not None
                return ClaimedJob(
                    id=job.id,
                    kind=job.kind,
                    payload=payload,
                    attempt=job.attempts,
                    lease_token=job.lease_token,
                    lease_seconds=lease,
                )
        if time.monotonic() >= deadline:
            return Response(status_code=204)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


@router.get("/jobs/{job_id}/inputs/{name:path}")
def input_file(
    job_id: int, name: str, token: LeaseHeader, caller: WorkerUser, session: DbSession
) -> FileResponse:
    """Download one input of a job you hold (its sha256 is in the claimed payload)."""
    node = _node_of(session, caller, job_id)
    if node is None:
        raise NotFound("trusted workers read inputs from the shared data folder", param="name")
    path = work.input_file(session, node, job_id, token, name)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/uploads/{job_id}/{name:path}")
def upload_state(
    job_id: int,
    name: str,
    token: LeaseHeader,
    caller: WorkerUser,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, int]:
    """How many bytes of an upload arrived, so an interrupted upload resumes there."""
    node = _provider_node(session, caller, job_id)
    return {"size": work.upload(session, settings, node, job_id, token, name, 0, None)}


@router.put("/uploads/{job_id}/{name:path}")
async def upload_chunk(
    job_id: int,
    name: str,
    request: Request,
    token: LeaseHeader,
    caller: WorkerUser,
    db: AppDatabase,
    settings: AppSettings,
    offset: int = Query(ge=0),
) -> dict[str, int]:
    """Append a chunk (at most 8 MiB) at ``offset``, which must equal the bytes received."""
    chunk = bytearray()
    async for piece in request.stream():
        chunk += piece
        if len(chunk) > work.CHUNK:
            raise PayloadTooLarge(f"a chunk has at most {work.CHUNK} bytes")

    def store() -> int:  # database and disk work off the event loop
        with db.session() as session:
            node = _provider_node(session, caller, job_id)
            return work.upload(session, settings, node, job_id, token, name, offset, bytes(chunk))

    return {"size": await run_in_threadpool(store)}


def _provider_node(session: Session, caller: Caller, job_id: int) -> ProviderNode:
    node = _node_of(session, caller, job_id)
    if node is None:
        raise Conflict(f"job {job_id} is not leased to any of your nodes", code="not_your_job")
    return node


@router.post("/jobs/{job_id}/start")
def start(job_id: int, body: Lease, caller: WorkerUser, session: DbSession) -> LeaseState:
    """Mark a leased job as running."""
    _node_of(session, caller, job_id)
    return LeaseState.model_validate(queue.start(session, job_id, body.lease_token))


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(
    job_id: int, body: Lease, caller: WorkerUser, session: DbSession, settings: AppSettings
) -> LeaseState:
    """Extend the lease. A 409 tells the worker to stop: the job was cancelled or re-leased."""
    _node_of(session, caller, job_id)
    lease = settings.job_lease_seconds
    job = queue.heartbeat(session, job_id, body.lease_token, lease_seconds=lease)
    return LeaseState.model_validate(job)


@router.post("/jobs/{job_id}/events", status_code=201)
def add_event(
    job_id: int, body: EventCreate, caller: WorkerUser, session: DbSession, settings: AppSettings
) -> EventRecorded:
    """Append a progress event to the job's stream; it extends the lease like a heartbeat."""
    _node_of(session, caller, job_id)
    event = queue.add_event(
        session, job_id, body.lease_token, body.data, lease_seconds=settings.job_lease_seconds
    )
    return EventRecorded(seq=event.seq, attempt=event.attempt)


@router.post("/jobs/{job_id}/complete")
def complete(
    job_id: int, body: Completion, caller: WorkerUser, session: DbSession, settings: AppSettings
) -> LeaseState:
    """Record the result of a running job; the lease ends. A provider node names its uploads
    in ``result.files`` (name → sha256), or sends an evaluation's answers, scores and losses
    (which the server rescores at once); the job then waits for its verification."""
    node = _node_of(session, caller, job_id)
    if node is None:
        job = queue.complete(session, job_id, body.lease_token, body.result)
    else:
        job = work.complete(session, settings, node, job_id, body.lease_token, body.result)
    return LeaseState.model_validate(job)


@router.post("/jobs/{job_id}/fail")
def fail(job_id: int, body: Failure, caller: WorkerUser, session: DbSession) -> LeaseState:
    """Record a failure; a retryable one is queued again while attempts remain."""
    _node_of(session, caller, job_id)
    job = queue.fail(session, job_id, body.lease_token, body.error, retryable=body.retryable)
    return LeaseState.model_validate(job)
