"""Pages of the catalog area: base models, adapters, deployments, API keys, the account, and
what the dashboard shows about them.

Pages read through the services' own visibility rules (``list_visible``, ``get_visible``,
``list_own``), so another user's private things never reach a template and another user's id
in a URL is a 404. Changes go through the REST API from ``static/catalog.js``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase, AppSettings
from loraloop.catalog import adapters, aliases, base_models, facets, hub
from loraloop.db.engine import utcnow
from loraloop.db.tables import (
    AdapterVersion,
    ApiKey,
    BaseModel,
    Dataset,
    DatasetVersion,
    User,
)
from loraloop.gateway import deployments
from loraloop.identity import api_keys, wallets
from loraloop.ml.models import SUGGESTED_MODELS
from loraloop.plugins import AdapterInfo, panels_of
from loraloop.web import i18n
from loraloop.web.catalog_views import (
    SUGGESTION_NOTES,
    Card,
    Suggestion,
    adapter_rows,
    count,
    deployment_rows,
    metrics,
    model_card,
    owner_name,
    snippets,
)
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _v1(request: Request) -> str:
    """The OpenAI base URL clients use, as this request reached the server."""
    return f"{request.base_url}v1"


@router.get("/models", name="models_page")
def models_page(
    request: Request, viewer: PageViewer, db: AppDatabase, settings: AppSettings
) -> Response:
    """Base models everyone may train on, and Japanese-capable ones an admin may add."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        bases = base_models.list_all(session)
    names = {b.name for b in bases}
    suggestions = [
        Suggestion(
            s.id,
            count(s.parameters),
            s.licence,
            viewer.t(SUGGESTION_NOTES[s.id]) if s.id in SUGGESTION_NOTES else s.note,
            s.id in names,
        )
        for s in SUGGESTED_MODELS
    ]
    context = {
        "active": "models",
        "bases": bases,
        "suggestions": suggestions,
        "is_admin": viewer.user.role == "admin",
        "hub_cache": str(base_models.models_dir(settings) / "hub"),
        "count": count,
    }
    return render(request, viewer, "models.html", context)


# adapters ------------------------------------------------------------------------------


@router.get("/adapters", name="adapters_page")
def adapters_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """Your adapters and everyone's public ones."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        rows = adapter_rows(session, viewer.user, adapters.list_visible(session, viewer.user))
    context = {
        "active": "adapters",
        "mine": [r for r in rows if r.mine],
        "public": [r for r in rows if not r.mine],
    }
    return render(request, viewer, "adapters.html", context)


@dataclass(frozen=True)
class VersionView:
    row: AdapterVersion
    metrics: list[tuple[str, str]]
    aliases: list[str]
    dataset: str | None
    dataset_href: str | None
    parent: int | None
    card: Card | None


def _dataset_label(
    session: Session, user: User, version_id: int | None
) -> tuple[str | None, str | None]:
    found = session.get(DatasetVersion, version_id) if version_id else None
    dataset = session.get(Dataset, found.dataset_id) if found else None
    if found is None or dataset is None:
        return None, None
    href = f"/datasets/{dataset.id}" if dataset.owner_id == user.id else None
    return f"{dataset.name} v{found.version}", href


def _version_views(
    session: Session, user: User, t: i18n.Translate, adapter_id: int, named: dict[str, int]
) -> list[VersionView]:
    rows = adapters.versions(session, user, adapter_id)
    views = []
    for row in reversed(rows):  # newest first
        label, href = _dataset_label(session, user, row.dataset_version_id)
        parent = session.get(AdapterVersion, row.parent_version_id or 0)
        views.append(
            VersionView(
                row=row,
                metrics=metrics(t, row.metrics or {}),
                aliases=[a for a in aliases.ALIASES if named.get(a) == row.version],
                dataset=label,
                dataset_href=href,
                parent=parent.version if parent else None,
                card=model_card(Path(row.path)),
            )
        )
    return views


@router.get("/adapters/{adapter_id}", name="adapter_page")
def adapter_page(
    request: Request, viewer: PageViewer, db: AppDatabase, adapter_id: int
) -> Response:
    """One adapter you own or a public one: versions, metrics, cards, lineage, aliases."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        adapter = adapters.get_visible(session, viewer.user, adapter_id)
        named = aliases.aliases_of(session, adapter.id)
        base: BaseModel = base_models.get(session, adapter.base_model_id)
        context = {
            "active": "adapters",
            "adapter": adapter,
            "base": base,
            "mine": adapter.owner_id == viewer.user.id,
            "owner_name": owner_name(session, viewer.user, adapter.owner_id),
            "aliases": named,
            "versions": _version_views(session, viewer.user, viewer.t, adapter.id, named),
            "licence_name": facets.licence_name(adapter.licence),
            "forked_from": hub.lineage(session, viewer.user, adapter),
            "licences": facets.LICENCES,
            "languages": facets.LANGUAGES,
            "tasks": facets.TASKS,
            "visibilities": adapters.VISIBILITIES,
        }
        mine = adapter.owner_id == viewer.user.id
        shown = AdapterInfo.of(adapter, base.name, named, mine=mine, lang=viewer.lang)
    context["panels"] = panels_of(request.app, shown)  # plugins' panels; escaped unless Markup
    return render(request, viewer, "adapter.html", context)


