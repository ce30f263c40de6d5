"""What contributors see of themselves and of each other: points with their sources,
reputation, and an adapter's public leaderboard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.contributions import items, points, reputation
from loraloop.db.tables import PointsEntry, User
from loraloop.rewards import ledger

__all__ = ["Line", "Place", "leaderboard", "my_points"]


@dataclass(frozen=True)
class Line:
    """One ledger entry and the event it traces back to."""

    entry: PointsEntry
    source: dict[str, Any] | None


def my_points(
    session: Session, user: User, *, adapter_id: int | None = None
) -> tuple[int, list[Line]]:
    """(total millipoints, every entry newest first with its source)."""
    rows = ledger.entries(session, user, adapter_id=adapter_id)
    total = ledger.total(session, user.id, adapter_id=adapter_id)
    return total, [Line(e, points.source_of(session, e)) for e in rows]


@dataclass(frozen=True)
class Place:
    rank: int
    user_id: int
    display_name: str
    millipoints: int
    reputation: float
    accepted: int


def leaderboard(session: Session, user: User, adapter_id: int, limit: int = 50) -> list[Place]:
    """Who earned most on an adapter anyone may see (or you were invited to)."""
    items.adapter_for(session, user, adapter_id)
    board = ledger.leaderboard(session, adapter_id, limit)
    names: dict[int, str] = {
        u: name
        for u, name in session.execute(
            select(User.id, User.display_name).where(User.id.in_([u for u, _ in board]))
        )
    }
    counted = items.accepted_by_author(session, adapter_id)
    return [
        Place(
            rank=n,
            user_id=u,
            display_name=names.get(u, "?"),
            millipoints=m,
            reputation=reputation.standing(session, u).reputation,
            accepted=counted.get(u, 0),
        )
        for n, (u, m) in enumerate(board, start=1)
    ]
