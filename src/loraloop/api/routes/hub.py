"""The adapter hub: search public adapters, read a card, star, fork."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from loraloop.api.catalog_schemas import AdapterPublic
from loraloop.api.deps import CurrentUser, DbSession
from loraloop.api.hub_schemas import (
    FacetsPublic,
    ForkRequest,
    HubCardPublic,
    HubEntryPublic,
    HubPage,
)
from loraloop.catalog import hub

router = APIRouter(prefix="/api/hub", tags=["hub"])

# Filters arrive as text so the service can name every bad value, with the allowed ones, at once.
Filter = Annotated[str | None, Query(max_length=40)]


@router.get("/facets")
def facets(user: CurrentUser) -> FacetsPublic:
    """The values each search filter accepts (licences with their names)."""
    return FacetsPublic.current()


@router.get("/adapters")
def search(
    user: CurrentUser,
    session: DbSession,
    q: Annotated[str, Query(max_length=200, description="Words in the name or description.")] = "",
    base_model_id: Filter = None,
    language: Filter = None,
    task: Filter = None,
    licence: Filter = None,
    sort: Annotated[str | None, Query(max_length=16, description="stars, recent or name.")] = None,
    limit: Annotated[int, Query(ge=1, le=hub.MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> HubPage:
    """Public adapters matching every filter given; a bad value is a 400 naming the allowed."""
    found = hub.search(
        session,
        user,
        q=q,
        base_model_id=base_model_id,
        language=language,
        task=task,
        licence=licence,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return HubPage(total=found.total, items=[HubEntryPublic.of(e) for e in found.entries])


@router.get("/adapters/{adapter_id}")
def card(
    adapter_id: int,
    user: CurrentUser,
    session: DbSession,
    version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
) -> HubCardPublic:
    """An adapter's card (public, or yours): model card, versions, quality, people, lineage."""
    return HubCardPublic.of_card(hub.card(session, user, adapter_id, version=version))


@router.put("/adapters/{adapter_id}/star")
def star(adapter_id: int, user: CurrentUser, session: DbSession) -> HubEntryPublic:
    """Star an adapter; starring it again changes nothing."""
    return HubEntryPublic.of(hub.star(session, user, adapter_id))


@router.delete("/adapters/{adapter_id}/star")
def unstar(adapter_id: int, user: CurrentUser, session: DbSession) -> HubEntryPublic:
    """Take your star back; without one this changes nothing."""
    return HubEntryPublic.of(hub.unstar(session, user, adapter_id))


@router.post("/adapters/{adapter_id}/fork", status_code=201)
def fork(
    adapter_id: int, body: ForkRequest, user: CurrentUser, session: DbSession
) -> AdapterPublic:
    """Copy a version into a new private adapter of yours (same weights, lineage kept)."""
    adapter = hub.fork(session, user, adapter_id, version=body.version, name=body.name)
    return AdapterPublic.model_validate(adapter)
