"""The open adapter hub: search public adapters, star them, fork them, and read their card.

    search ──public adapters only──▶ filter (base, language, task, licence) + text ──▶ sort
    star   ──one row per (user, adapter)──▶ counted; starring twice is starring once
    fork   ──a visible version──▶ a new *private* adapter of the forker on the same base, whose
           v1 names the same weights (same folder, same sha256: no byte is copied) and whose
           ``forked_from_version_id`` keeps where it came from

Visibility is the catalog's: an adapter is seen by its owner, or by everyone once public.
Anything else (another user's private adapter) is "not found", exactly like a missing id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases, base_models, facets
from loraloop.contributions import standings
from loraloop.db.tables import (
    Adapter,
    AdapterAlias,
    AdapterStar,
    AdapterVersion,
    BaseModel,
    CommunityMember,
    User,
)
from loraloop.errors import Conflict, InvalidRequest
from loraloop.mlops import timeline

__all__ = [
    "CARD_BYTES",
    "MAX_LIMIT",
    "SORTS",
    "Card",
    "Entry",
    "Lineage",
    "Results",
    "card",
    "card_text",
    "entry",
    "fork",
    "lineage",
    "search",
    "star",
    "unstar",
]

#: ``stars``: most starred first; ``recent``: newest version (or creation) first.
SORTS = ("stars", "recent", "name")
MAX_LIMIT = 100
#: Model cards are small; anything bigger is not a card and is cut off.
CARD_BYTES = 64 * 1024
CONTRIBUTORS = 10


@dataclass(frozen=True)
class Lineage:
    """Where a fork came from. ``adapter_id`` and the names are None when the source is no
    longer visible to the viewer (made private, or gone): the fork still says it is one."""

    version_id: int
    adapter_id: int | None
    adapter_name: str | None
    owner_name: str | None
    version: int | None


@dataclass(frozen=True)
class Entry:
    """One adapter as the hub lists it."""

    adapter: Adapter
    owner_name: str
    base_name: str
    stars: int
    starred: bool
    versions: int
    champion: int | None
    updated_at: datetime
    forked_from: Lineage | None

    @property
    def licence_name(self) -> str:
        return facets.licence_name(self.adapter.licence)


@dataclass(frozen=True)
class Results:
    total: int
    entries: list[Entry]


# searching ----------------------------------------------------------------------------------


def _blank(value: str | None) -> str | None:
    """An empty form field means "any"."""
    return value.strip() if value and value.strip() else None


def _base_id(session: Session, raw: str | int | None, problems: list[str]) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    known = {b.id: b.name for b in base_models.list_all(session)}
    allowed = ", ".join(f"{i} ({name})" for i, name in known.items()) or "none registered"
    try:
        wanted = int(raw)
    except ValueError:
        wanted = None
    if wanted not in known:
        problems.append(f"base_model_id {raw!r} must be one of {allowed}")
    return wanted


def search(
    session: Session,
    user: User,
    *,
    q: str = "",
    base_model_id: str | int | None = None,
    language: str | None = None,
    task: str | None = None,
    licence: str | None = None,
    sort: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Results:
    """Public adapters matching every filter given (None or "" means any); ``q`` matches the
    name or description, case-insensitively. Every bad value is named in one 400, with the
    values allowed."""
    language, task, licence = _blank(language), _blank(task), _blank(licence)
    sort = _blank(sort) or "stars"
    problems = facets.problems(licence=licence, language=language, task=task)
    base_id = _base_id(session, base_model_id, problems)
    if sort not in SORTS:
        problems.append(f"sort {sort!r} must be one of {', '.join(SORTS)}")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_filter")
    stars, updated = _star_counts(), _latest_versions()
    updated_at = func.coalesce(updated.c.at, Adapter.created_at)
    count = func.coalesce(stars.c.n, 0)
    query: Select[Adapter, int, datetime] = (
        select(Adapter, count, updated_at)
        .outerjoin(stars, stars.c.adapter_id == Adapter.id)
        .outerjoin(updated, updated.c.adapter_id == Adapter.id)
        .where(Adapter.visibility == "public")
    )
    for column, wanted in (
        (Adapter.base_model_id, base_id),
        (Adapter.language, language),
        (Adapter.task, task),
        (Adapter.licence, licence),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    needle = q.strip().lower()
    if needle:
        query = query.where(
            or_(
                func.lower(Adapter.name).contains(needle, autoescape=True),
                func.lower(Adapter.description).contains(needle, autoescape=True),
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = {
        "stars": (count.desc(), updated_at.desc(), Adapter.id.desc()),
        "recent": (updated_at.desc(), Adapter.id.desc()),
        "name": (func.lower(Adapter.name), Adapter.id),
    }[sort]
    limit = max(1, min(limit, MAX_LIMIT))
    page = query.order_by(*order).limit(limit).offset(max(0, offset))
    rows = [(a, int(n), at) for a, n, at in session.execute(page)]
    return Results(total=total, entries=_entries(session, user, rows))


def _star_counts() -> Any:
    return (
        select(AdapterStar.adapter_id, func.count().label("n"))
        .group_by(AdapterStar.adapter_id)
        .subquery()
    )


def _latest_versions() -> Any:
    return (
        select(AdapterVersion.adapter_id, func.max(AdapterVersion.created_at).label("at"))
        .group_by(AdapterVersion.adapter_id)
        .subquery()
    )


def _starred_by(session: Session, user: User, adapter_ids: list[int]) -> set[int]:
    if not adapter_ids:
        return set()
    query = select(AdapterStar.adapter_id).where(
        AdapterStar.user_id == user.id, AdapterStar.adapter_id.in_(adapter_ids)
    )
    return set(session.scalars(query))


def _name_of(session: Session, user_id: int) -> str:
    owner = session.get(User, user_id)
    return owner.display_name if owner else "?"


def _entries(
    session: Session, user: User, rows: list[tuple[Adapter, int, datetime]]
) -> list[Entry]:
    """Entries for (adapter, stars, updated at) rows, with a few queries for the whole page
    rather than a few per adapter."""
    ids = [adapter.id for adapter, _, _ in rows]
    if not ids:
        return []
    bases = dict(session.execute(select(BaseModel.id, BaseModel.name)).all())
    owners = dict(
        session.execute(
            select(User.id, User.display_name).where(
                User.id.in_({adapter.owner_id for adapter, _, _ in rows})
            )
        ).all()
    )
    counts = dict(
        session.execute(
            select(AdapterVersion.adapter_id, func.count())
            .where(AdapterVersion.adapter_id.in_(ids))
            .group_by(AdapterVersion.adapter_id)
        ).all()
    )
    champions = dict(
        session.execute(
            select(AdapterAlias.adapter_id, AdapterVersion.version)
            .join(AdapterVersion, AdapterVersion.id == AdapterAlias.version_id)
            .where(AdapterAlias.adapter_id.in_(ids), AdapterAlias.alias == "champion")
        ).all()
    )
    mine = _starred_by(session, user, ids)
    return [
        Entry(
            adapter=adapter,
            owner_name=owners.get(adapter.owner_id, "?"),
            base_name=bases.get(adapter.base_model_id, "?"),
            stars=stars,
            starred=adapter.id in mine,
            versions=int(counts.get(adapter.id, 0)),
            champion=champions.get(adapter.id),
            updated_at=updated,
            forked_from=lineage(session, user, adapter),
        )
        for adapter, stars, updated in rows
    ]


def lineage(session: Session, user: User, adapter: Adapter) -> Lineage | None:
    """Where ``adapter`` was forked from, as ``user`` may see it; None for an original."""
    if adapter.forked_from_version_id is None:
        return None
    source = session.get(AdapterVersion, adapter.forked_from_version_id)
    parent = session.get(Adapter, source.adapter_id) if source else None
    if source is None or parent is None or not _visible(parent, user):
        return Lineage(adapter.forked_from_version_id, None, None, None, None)
    return Lineage(
        version_id=source.id,
        adapter_id=parent.id,
        adapter_name=parent.name,
        owner_name=_name_of(session, parent.owner_id),
        version=source.version,
    )


def _visible(adapter: Adapter, user: User) -> bool:
    return adapter.visibility == "public" or adapter.owner_id == user.id


def entry(session: Session, user: User, adapter_id: int) -> Entry:
    """One adapter the user may see (theirs, or public), as the hub lists it."""
    adapter = adapters.get_visible(session, user, adapter_id)
    stars = session.scalar(select(func.count()).where(AdapterStar.adapter_id == adapter.id))
    latest = session.scalar(
        select(func.max(AdapterVersion.created_at)).where(AdapterVersion.adapter_id == adapter.id)
    )
    return _entries(session, user, [(adapter, int(stars or 0), latest or adapter.created_at)])[0]


# stars --------------------------------------------------------------------------------------


def star(session: Session, user: User, adapter_id: int) -> Entry:
    """Star an adapter the user may see; starring again changes nothing."""
    adapter = adapters.get_visible(session, user, adapter_id)
    if session.get(AdapterStar, (adapter.id, user.id)) is None:
        try:
            with session.begin_nested():  # a concurrent star of the same user is the same star
                session.add(AdapterStar(adapter_id=adapter.id, user_id=user.id))
        except IntegrityError:
            pass
    return entry(session, user, adapter.id)


def unstar(session: Session, user: User, adapter_id: int) -> Entry:
    """Take the user's star back; without one this changes nothing."""
    adapter = adapters.get_visible(session, user, adapter_id)
    row = session.get(AdapterStar, (adapter.id, user.id))
    if row is not None:
        session.delete(row)
        session.flush()
    return entry(session, user, adapter.id)


