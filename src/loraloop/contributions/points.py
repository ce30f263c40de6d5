"""Points for community work, each written once to the ledger with the factors behind it.

Idempotency keys name the source event: ``contribution:{id}`` (an accepted item),
``review:{assignment id}`` (a verdict that matched the outcome) and
``impact:v{version id}:c{contribution id}`` (a promoted version that newly contained the
item), so replaying any of them writes nothing new.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.contributions import reputation, rules
from loraloop.db.tables import (
    Contribution,
    GateDecision,
    PointsEntry,
    RetrainRun,
    ReviewAssignment,
    TrainingCandidate,
)
from loraloop.rewards import ledger

__all__ = ["award_impact", "award_item", "award_review", "source_of"]


def award_item(session: Session, row: Contribution, quality: float) -> PointsEntry:
    assert row.author_id is not None
    parts = rules.item_points(row.kind, quality, row.novelty, row.drift_cluster is not None)
    breakdown: dict[str, Any] = {
        **parts.as_dict(),
        "kind": row.kind,
        "distance_to_training_set": row.novelty,
        "drift_cluster": row.drift_cluster,
        "decided_via": row.decided_via,
    }
    entry, _ = ledger.append(
        session,
        user_id=row.author_id,
        adapter_id=row.adapter_id,
        millipoints=rules.millipoints(parts.points),
        kind="contribution",
        source_type="contribution",
        source_id=row.id,
        key=f"contribution:{row.id}",
        breakdown=breakdown,
    )
    return entry


def award_review(session: Session, row: Contribution, assignment: ReviewAssignment) -> PointsEntry:
    standing = reputation.standing(session, assignment.reviewer_id)
    value = rules.REVIEW_POINTS * standing.reputation
    entry, _ = ledger.append(
        session,
        user_id=assignment.reviewer_id,
        adapter_id=row.adapter_id,
        millipoints=rules.millipoints(value),
        kind="review",
        source_type="review",
        source_id=assignment.id,
        key=f"review:{assignment.id}",
        breakdown={
            "formula": "review_points × reputation",
            "review_points": rules.REVIEW_POINTS,
            "reputation": round(standing.reputation, 4),
            "verdict": assignment.verdict,
            "contribution_id": row.id,
            "gold": row.gold is not None,
            "points": round(value, 3),
        },
    )
    return entry


def _gain(session: Session, decision: GateDecision | None) -> tuple[float, int | None]:
    """The pooled evaluation gain behind a promotion, and the decision that measured it."""
    while decision is not None:
        pooled = (decision.numbers or {}).get("pooled") or {}
        if "delta" in pooled:
            return float(pooled["delta"]), decision.id
        decision = session.get(GateDecision, decision.override_of) if decision.override_of else None
    return 0.0, None


def _through(session: Session, version_id: int | None) -> int:
    """The newest training candidate the run that trained ``version_id`` took up."""
    if version_id is None:
        return 0
    detail = session.scalar(
        select(RetrainRun.detail).where(RetrainRun.challenger_version_id == version_id)
    )
    return int((detail or {}).get("candidates_through") or 0)


def award_impact(
    session: Session, adapter_id: int, version_id: int, decision: GateDecision | None
) -> list[PointsEntry]:
    """Share the promotion's measured gain among the contributions the version newly held:
    accepted after the champion's training set was made, up to this version's."""
    gain, measured_by = _gain(session, decision)
    if gain <= 0 or decision is None:
        return []
    low = _through(session, decision.champion_version_id)
    high = _through(session, version_id)
    if high <= low:
        return []
    included = list(
        session.scalars(
            select(Contribution)
            .join(TrainingCandidate, TrainingCandidate.id == Contribution.candidate_id)
            .where(
                Contribution.adapter_id == adapter_id,
                Contribution.status == "accepted",
                TrainingCandidate.role == "train",  # held-out corrections were not trained on
                Contribution.candidate_id > low,
                Contribution.candidate_id <= high,
            )
        )
    )
    earned = {
        e.source_id: e.millipoints
        for e in session.scalars(
            select(PointsEntry).where(
                PointsEntry.kind == "contribution",
                PointsEntry.source_id.in_([c.id for c in included]),
            )
        )
    }
    shares = [(c, earned[c.id]) for c in included if earned.get(c.id)]
    weight = sum(m for _, m in shares)
    pool = rules.IMPACT_POINTS_PER_GAIN * gain
    written = []
    for row, base in shares:
        assert row.author_id is not None
        share = base / weight
        entry, _ = ledger.append(
            session,
            user_id=row.author_id,
            adapter_id=adapter_id,
            millipoints=rules.millipoints(pool * share),
            kind="impact",
            source_type="promotion",
            source_id=decision.id,
            key=f"impact:v{version_id}:c{row.id}",
            breakdown={
                "formula": "impact_points_per_gain × pooled_gain × share",
                "impact_points_per_gain": rules.IMPACT_POINTS_PER_GAIN,
                "pooled_gain": round(gain, 4),
                "measured_by_decision": measured_by,
                "share": round(share, 4),
                "contributions_in_version": len(shares),
                "contribution_id": row.id,
                "version_id": version_id,
                "points": round(pool * share, 3),
            },
        )
        written.append(entry)
    return written


def source_of(session: Session, entry: PointsEntry) -> dict[str, Any] | None:
    """The event an entry came from, as the points page shows it (None: it is gone)."""
    if entry.source_type == "contribution":
        row = session.get(Contribution, entry.source_id)
        return (
            None
            if row is None
            else {
                "type": "contribution",
                "id": row.id,
                "kind": row.kind,
                "status": row.status,
                "decided_at": row.decided_at,
            }
        )
    if entry.source_type == "review":
        assignment = session.get(ReviewAssignment, entry.source_id)
        if assignment is None:
            return None
        return {
            "type": "review",
            "id": assignment.id,
            "contribution_id": assignment.contribution_id,
            "verdict": assignment.verdict,
            "matched": assignment.matched,
        }
    if entry.source_type == "promotion":
        decision = session.get(GateDecision, entry.source_id)
        if decision is None:
            return None
        return {
            "type": "promotion",
            "id": decision.id,
            "outcome": decision.outcome,
            "version_id": decision.challenger_version_id,
            "contribution_id": entry.breakdown.get("contribution_id"),
        }
    return None
