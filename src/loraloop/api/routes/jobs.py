"""Jobs of the signed-in user, with progress as JSON pages or a server-sent event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from loraloop.api.deps import AppDatabase, CurrentUser, DbSession
from loraloop.api.schemas import JobCreate, JobEventPublic, JobPublic
from loraloop.db.tables import User
from loraloop.jobs import queue
from loraloop.jobs.states import TERMINAL

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

Status = Literal["queued", "leased", "running", "succeeded", "failed", "cancelled"]


@router.post("", status_code=201)
def create_job(body: JobCreate, user: CurrentUser, session: DbSession) -> JobPublic:
    """Queue a job of a submittable kind; its payload is validated for that kind."""
    job = queue.enqueue(
        session,
        user,
        body.kind,
        body.payload,
        priority=body.priority,
        max_attempts=body.max_attempts,
    )
    return JobPublic.model_validate(job)


@router.get("")
def list_jobs(
    user: CurrentUser,
    session: DbSession,
    status: Status | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> list[JobPublic]:
    """Your jobs, newest first, optionally filtered by status."""
    return [
        JobPublic.model_validate(j)
        for j in queue.list_own(session, user, status=status, limit=limit)
    ]


@router.get("/{job_id}")
def get_job(job_id: int, user: CurrentUser, session: DbSession) -> JobPublic:
    """One of your jobs (404 for anyone else\'s)."""
    return JobPublic.model_validate(queue.get_own(session, user, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: int, user: CurrentUser, session: DbSession) -> JobPublic:
    """Cancel a queued or running job; a running one's process is stopped within seconds."""
    return JobPublic.model_validate(queue.cancel(session, user, job_id))


@router.post("/{job_id}/retry")
def retry_job(job_id: int, user: CurrentUser, session: DbSession) -> JobPublic:
    """Queue a failed or cancelled job again."""
    return JobPublic.model_validate(queue.retry(session, user, job_id))


@router.get("/{job_id}/events")
def job_events(
    job_id: int,
    user: CurrentUser,
    session: DbSession,
    after: int = Query(0, ge=0),
    limit: int = Query(500, ge=1, le=5000),
) -> list[JobEventPublic]:
    """Progress events with ``seq`` greater than ``after``, oldest first."""
    events = queue.events_after(session, user, job_id, after=after, limit=limit)
    return [JobEventPublic.model_validate(e) for e in events]


@router.get("/{job_id}/stream", response_class=StreamingResponse)
def stream_job(
    job_id: int,
    request: Request,
    user: CurrentUser,
    session: DbSession,
    db: AppDatabase,
    after: int = Query(0, ge=0),
) -> StreamingResponse:
    """Server-sent events: ``event: progress`` per event, then ``event: end`` with the job."""
    queue.get_own(session, user, job_id)  # 404 before the stream starts
    return StreamingResponse(
        _follow(db, user, job_id, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _follow(
    db: AppDatabase, user: User, job_id: int, after: int, request: Request
) -> AsyncIterator[str]:
    quiet = 0
    while not await request.is_disconnected():
        with db.session() as session:
            events = queue.events_after(session, user, job_id, after=after)
            job = queue.get_own(session, user, job_id)
        for event in events:
            after = event.seq
            body = JobEventPublic.model_validate(event).model_dump_json()
            yield f"id: {event.seq}\nevent: progress\ndata: {body}\n\n"
        if job.status in TERMINAL:
            yield f"event: end\ndata: {JobPublic.model_validate(job).model_dump_json()}\n\n"
            return
        quiet = 0 if events else quiet + 1
        if quiet and quiet % 30 == 0:
            yield ": keep-alive\n\n"  # proxies close connections that stay silent
        await asyncio.sleep(0.5)
