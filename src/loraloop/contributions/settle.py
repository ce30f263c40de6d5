"""What a decision does: the accepted item reaches training or an eval suite, everyone who
judged it is scored, and the points are written to the ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.contributions import points, reputation
from loraloop.db.engine import utcnow
from loraloop.db.tables import Contribution, ReviewAssignment, TrainingCandidate
from loraloop.mlops import candidates, suites

__all__ = ["finalize", "score_reviews"]


def finalize(
    session: Session,
    row: Contribution,
    *,
    accepted: bool,
    via: str,
    by: int | None = None,
    reason: str | None = None,
    quality: float = 1.0,
    final: list[dict[str, str]] | None = None,
    tally: dict[str, Any] | None = None,
) -> None:
    """Decide a pending item once (a decided one is left as it is)."""
    if row.status != "pending":
        return
    row.status = "accepted" if accepted else "rejected"
    row.decided_via, row.decided_by, row.reason, row.decided_at = via, by, reason, utcnow()
    row.final = final
    row.decision = {**(tally or {}), "quality": round(quality, 4)}
    messages = final or row.messages
    if accepted:
        _apply(session, row, messages, by, reason)
    elif row.candidate_id is not None:
        candidate = session.get(TrainingCandidate, row.candidate_id)
        if candidate is not None and candidate.status == "pending":
            candidates.close(session, candidate, accept=False, by=by, reason=reason)
    if row.author_id is not None:
        reputation.record(session, row.author_id, "authored", accepted, f"authored:{row.id}")
    _cancel_open(session, row)
    score_reviews(session, row, "accept" if accepted else "reject")
    owner_id = adapters.get_any(session, row.adapter_id).owner_id
    if accepted and row.author_id is not None and row.author_id != owner_id:
        points.award_item(session, row, quality)
    session.flush()


def _apply(
    session: Session,
    row: Contribution,
    messages: list[dict[str, str]],
    by: int | None,
    reason: str | None,
) -> None:
    note = reason or f"community contribution #{row.id}"
    if row.kind == "eval_case":
        row.case_id = suites.add_community_case(
            session, row.adapter_id, messages, row.expected, row.metric or "contains"
        ).id
    elif row.kind == "correction" and row.candidate_id is not None:
        candidate = session.get(TrainingCandidate, row.candidate_id)
        if candidate is not None and candidate.status == "pending":
            candidates.close(
                session, candidate, accept=True, by=by, reason=note, messages=row.final
            )
    else:
        candidate = TrainingCandidate(
            adapter_id=row.adapter_id,
            author_id=row.author_id,
            messages=messages,
            status="accepted",
            role="train",
            decided_by=by,
            reason=note,
            decided_at=utcnow(),
        )
        session.add(candidate)
        session.flush()
        row.candidate_id = candidate.id


def _cancel_open(session: Session, row: Contribution) -> None:
    for assignment in session.scalars(
        select(ReviewAssignment).where(
            ReviewAssignment.contribution_id == row.id,
            ReviewAssignment.state.in_(("assigned", "committed")),
        )
    ):
        assignment.state = "cancelled"


def score_reviews(session: Session, row: Contribution, outcome: str) -> None:
    """Score every revealed, unscored verdict on the item against ``outcome``."""
    kind = "gold" if row.gold is not None else "agreement"
    for assignment in session.scalars(
        select(ReviewAssignment).where(
            ReviewAssignment.contribution_id == row.id,
            ReviewAssignment.state == "revealed",
            ReviewAssignment.matched.is_(None),
        )
    ):
        side = "reject" if assignment.verdict == "reject" else "accept"
        assignment.matched = side == outcome
        reputation.record(
            session, assignment.reviewer_id, kind, assignment.matched, f"review:{assignment.id}"
        )
        if assignment.matched:
            points.award_review(session, row, assignment)
    session.flush()
