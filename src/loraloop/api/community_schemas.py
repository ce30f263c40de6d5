"""Bodies of the community routes: contributions, review, reputation, points."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from loraloop.api.schemas import Public, Strict

__all__ = [
    "CommitBody",
    "ContributionCreate",
    "ContributionDecision",
    "ContributionPublic",
    "GoldCreate",
    "InviteBody",
    "LeaderboardRow",
    "MemberPublic",
    "PointsLine",
    "PointsPublic",
    "RevealBody",
    "ReviewTask",
    "ReviewerBody",
    "StandingPublic",
    "VerdictPublic",
]


class ContributionCreate(Strict):
    kind: Literal["example", "eval_case"]
    item: dict[str, Any] = Field(
        description="An example in any dataset format (OpenAI messages, Alpaca, ShareGPT, "
        "prompt/completion), or an eval case: prompt or messages, expected, metric."
    )
    source: str | None = Field(default=None, max_length=500)


class GoldCreate(Strict):
    kind: Literal["example", "eval_case"] = "example"
    item: dict[str, Any]
    verdict: Literal["accept", "reject"]


class ContributionPublic(Public):
    id: int
    adapter_id: int
    kind: str
    messages: list[dict[str, Any]]
    expected: Any = None
    metric: str | None
    provenance: dict[str, Any]
    novelty: float
    drift_cluster: str | None
    status: str
    gold: str | None
    final: list[dict[str, Any]] | None
    reason: str | None
    decided_via: str | None
    decision: dict[str, Any] | None
    created_at: datetime
    decided_at: datetime | None


class ContributionDecision(Strict):
    accept: bool
    reason: str | None = Field(default=None, max_length=2000)


class InviteBody(Strict):
    email: str = Field(min_length=3, max_length=254)


class ReviewerBody(Strict):
    reviewer: bool = True


class MemberPublic(Public):
    adapter_id: int
    user_id: int
    reviewer: bool
    invited_by: int | None


class ReviewItem(Public):
    kind: str
    messages: list[dict[str, Any]]
    expected: Any = None
    metric: str | None
    source: str | None


class ReviewTask(Public):
    """A review you were drawn for: the item, never its author or another verdict."""

    assignment_id: int
    adapter_id: int
    state: str
    due_at: datetime
    reveal_open: bool
    item: ReviewItem


class CommitBody(Strict):
    commitment: str = Field(
        min_length=64,
        max_length=64,
        description="sha256 hex of 'loraloop-review:{assignment}:{verdict}:{salt}:{edit hash}'",
    )


class RevealBody(Strict):
    verdict: Literal["accept", "reject", "fix"]
    salt: str = Field(min_length=8, max_length=128)
    edited: list[dict[str, str]] | None = None
    comment: str | None = Field(default=None, max_length=2000)


class VerdictPublic(Public):
    id: int
    reviewer_id: int
    verdict: str | None
    edited: list[dict[str, Any]] | None
    comment: str | None
    weight: float | None
    matched: bool | None
    revealed_at: datetime | None


class StandingPublic(Public):
    reputation: float
    weight: float
    scored_reviews: int
    gold_seen: int
    gold_accuracy: float | None
    on_probation: bool


class PointsLine(Public):
    id: int
    adapter_id: int | None
    points: float
    kind: str
    breakdown: dict[str, Any]
    source: dict[str, Any] | None
    created_at: datetime


class PointsPublic(Public):
    points: float
    entries: list[PointsLine]


class LeaderboardRow(Public):
    rank: int
    display_name: str
    points: float
    reputation: float
    accepted: int
