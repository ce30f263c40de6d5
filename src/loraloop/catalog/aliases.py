"""Aliases: ``champion`` (what deployments on the alias serve) and ``challenger`` per adapter.

The first version an adapter gets becomes its champion, so a deployment on the alias works
from the first training run; later versions move it only when someone (or, with the
maintenance loop, the evaluation gate) says so.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.db.tables import AdapterAlias, AdapterVersion, User
from loraloop.errors import InvalidRequest, NotFound

__all__ = ["ALIASES", "aliases_of", "ensure_champion", "resolve", "set_alias"]

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
    current = session.get(AdapterAlias, (adapter_id, alias))
    if current is None:
        current = AdapterAlias(adapter_id=adapter_id, alias=alias, version_id=row.id)
        session.add(current)
    else:
        current.version_id = row.id
    session.flush()
    return current


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
        session.add(
            AdapterAlias(adapter_id=version.adapter_id, alias="champion", version_id=version.id)
        )
        session.flush()
