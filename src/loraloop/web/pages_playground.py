"""The playground page: chat with a deployment, an adapter version or a base model, keep the
conversations, rate and correct answers, and compare two models side by side.

The page renders what the viewer may talk to (their own deployments, the adapter versions
they can see, the base models) and, for ``?conversation=``, the conversation to reopen; the
chat itself runs in ``static/playground.js`` against ``/api/playground`` and ``/api/feedback``.

A choice's value names its target in the chat body's terms: ``deployment:<name>``,
``adapter:<id>:<version>`` or ``base:<id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase
from loraloop.catalog import adapters, aliases, base_models
from loraloop.db.tables import Adapter, Deployment, User
from loraloop.gateway import conversations, deployments
from loraloop.web import i18n
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = ["Choice", "Group", "choices", "preselect", "router"]

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Choice:
    """One ``<option>``: what to send (``value``), what people read (``label``) and the base
    model it runs on (``None`` for an external upstream), so the page knows which two targets
    share an engine and may stream at the same time."""

    value: str
    label: str
    base: int | None = None


@dataclass(frozen=True)
class Group:
    """One ``<optgroup>``; ``champion`` is the value of the adapter's champion version."""

    label: str
    choices: list[Choice] = field(default_factory=list)
    adapter_id: int | None = None
    champion: str | None = None


def _base_of(session: Session, row: Deployment) -> int | None:
    if row.kind == "base":
        return row.base_model_id
    adapter = session.get(Adapter, row.adapter_id) if row.adapter_id else None
    return adapter.base_model_id if adapter else None


def _deployment_group(session: Session, user: User, t: i18n.Translate) -> Group:
    group = Group(t("playground.group.deployments"))
    for row in deployments.list_own(session, user):
        label = t(
            "playground.target.deployment",
            name=row.name,
            target=deployments.target_label(session, row),
        )
        if row.status != "active":
            label = t("playground.target.paused", label=label)
        group.choices.append(Choice(f"deployment:{row.name}", label, _base_of(session, row)))
    return group


def _adapter_group(session: Session, user: User, adapter: Adapter, t: i18n.Translate) -> Group:
    if adapter.owner_id == user.id:
        label = t("playground.group.adapter", name=adapter.name)
    else:
        owner = session.get(User, adapter.owner_id)
        label = t(
            "playground.group.adapter_of",
            name=adapter.name,
            owner=owner.display_name if owner else "?",
        )
    named = {version: alias for alias, version in aliases.aliases_of(session, adapter.id).items()}
    champion = None
    choices = []
    for version in reversed(adapters.versions(session, user, adapter.id)):
        value = f"adapter:{adapter.id}:{version.version}"
        text = t("playground.target.version", name=adapter.name, version=version.version)
        alias = named.get(version.version)
        if alias is not None:
            text = t(f"playground.target.{alias}", label=text)
        if alias == "champion":
            champion = value
        choices.append(Choice(value, text, adapter.base_model_id))
    return Group(label, choices, adapter_id=adapter.id, champion=champion)


def _base_group(session: Session, t: i18n.Translate) -> Group:
    group = Group(t("playground.group.bases"))
    for base in base_models.list_all(session):
        label = t("playground.target.base", name=base.name)
        group.choices.append(Choice(f"base:{base.id}", label, base.id))
    return group


def choices(session: Session, user: User, t: i18n.Translate) -> list[Group]:
    """What ``user`` may talk to, grouped: own deployments, visible adapters (own first, each
    version newest first, versions only), base models. Empty groups are left out."""
    visible = adapters.list_visible(session, user)
    ordered = sorted(visible, key=lambda a: (a.owner_id != user.id, a.name.lower(), a.id))
    groups = [
        _deployment_group(session, user, t),
        *(_adapter_group(session, user, a, t) for a in ordered),
        _base_group(session, t),
    ]
    return [g for g in groups if g.choices]


def preselect(
    groups: list[Group], *, adapter_id: int | None, version: int | None, deployment: str | None
) -> str | None:
    """The value that ``?adapter_id=&version=`` or ``?deployment=`` asks for, when it is one of
    the viewer's choices (a champion, else the newest version, when no version is given)."""
    values = {c.value for g in groups for c in g.choices}
    if deployment is not None:
        wanted = f"deployment:{deployment}"
        return wanted if wanted in values else None
    if adapter_id is None:
        return None
    if version is not None:
        wanted = f"adapter:{adapter_id}:{version}"
        return wanted if wanted in values else None
    for group in groups:
        if group.adapter_id == adapter_id:
            return group.champion or group.choices[0].value
    return None


def _conversation(session: Session, user: User, conversation_id: int) -> dict[str, Any]:
    row = conversations.get_own(session, user, conversation_id)
    return {
        "id": row.id,
        "title": row.title,
        "target": row.target,
        "settings": row.settings,
        "messages": row.messages,
    }


@router.get("/playground", name="playground")
def playground(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: Annotated[int | None, Query(ge=1)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    deployment: Annotated[str | None, Query(max_length=64)] = None,
    conversation: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The chat page; ``?conversation=`` reopens one of yours (anyone else's is 404)."""
    if viewer.user is None:
        return RedirectResponse("/signin", status_code=303)
    with db.session() as session:
        opened = _conversation(session, viewer.user, conversation) if conversation else None
        groups = choices(session, viewer.user, viewer.t)
        saved = conversations.list_own(session, viewer.user)
        history = [{"id": c.id, "title": c.title} for c in saved]
    chosen = preselect(groups, adapter_id=adapter_id, version=version, deployment=deployment)
    context = {
        "active": "playground",
        "groups": groups,
        "selected": chosen,
        "conversations": history,
        "conversation": opened,
    }
    return render(request, viewer, "playground.html", context)
