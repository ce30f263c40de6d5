"""Bodies of the hub routes: search results, an adapter's card, stars and forks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from loraloop.api.schemas import Public, Strict
from loraloop.catalog import facets, hub

__all__ = [
    "ContributorPublic",
    "FacetsPublic",
    "ForkRequest",
    "HubCardPublic",
    "HubEntryPublic",
    "HubPage",
    "HubVersionPublic",
    "LicencePublic",
    "LineagePublic",
]


class LicencePublic(Public):
    id: str
    name: str


class FacetsPublic(BaseModel):
    """The values each search filter accepts."""

    licences: list[LicencePublic]
    languages: list[str]
    tasks: list[str]
    sorts: list[str]

    @classmethod
    def current(cls) -> FacetsPublic:
        return cls(
            licences=[LicencePublic.model_validate(item) for item in facets.LICENCES],
            languages=list(facets.LANGUAGES),
            tasks=list(facets.TASKS),
            sorts=list(hub.SORTS),
        )


class LineagePublic(Public):
    """Where a fork came from; the adapter fields are null when the source is not visible."""

    version_id: int
    adapter_id: int | None
    adapter_name: str | None
    owner_name: str | None
    version: int | None


class HubEntryPublic(BaseModel):
    id: int
    name: str
    description: str
    owner_id: int
    owner_name: str
    base_model_id: int
    base_model: str
    visibility: str
    licence: LicencePublic
    language: str
    task: str
    stars: int
    starred: bool = Field(description="Whether you starred it.")
    version_count: int
    champion: int | None = Field(description="The champion's version number.")
    forked_from: LineagePublic | None
    created_at: datetime
    updated_at: datetime = Field(description="The newest version's time, else the creation's.")

    @classmethod
    def of(cls, entry: hub.Entry) -> HubEntryPublic:
        adapter = entry.adapter
        lineage = entry.forked_from
        return cls(
            id=adapter.id,
            name=adapter.name,
            description=adapter.description,
            owner_id=adapter.owner_id,
            owner_name=entry.owner_name,
            base_model_id=adapter.base_model_id,
            base_model=entry.base_name,
            visibility=adapter.visibility,
            licence=LicencePublic(id=adapter.licence, name=entry.licence_name),
            language=adapter.language,
            task=adapter.task,
            stars=entry.stars,
            starred=entry.starred,
            version_count=entry.versions,
            champion=entry.champion,
            forked_from=LineagePublic.model_validate(lineage) if lineage else None,
            created_at=adapter.created_at,
            updated_at=entry.updated_at,
        )


class HubPage(BaseModel):
    total: int = Field(description="Matches in all, of which ``items`` is one page.")
    items: list[HubEntryPublic]


class HubVersionPublic(Public):
    version: int
    sha256: str
    metrics: dict[str, Any]
    created_at: datetime


class ContributorPublic(Public):
    rank: int
    user_id: int
    display_name: str
    millipoints: int
    accepted: int


class HubCardPublic(HubEntryPublic):
    versions: list[HubVersionPublic] = Field(description="Oldest first.")
    card_version: int | None = Field(description="Whose README ``model_card`` is.")
    model_card: str | None = Field(description="The version's README.md (Markdown), as stored.")
    quality: dict[str, Any] = Field(
        description="``scores`` (newest eval per version and suite), ``live`` (feedback per "
        "version) and ``drift`` (numbers of each drift report)."
    )
    maintainers: list[str] = Field(description="Who decides: the owner.")
    reviewers: int = Field(description="The size of the reviewer pool (names stay private).")
    contributors: list[ContributorPublic]
    forks: int

    @classmethod
    def of_card(cls, card: hub.Card) -> HubCardPublic:
        head = HubEntryPublic.of(card.entry).model_dump()
        return cls(
            **head,
            versions=[HubVersionPublic.model_validate(v) for v in card.versions],
            card_version=card.shown.version if card.shown else None,
            model_card=card.readme,
            quality=card.quality,
            maintainers=[card.entry.owner_name],
            reviewers=card.reviewers,
            contributors=[ContributorPublic.model_validate(p) for p in card.contributors],
            forks=card.forks,
        )


class ForkRequest(Strict):
    version: int | None = Field(
        default=None, ge=1, le=2**31, description="Default: the champion, else the newest."
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Default: the source's name (with -fork when you have one by that name).",
    )
