"""Your compute nodes: what they reported, how their work was verified, what it earned.
(Provider keys are made like any key, with the single scope ``provider``.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from loraloop.api.deps import CurrentUser, DbSession
from loraloop.providers import earnings, nodes, work

router = APIRouter(prefix="/api/providers", tags=["providers"])


class NodePublic(BaseModel):
    id: int
    name: str
    trusted: bool
    capabilities: dict[str, Any]
    reliability: float
    verified_ok: int
    verified_bad: int
    lost: int
    last_seen_at: datetime


class WorkPublic(BaseModel):
    id: int
    node_id: int
    job_id: int
    kind: str
    """The job's kind: ``train``, ``train_check`` or ``evaluate``."""
    attempt: int
    status: str
    verification: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


class ProviderSummary(BaseModel):
    nodes: list[NodePublic]
    work: list[WorkPublic]
    points: float
    """Compute points earned, all nodes together."""


@router.get("")
def summary(user: CurrentUser, session: DbSession) -> ProviderSummary:
    """Your nodes with their reliability, their recent work and its verification, and the
    compute points it earned."""
    mine = nodes.mine(session, user)
    earned = earnings.total(session, user)
    recent = work.recent(session, [n.id for n in mine])
    kinds = work.job_kinds(session, recent)
    return ProviderSummary(
        nodes=[
            NodePublic(
                id=n.id,
                name=n.name,
                trusted=n.trusted,
                capabilities=n.capabilities,
                reliability=round(nodes.reliability(n), 4),
                verified_ok=n.verified_ok,
                verified_bad=n.verified_bad,
                lost=n.lost,
                last_seen_at=n.last_seen_at,
            )
            for n in mine
        ],
        work=[
            WorkPublic(
                id=w.id,
                node_id=w.node_id,
                job_id=w.job_id,
                kind=kinds.get(w.job_id, "?"),
                attempt=w.attempt,
                status=w.status,
                verification=w.verification,
                created_at=w.created_at,
                finished_at=w.finished_at,
            )
            for w in recent
        ],
        points=earned / 1000,
    )
