"""Reputation: how far a user's judgement can be trusted, from decayed evidence.

Evidence rows are written once per source (a unique key), so deciding an item twice counts
nothing twice. See :mod:`loraloop.contributions.rules` for the formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.contributions import rules
from loraloop.db.engine import utcnow
from loraloop.db.tables import ReputationEvent, ReviewAssignment

__all__ = ["Standing", "record", "standing"]


@dataclass(frozen=True)
class Standing:
    reputation: float
    scored_reviews: int
    gold_seen: int
    gold_correct: float
    weight: float

    @property
    def on_probation(self) -> bool:
        return self.scored_reviews < rules.PROBATION_REVIEWS

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return {
            "reputation": round(self.reputation, 4),
            "weight": round(self.weight, 4),
            "scored_reviews": self.scored_reviews,
            "gold_seen": self.gold_seen,
            "gold_accuracy": round(self.gold_correct / self.gold_seen, 4)
            if self.gold_seen
            else None,
            "on_probation": self.on_probation,
        }


def record(session: Session, user_id: int, kind: str, good: bool | float, key: str) -> None:
    """Add one piece of evidence unless ``key`` was recorded before."""
    if session.scalar(select(ReputationEvent.id).where(ReputationEvent.source_key == key)):
        return
    try:
        with session.begin_nested():
            session.add(
                ReputationEvent(
                    user_id=user_id,
                    kind=kind,
                    good=float(good),
                    weight=rules.EVIDENCE_WEIGHT[kind],
                    source_key=key,
                )
            )
    except IntegrityError:
        pass  # a concurrent replay wrote it


def standing(session: Session, user_id: int, now: datetime | None = None) -> Standing:
    now = now or utcnow()
    rows = session.execute(
        select(
            ReputationEvent.kind,
            ReputationEvent.good,
            ReputationEvent.weight,
            ReputationEvent.created_at,
        ).where(ReputationEvent.user_id == user_id)
    ).all()
    evidence = [(g, w, (now - at).total_seconds() / 86400) for _, g, w, at in rows]
    value = rules.reputation(evidence)
    scored = int(
        session.scalar(
            select(func.count()).where(
                ReviewAssignment.reviewer_id == user_id, ReviewAssignment.matched.is_not(None)
            )
        )
        or 0
    )
    gold = [g for kind, g, _, _ in rows if kind == "gold"]
    return Standing(value, scored, len(gold), sum(gold), rules.vote_weight(value, scored))
