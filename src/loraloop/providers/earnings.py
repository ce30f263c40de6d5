"""What lending compute earned a user: the ledger's ``compute`` entries, each one credit for
one verified piece of work (``work._credit`` writes them, with their breakdown)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.db.tables import PointsEntry, User

__all__ = ["KIND", "credits", "total"]

KIND = "compute"


def total(session: Session, user: User) -> int:
    """The user's compute millipoints, all nodes and all time together."""
    query = select(func.coalesce(func.sum(PointsEntry.millipoints), 0)).where(
        PointsEntry.user_id == user.id, PointsEntry.kind == KIND
    )
    return int(session.scalar(query) or 0)


def credits(session: Session, user: User, limit: int = 100) -> list[PointsEntry]:
    """The user's compute credits, newest first."""
    query = select(PointsEntry).where(PointsEntry.user_id == user.id, PointsEntry.kind == KIND)
    return list(session.scalars(query.order_by(PointsEntry.id.desc()).limit(limit)))
