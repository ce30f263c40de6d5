"""The published rules of the community, in one place: what an item is worth, how much a
reviewer's vote weighs, how reputation is made. Pure functions of plain numbers, so the
formula shown next to every ledger entry is the code that computed it.

Points of an accepted item::

    points = base[kind] × quality × novelty × drift_bonus
    quality     = (W_accept + ½·W_fix) / W_revealed         (1 when the owner accepts directly)
    novelty     = clamp(0.5 + 2·d, 0.5, 1.5)                 d = 1 − max cosine to training inputs
    drift_bonus = 1.5 if the item covers a cluster of the current drift alarm, else 1

A reviewer earns ``REVIEW_POINTS × reputation`` for each revealed verdict that matches the
final outcome (or a gold item's known answer). A promoted version shares
``IMPACT_POINTS_PER_GAIN × pooled gain`` among the contributions it newly contained,
in proportion to their points.

Reputation is a Beta posterior mean over decayed evidence (half-life ``HALF_LIFE_DAYS``)::

    reputation = (1 + Σ good·w·decay) / (2 + Σ w·decay)

with evidence: agreement with a final decision (w 1), a gold item (w 3), a commitment never
revealed (w 1, bad) and one's own item decided (w 1). A vote weighs ``reputation``, times
``PROBATION_WEIGHT`` until the reviewer has ``PROBATION_REVIEWS`` scored reviews.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BASE_POINTS",
    "DRIFT_BONUS",
    "EVIDENCE_WEIGHT",
    "FIX_WEIGHT",
    "HALF_LIFE_DAYS",
    "IMPACT_POINTS_PER_GAIN",
    "NOVELTY_MAX",
    "NOVELTY_MIN",
    "PROBATION_REVIEWS",
    "PROBATION_WEIGHT",
    "REVIEW_POINTS",
    "ItemPoints",
    "decay",
    "item_points",
    "millipoints",
    "novelty_factor",
    "quality",
    "reputation",
    "vote_weight",
]

BASE_POINTS = {"example": 10.0, "eval_case": 8.0, "correction": 6.0}
DRIFT_BONUS = 1.5
REVIEW_POINTS = 1.0
FIX_WEIGHT = 0.5
"""A fix counts this much of an accept in an item's quality."""
NOVELTY_MIN, NOVELTY_MAX = 0.5, 1.5
IMPACT_POINTS_PER_GAIN = 1000.0
"""A promotion with a pooled gain of +0.10 shares 100 points."""
HALF_LIFE_DAYS = 90.0
PROBATION_REVIEWS = 10
PROBATION_WEIGHT = 0.25
EVIDENCE_WEIGHT = {"agreement": 1.0, "gold": 3.0, "silent": 1.0, "authored": 2.0}
#: Cosine similarity of the item to a drift cluster's example above which it covers it.
DRIFT_COVER_COSINE = 0.6


def decay(age_days: float) -> float:
    return float(0.5 ** (max(age_days, 0.0) / HALF_LIFE_DAYS))


def reputation(evidence: list[tuple[float, float, float]]) -> float:
    """``evidence``: (good in [0, 1], weight, age in days) per event."""
    good = sum(g * w * decay(age) for g, w, age in evidence)
    total = sum(w * decay(age) for _, w, age in evidence)
    return (1.0 + good) / (2.0 + total)


def vote_weight(reputation_value: float, scored_reviews: int) -> float:
    on_probation = scored_reviews < PROBATION_REVIEWS
    return reputation_value * (PROBATION_WEIGHT if on_probation else 1.0)


def quality(accept: float, fix: float, reject: float) -> float:
    total = accept + fix + reject
    return 1.0 if total <= 0 else (accept + FIX_WEIGHT * fix) / total


def novelty_factor(novelty: float) -> float:
    return min(NOVELTY_MAX, max(NOVELTY_MIN, NOVELTY_MIN + 2.0 * novelty))


@dataclass(frozen=True)
class ItemPoints:
    base: float
    quality: float
    novelty: float
    drift_bonus: float

    @property
    def points(self) -> float:
        return self.base * self.quality * self.novelty * self.drift_bonus

    def as_dict(self) -> dict[str, float | str]:
        return {
            "formula": "base × quality × novelty × drift_bonus",
            "base": self.base,
            "quality": round(self.quality, 4),
            "novelty": round(self.novelty, 4),
            "drift_bonus": self.drift_bonus,
            "points": round(self.points, 3),
        }


def item_points(kind: str, quality_value: float, novelty: float, covers_drift: bool) -> ItemPoints:
    return ItemPoints(
        base=BASE_POINTS[kind],
        quality=quality_value,
        novelty=novelty_factor(novelty),
        drift_bonus=DRIFT_BONUS if covers_drift else 1.0,
    )


def millipoints(points: float) -> int:
    return math.floor(points * 1000 + 0.5)
