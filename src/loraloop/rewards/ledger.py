"""The points ledger: append-only, one entry per source event.

Every entry names the event that earned it (``source_type``/``source_id``) and carries an
idempotency key derived from that event, so replaying the event (a review decided twice, a
promotion hook run again) returns the entry already written instead of adding one. Nothing
here updates or deletes an entry; a correction would be a new entry of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.db.tables import PointsEntry, User

__all__ = ["append", "entries", "leaderboard", "total"]


def append(
    session: Session,
    *,
    user_id: int,
    adapter_id: int | None,
    millipoints: int,
    kind: str,
    source_type: str,
    source_id: int,
    key: str,
    breakdown: dict[str, Any],
) -> tuple[PointsEntry, bool]:
    """Write the entry for ``key`` unless it exists: (entry, written now)."""
    found = session.scalar(select(PointsEntry).where(PointsEntry.idempotency_key == key))
    if found is not None:
        return found, False
    row = PointsEntry(
        user_id=user_id,
        adapter_id=adapter_id,
        millipoints=millipoints,
        kind=kind,
        source_type=source_type,
        source_id=source_id,
        idempotency_key=key,
        breakdown=breakdown,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # written by a concurrent replay between our read and insert
        found = session.scalar(select(PointsEntry).where(PointsEntry.idempotency_key == key))
        assert found is not None
        return found, False
    return row, True


def entries(
    session: Session, user: User, *, adapter_id: int | None = None, limit: int = 500
) -> list[PointsEntry]:
    query = select(PointsEntry).where(PointsEntry.user_id == user.id)
    if adapter_id is not None:
        query = query.where(PointsEntry.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(PointsEntry.id.desc()).limit(limit)))


def total(session: Session, user_id: int, *, adapter_id: int | None = None) -> int:
    """The user's millipoints (on one adapter, or everywhere)."""
    query = select(func.coalesce(func.sum(PointsEntry.millipoints), 0)).where(
        PointsEntry.user_id == user_id
    )
    if adapter_id is not None:
        query = query.where(PointsEntry.adapter_id == adapter_id)
    return int(session.scalar(query) or 0)


def leaderboard(session: Session, adapter_id: int, limit: int = 50) -> list[tuple[int, int]]:
    """(user id, millipoints) on one adapter, most first."""
    points = func.sum(PointsEntry.millipoints)
    rows = session.execute(
        select(PointsEntry.user_id, points)
        .where(PointsEntry.adapter_id == adapter_id)
        .group_by(PointsEntry.user_id)
        .order_by(points.desc(), PointsEntry.user_id)
        .limit(limit)
    )
    return [(int(u), int(p)) for u, p in rows]