# forks --------------------------------------------------------------------------------------


def _chosen_version(
    session: Session, user: User, adapter: Adapter, version: int | None
) -> AdapterVersion:
    if version is not None:
        return adapters.get_version(session, user, adapter.id, version)
    chosen = aliases.current(session, adapter.id, "champion")
    if chosen is None:
        chosen = session.scalar(
            select(AdapterVersion)
            .where(AdapterVersion.adapter_id == adapter.id)
            .order_by(AdapterVersion.version.desc())
            .limit(1)
        )
    if chosen is None:
        raise InvalidRequest(
            f"adapter {adapter.id} has no version to fork yet", code="nothing_to_fork"
        )
    return chosen


def _free_name(session: Session, user: User, wanted: str) -> str:
    """``wanted``, or ``wanted-fork``, ``wanted-fork-2``... whichever the user has not used."""
    taken = set(session.scalars(select(Adapter.name).where(Adapter.owner_id == user.id)))
    if wanted not in taken:
        return wanted
    stem = wanted[:52]
    for n in range(1, 1000):
        candidate = f"{stem}-fork" if n == 1 else f"{stem}-fork-{n}"
        if candidate not in taken:
            return candidate
    raise InvalidRequest("choose a name for the fork", param="name")


def fork(
    session: Session,
    user: User,
    adapter_id: int,
    *,
    version: int | None = None,
    name: str | None = None,
) -> Adapter:
    """A private copy of a version the user may see (the champion when ``version`` is None).

    The fork's v1 names the same weights as the source version (same folder and sha256), so
    no byte is copied and the engine serves both from one cached load. It keeps the source's
    base, licence, language, task and description; the source's training data stays its
    owner's (v1 records no dataset), so the forker trains v2 on data of their own."""
    source = adapters.get_visible(session, user, adapter_id)
    chosen = _chosen_version(session, user, source, version)
    wanted = name if name else _free_name(session, user, source.name)
    try:
        with session.begin_nested():  # the same fork sent twice at once: one wins, one is a 409
            copy = adapters.create(
                session,
                user,
                name=wanted,
                base_model_id=source.base_model_id,
                visibility="private",
                licence=source.licence,
                description=source.description,
                language=source.language,
                task=source.task,
                forked_from_version_id=chosen.id,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"you already have an adapter named {wanted}", code="adapter_exists"
        ) from exc
    first = AdapterVersion(
        adapter_id=copy.id,
        version=1,
        path=chosen.path,
        sha256=chosen.sha256,
        spec=dict(chosen.spec or {}),
        metrics=dict(chosen.metrics or {}),
    )
    session.add(first)
    session.flush()
    aliases.ensure_champion(session, first)
    return copy


