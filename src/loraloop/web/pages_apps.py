"""The apps pages: ``/apps`` lists your apps; ``/apps/new`` and ``/apps/{id}`` are the builder
(type, members, a router's rules, meaning and default, the app's system prompt and defaults)
and, for an app that exists, its traffic and quality per member.

The builder holds no rule of its own: ``static/apps.js`` turns the form into the spec of
:mod:`loraloop.gateway.apps` and sends it to ``POST /api/deployments`` or
``PUT /api/deployments/{id}/app``; the service checks it, and its message (every problem at
once) is shown beside the form. Pages read through ``deployments.get_own``, so another user's
app is the same 404 as a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase
from loraloop.db.tables import Deployment, User
from loraloop.errors import NotFound
from loraloop.gateway import apps, deployments
from loraloop.web import i18n
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer, Viewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: The window of the traffic and quality table (``apps.members``' default).
DAYS = 7
#: The largest id a row may have (a 32-bit integer on every database we run on).
MAX_ID = 2**31 - 1
#: What a new app starts as: the builder's main case.
NEW_TYPE = "router"


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# the list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppRow:
    deployment: Deployment
    type: str
    members: list[str]


def _app_rows(session: Session, user: User) -> list[AppRow]:
    rows = []
    for row in deployments.list_own(session, user):
        if row.kind == "app":
            spec = row.app or {}
            names = [str(m.get("name") or m.get("deployment")) for m in spec.get("members", [])]
            rows.append(AppRow(row, str(spec.get("type", "")), names))
    return rows


@router.get("/apps", name="apps_page")
def apps_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """Your apps: type, members, status."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        rows = _app_rows(session, viewer.user)
        others = sum(1 for d in deployments.list_own(session, viewer.user) if d.kind != "app")
    context = {
        "active": "apps",
        "apps": rows,
        "types": apps.TYPES,
        "has_deployments": others > 0,
    }
    return render(request, viewer, "apps.html", context)


# the builder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One deployment a member may name: ``label`` says what it serves."""

    name: str
    label: str
    missing: bool = False


def _choices(session: Session, user: User, spec: dict[str, Any], own: int | None) -> list[Choice]:
    """The viewer's deployments but the app itself, plus any the spec names that are gone
    (so the form still shows them and the service can say what is wrong)."""
    found = [
        Choice(d.name, f"{d.name} — {deployments.target_label(session, d)}")
        for d in deployments.list_own(session, user)
        if d.id != own
    ]
    known = {c.name for c in found}
    for member in spec.get("members", []):
        name = str(member.get("deployment", ""))
        if name and name not in known:
            found.append(Choice(name, name, missing=True))
            known.add(name)
    return found


def _number(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _form(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the form's fields hold it: text, comma-separated lists, ``key=value``."""
    members = [
        {
            "deployment": str(m.get("deployment", "")),
            # a name equal to the deployment's is the service's default: leave the field empty
            "name": "" if m.get("name") in (None, m.get("deployment")) else str(m["name"]),
            "description": str(m.get("description", "")),
            "timeout": _number(m.get("timeout_seconds")),
        }
        for m in spec.get("members", [])
    ]
    rules = [
        {
            "member": str(r.get("member", "")),
            "keywords": ", ".join(r.get("keywords", [])),
            "regex": str(r.get("regex", "")),
            "metadata": ", ".join(f"{k}={v}" for k, v in (r.get("metadata") or {}).items()),
        }
        for r in spec.get("rules", [])
    ]
    semantic = spec.get("semantic")
    defaults = spec.get("defaults") or {}
    return {
        "type": spec.get("type") or NEW_TYPE,
        "members": members,
        "names": [m["name"] or m["deployment"] for m in members],
        "rules": rules,
        "semantic": semantic is not None,
        # empty unless set: the service's own default applies (the hint says which)
        "threshold": _number((semantic or {}).get("threshold")),
        "default": str(spec.get("default") or ""),
        "system_prompt": str(spec.get("system_prompt") or ""),
        "defaults": {
            key: _number(defaults.get(key)) for key in ("temperature", "top_p", "max_tokens")
        },
    }


@dataclass(frozen=True)
class MemberStats:
    """One row of the traffic and quality table, formatted for the page."""

    deployment: str
    direct: bool
    requests: str
    failed: str
    tokens: str
    latency: str
    bad_rate: str
    rated: int


def _stats(session: Session, user: User, row: Deployment, t: i18n.Translate) -> list[MemberStats]:
    direct = {str(m.get("deployment")) for m in (row.app or {}).get("members", [])}
    return [
        MemberStats(
            deployment=entry["deployment"],
            direct=entry["deployment"] in direct,
            requests=f"{entry['requests']:,}",
            failed=f"{entry['failed']:,}",
            tokens=f"{entry['tokens']:,}",
            latency=t("apps.stats.ms", ms=f"{entry['latency_ms']:,.0f}")
            if entry["requests"]
            else "—",
            bad_rate="—" if entry["bad_rate"] is None else f"{entry['bad_rate']:.0%}",
            rated=entry["rated"],
        )
        for entry in apps.members(session, user, row.id, days=DAYS)
    ]


def _builder(
    request: Request, viewer: Viewer, session: Session, row: Deployment | None, saved: bool
) -> Response:
    assert viewer.user is not None
    spec = dict(row.app or {}) if row is not None else {}
    if row is None:
        spec["members"] = [{"deployment": ""}]  # one empty row to start from
    context = {
        "active": "apps",
        "app": row,
        "form": _form(spec),
        "types": apps.TYPES,
        "choices": _choices(session, viewer.user, spec, row.id if row else None),
        "stats": _stats(session, viewer.user, row, viewer.t) if row is not None else [],
        "days": DAYS,
        "saved": saved,
    }
    return render(request, viewer, "app_builder.html", context)


@router.get("/apps/new", name="new_app_page")
def new_app_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """The builder for a new app over your deployments."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        return _builder(request, viewer, session, None, saved=False)


@router.get("/apps/{app_id}", name="app_page")
def app_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    app_id: int,
    saved: Annotated[bool, Query()] = False,
) -> Response:
    """One of your apps: the builder with its spec, and its traffic and quality per member."""
    if viewer.user is None:
        return _see_other("/signin")
    if not 0 < app_id <= MAX_ID:  # no row has such an id (and the database could not hold it)
        raise NotFound(f"app {app_id} not found", param="app_id")
    with db.session() as session:
        row = deployments.get_own(session, viewer.user, app_id)
        if row.kind != "app":  # a plain deployment has no builder: the same 404 as a missing app
            raise NotFound(f"app {app_id} not found", param="app_id")
        return _builder(request, viewer, session, row, saved=saved)
