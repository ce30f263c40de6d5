"""Contributions listen to the maintenance loop (see :mod:`loraloop.mlops.events`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.contributions import items, points, review, settle
from loraloop.db.tables import Contribution, GateDecision, TrainingCandidate
from loraloop.mlops import events
from loraloop.storage import Storage


def _pending(session: Session, candidate: TrainingCandidate) -> None:
    items.from_candidate(session, candidate)


def _decided(session: Session, candidate: TrainingCandidate) -> None:
    """The owner decided a correction from the maintenance page: its review ends too."""
    row = session.scalar(select(Contribution).where(Contribution.candidate_id == candidate.id))
    if row is not None and row.status == "pending":
        settle.finalize(
            session,
            row,
            accepted=candidate.status == "accepted",
            via="owner",
            by=candidate.decided_by,
            reason=candidate.reason,
        )


def _promoted(
    session: Session, adapter_id: int, version_id: int, decision: GateDecision | None
) -> None:
    points.award_impact(session, adapter_id, version_id, decision)


def _tick(session: Session, settings: Settings, storage: Storage, done: Any) -> None:
    did = review.maintain(session, settings, storage).as_dict()
    if any(did.values()):
        done.community = did


events.subscribe("candidate_pending", _pending)
events.subscribe("tick", _tick)
events.subscribe("candidate_decided", _decided)
events.subscribe("promoted", _promoted)
