"""Deployments (the model ids of ``/v1``) and adapter aliases (what ``champion`` means)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from loraloop.api.deps import AppSettings, CurrentUser, DbSession
from loraloop.api.gateway_schemas import AliasPublic, AliasSet, DeploymentCreate, DeploymentPublic
from loraloop.catalog import adapters, aliases
from loraloop.db.tables import Deployment
from loraloop.gateway import apps, deployments
from loraloop.gateway.credentials import Vault

router = APIRouter(prefix="/api", tags=["deployments"])


def _public(session: Session, row: Deployment) -> DeploymentPublic:
    return DeploymentPublic(
        id=row.id,
        name=row.name,
        kind=row.kind,
        status=row.status,
        target=deployments.target_label(session, row),
        adapter_id=row.adapter_id,
        alias=row.alias,
        base_model_id=row.base_model_id,
        upstream_url=row.upstream_url,
        upstream_model=row.upstream_model,
        has_upstream_key=row.upstream_key is not None,
        system_prompt=row.system_prompt,
        app=row.app,
        created_at=row.created_at,
    )


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.gateway.vault
    return vault


@router.post("/deployments", status_code=201)
def create_deployment(
    body: DeploymentCreate,
    request: Request,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> DeploymentPublic:
    """Serve an adapter version, an adapter's alias, a base model, an upstream or an app (over
    your other deployments) as ``name``."""
    row = deployments.create(
        session,
        user,
        _vault(request),
        allow_private=settings.egress_allow_private,
        **body.model_dump(),
    )
    return _public(session, row)


@router.put("/deployments/{deployment_id}/app")
def update_app(
    deployment_id: int, body: dict[str, Any], user: CurrentUser, session: DbSession
) -> DeploymentPublic:
    """Replace an app's spec (members, rules, defaults); the next request follows it."""
    return _public(session, deployments.update_app(session, user, deployment_id, body))


@router.get("/deployments/{deployment_id}/members")
def app_members(
    deployment_id: int, user: CurrentUser, session: DbSession, days: int = 7
) -> list[dict[str, Any]]:
    """An app's traffic and quality per member that answered (last ``days`` days)."""
    return apps.members(session, user, deployment_id, days=min(max(days, 1), 90))


@router.get("/deployments")
def list_deployments(user: CurrentUser, session: DbSession) -> list[DeploymentPublic]:
    """Your deployments, oldest first."""
    return [_public(session, r) for r in deployments.list_own(session, user)]


@router.get("/deployments/{deployment_id}")
def get_deployment(deployment_id: int, user: CurrentUser, session: DbSession) -> DeploymentPublic:
    """One of your deployments (404 for anyone else's)."""
    return _public(session, deployments.get_own(session, user, deployment_id))


@router.post("/deployments/{deployment_id}/pause")
def pause_deployment(deployment_id: int, user: CurrentUser, session: DbSession) -> DeploymentPublic:
    """Stop serving: requests get 409 until it is resumed."""
    return _public(session, deployments.set_status(session, user, deployment_id, "paused"))


@router.post("/deployments/{deployment_id}/resume")
def resume_deployment(
    deployment_id: int, user: CurrentUser, session: DbSession
) -> DeploymentPublic:
    """Serve again."""
    return _public(session, deployments.set_status(session, user, deployment_id, "active"))


@router.delete("/deployments/{deployment_id}", status_code=204)
def delete_deployment(deployment_id: int, user: CurrentUser, session: DbSession) -> None:
    """Delete a deployment; its traces and usage stay, without the link."""
    deployments.delete(session, user, deployment_id)


@router.get("/adapters/{adapter_id}/aliases")
def list_aliases(adapter_id: int, user: CurrentUser, session: DbSession) -> list[AliasPublic]:
    """Which version ``champion`` and ``challenger`` name."""
    adapters.get_visible(session, user, adapter_id)
    found = aliases.aliases_of(session, adapter_id)
    return [AliasPublic(adapter_id=adapter_id, alias=a, version=v) for a, v in found.items()]


@router.put("/adapters/{adapter_id}/aliases/{alias}")
def set_alias(
    adapter_id: int, alias: str, body: AliasSet, user: CurrentUser, session: DbSession
) -> AliasPublic:
    """Point an alias of your adapter at a version; deployments on it follow at once."""
    aliases.set_alias(session, user, adapter_id, alias, body.version)
    return AliasPublic(adapter_id=adapter_id, alias=alias, version=body.version)
