"""Aliases: ``champion`` (what deployments on the alias serve) and ``challenger`` per adapter.

The first version an adapter gets becomes its champion, so a deployment on the alias works
from the first training run; later versions move it only when someone (or, with the
maintenance loop, the evaluation gate) says so. Every move goes through :func:`move`, which
writes an :class:`AliasChange` row: the history a rollback and the dashboards read.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.db.tables import AdapterAlias, AdapterVersion, AliasChange, User
from loraloop.errors import InvalidRequest, NotFound

__all__ = [
    "ALIASES",
    "aliases_of",
    "clear",
    "current",
    "ensure_champion",
    "history",
    "move",
    "resolve",
    "set_alias",
]

ALIASES = ("champion", "challenger")


def _check(alias: str) -> None:
    if alias not in ALIASES:
        raise InvalidRequest(f"alias {alias!r} must be one of {', '.join(ALIASES)}", param="alias")


def set_alias(
    session: Session, user: User, adapter_id: int, alias: str, version: int
) -> AdapterAlias:
    """Point ``alias`` of your adapter at ``version``; the next request follows it."""
    adapters.get_own(session, user, adapter_id)  # another user's adapter is "not found" first
    _check(alias)
    row = adapters.get_version(session, user, adapter_id, version)
    return move(session, adapter_id, alias, row.id, cause="manual", actor_id=user.id)


def move(
    session: Session,
    adapter_id: int,
    alias: str,
    version_id: int,
    *,
    cause: str,
    actor_id: int | None = None,
    decision_id: int | None = None,
) -> AdapterAlias:
    """Point ``alias`` at the version with id ``version_id`` and record why and by whom."""
    _check(alias)
    row = session.get(AdapterAlias, (adapter_id, alias))
    before = row.version_id if row else None
    if row is None:
        row = AdapterAlias(adapter_id=adapter_id, alias=alias, version_id=version_id)
        session.add(row)
    else:
        row.version_id = version_id
    if before != version_id:
        session.add(
            AliasChange(
                adapter_id=adapter_id,
                alias=alias,
                from_version_id=before,
                to_version_id=version_id,
                cause=cause,
                actor_id=actor_id,
                decision_id=decision_id,
            )
        )
    session.flush()
    return row


def clear(
    session: Session, adapter_id: int, alias: str, *, cause: str, actor_id: int | None = None
) -> None:
    """Remove ``alias`` (a challenger that was refused or rolled back serves nothing)."""
    row = session.get(AdapterAlias, (adapter_id, alias))
    if row is None:
        return
    session.add(
        AliasChange(
            adapter_id=adapter_id,
            alias=alias,
            from_version_id=row.version_id,
            to_version_id=None,
            cause=cause,
            actor_id=actor_id,
        )
    )
    session.delete(row)
    session.flush()


def current(session: Session, adapter_id: int, alias: str) -> AdapterVersion | None:
    """The version ``alias`` names, or None."""
    row = session.get(AdapterAlias, (adapter_id, alias))
    return session.get(AdapterVersion, row.version_id) if row else None


def history(session: Session, adapter_id: int, limit: int = 100) -> list[AliasChange]:
    """The newest moves first."""
    query = select(AliasChange).where(AliasChange.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(AliasChange.id.desc()).limit(limit)))


def aliases_of(session: Session, adapter_id: int) -> dict[str, int]:
    """alias -> version number."""
    rows = session.execute(
        select(AdapterAlias.alias, AdapterVersion.version)
        .join(AdapterVersion, AdapterVersion.id == AdapterAlias.version_id)
        .where(AdapterAlias.adapter_id == adapter_id)
    )
    return {alias: version for alias, version in rows}


def resolve(session: Session, adapter_id: int, alias: str) -> AdapterVersion:
    """The version ``alias`` points at now (no visibility check: callers did it)."""
    _check(alias)
    row = session.get(AdapterAlias, (adapter_id, alias))
    version = session.get(AdapterVersion, row.version_id) if row else None
    if version is None:
        raise NotFound(
            f"adapter {adapter_id} has no {alias} yet; train a version or set the alias with "
            f"PUT /api/adapters/{adapter_id}/aliases/{alias}",
            code="no_such_alias",
            param="alias",
        )
    return version


def ensure_champion(session: Session, version: AdapterVersion) -> None:
    """Make ``version`` the champion when its adapter has none yet."""
    if session.get(AdapterAlias, (version.adapter_id, "champion")) is None:
        move(session, version.adapter_id, "champion", version.id, cause="first")