# deployments ---------------------------------------------------------------------------


Preselect = Annotated[int | None, Query(ge=1, le=2**31)]


@router.get("/deploy", name="deploy_page")
def deploy_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: Preselect = None,
    version: Preselect = None,
) -> Response:
    """Your deployments, and a form to serve an adapter, a base or an upstream as a model id."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        visible = adapters.list_visible(session, viewer.user)
        choices = [r for r in adapter_rows(session, viewer.user, visible) if r.versions]
        context: dict[str, Any] = {
            "active": "deploy",
            "deployments": deployment_rows(session, viewer.user),
            "choices": choices,
            "bases": base_models.list_all(session),
        }
    chosen = next((r for r in choices if r.adapter.id == adapter_id), None)
    context.update(
        chosen=chosen,
        chosen_version=version if chosen and version in chosen.versions else None,
        base_url=_v1(request),
        snippets=lambda model, key: snippets(
            _v1(request), model, key, viewer.t("catalog.deploy.snippet_hello")
        ),
    )
    return render(request, viewer, "deploy.html", context)


# API keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRow:
    key: ApiKey
    state: str


def _state(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "active" if api_keys.is_active(key, now) else "expired"


@router.get("/keys", name="keys_page")
def keys_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    scope: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """Your API keys (never their secrets), a form to issue one, and revocation;
    ``?scope=provider`` (from the compute page) starts the form on a provider key."""
    if viewer.user is None:
        return _see_other("/signin")
    now = utcnow()
    with db.session() as session:
        keys = [KeyRow(k, _state(k, now)) for k in api_keys.list_own(session, viewer.user)]
        names = [row.name for row in deployments.list_own(session, viewer.user)]
    context = {
        "active": "keys",
        "keys": list(reversed(keys)),  # newest first
        "deployment_names": names,
        "is_admin": viewer.user.role == "admin",
        "provider_first": scope == "provider",
    }
    return render(request, viewer, "keys.html", context)


# account -------------------------------------------------------------------------------


@router.get("/account", name="account_page")
def account_page(
    request: Request, viewer: PageViewer, db: AppDatabase, settings: AppSettings
) -> Response:
    """Display name, email, the payout wallet, language, theme and signing out."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        history = [w.address for w in wallets.history(session, viewer.user)]
        now = wallets.current(session, viewer.user)
    context = {
        "active": "account",
        "languages": i18n.LANGUAGES,
        "wallet_address": now.address if now else None,
        "wallet_history": history,
        "chain_id": settings.chain_id,
    }
    return render(request, viewer, "account.html", context)