# the card -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """Everything a hub card shows of one adapter."""

    entry: Entry
    versions: list[AdapterVersion]
    shown: AdapterVersion | None
    """The version whose model card is shown: the one asked for, else the champion."""
    readme: str | None
    quality: dict[str, Any]
    reviewers: int
    """How many are in the reviewer pool (their names stay private: nobody can lobby them)."""
    contributors: list[standings.Place]
    forks: int
    """Forks the viewer may see."""
    fork_target: int | None
    """The version a fork starts from unless one is chosen: the champion, else the newest."""


def card_text(version: AdapterVersion) -> str | None:
    """The version's README.md as text (first ``CARD_BYTES``), or None without one. A link is
    refused: a card never points outside its folder."""
    path = Path(version.path) / "README.md"
    if path.is_symlink() or not path.is_file():
        return None
    with path.open("rb") as handle:
        return handle.read(CARD_BYTES).decode("utf-8", errors="replace").replace("\r\n", "\n")


def card(session: Session, user: User, adapter_id: int, *, version: int | None = None) -> Card:
    """The card of an adapter the user may see; ``version`` picks whose model card to show."""
    found = entry(session, user, adapter_id)
    adapter = found.adapter
    versions = adapters.versions(session, user, adapter.id)
    wanted = version if version is not None else found.champion
    shown = next((v for v in versions if v.version == wanted), versions[-1] if versions else None)
    if version is not None and (shown is None or shown.version != version):
        adapters.get_version(session, user, adapter.id, version)  # the 404 for a wrong number
    reviewers = session.scalar(
        select(func.count()).where(
            CommunityMember.adapter_id == adapter.id, CommunityMember.reviewer.is_(True)
        )
    )
    ids = [v.id for v in versions] or [-1]
    forks = session.scalar(
        select(func.count()).where(
            Adapter.forked_from_version_id.in_(ids),
            or_(Adapter.visibility == "public", Adapter.owner_id == user.id),
        )
    )
    return Card(
        entry=found,
        versions=versions,
        shown=shown,
        readme=card_text(shown) if shown else None,
        quality=timeline.quality(session, adapter),
        reviewers=int(reviewers or 0),
        contributors=standings.leaderboard(session, user, adapter.id, limit=CONTRIBUTORS),
        forks=int(forks or 0),
        fork_target=found.champion or (versions[-1].version if versions else None),
    )
