"""The hub pages: search public adapters (``/hub``) and an adapter's card (``/hub/{id}``), with
star and fork as plain forms that post back here (they work without a script).

Everything comes from :mod:`loraloop.catalog.hub`, the same reads and rules the REST API
(``/api/hub/...``) uses, so another user's private adapter is a 404 here as there. The model
card is the version's README rendered by the catalog's safe Markdown (no HTML, links or
images: see :func:`loraloop.web.catalog_views.model_card`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase
from loraloop.catalog import base_models, facets, hub
from loraloop.errors import Conflict, InvalidRequest
from loraloop.web import csrf, i18n
from loraloop.web.catalog_views import metrics, model_card
from loraloop.web.community_views import number
from loraloop.web.routes import safe_next
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer, Viewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

AdapterId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Filter = Annotated[str, Query(max_length=40)]
Token = Annotated[str, Form(max_length=256)]
PAGE_SIZE = 24
#: Errors the fork form shows beside itself; anything else (a 404 above all) is the error page.
FORK_ERRORS = (InvalidRequest, Conflict)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _facet_context(viewer: Viewer) -> dict[str, Any]:
    t = viewer.t
    return {
        "licences": facets.LICENCES,
        "languages": [(code, t(f"hub.language.{code}")) for code in facets.LANGUAGES],
        "tasks": [(code, t(f"hub.task.{code}")) for code in facets.TASKS],
        "sorts": hub.SORTS,
    }


@router.get("/hub", name="hub_page")
def hub_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    q: Annotated[str, Query(max_length=200)] = "",
    base_model_id: Filter = "",
    language: Filter = "",
    task: Filter = "",
    licence: Filter = "",
    sort: Filter = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """Public adapters, searched and filtered, a page at a time; a bad filter is shown above
    the results."""
    if viewer.user is None:
        return _see_other("/signin")
    chosen = {
        "q": q,
        "base_model_id": base_model_id,
        "language": language,
        "task": task,
        "licence": licence,
        "sort": sort or "stars",
    }
    problem, status = None, 200
    with db.session() as session:
        try:
            found = hub.search(
                session,
                viewer.user,
                q=q,
                base_model_id=base_model_id,
                language=language,
                task=task,
                licence=licence,
                sort=chosen["sort"],
                limit=PAGE_SIZE,
                offset=(page - 1) * PAGE_SIZE,
            )
        except InvalidRequest as exc:
            found, problem, status = hub.Results(0, []), i18n.error_message(viewer.t, exc), 400
        bases = [(b.id, b.name) for b in base_models.list_all(session)]
    context = {
        "active": "adapters",
        "results": found,
        "chosen": chosen,
        "bases": bases,
        "problem": problem,
        "filtered": any(v for k, v in chosen.items() if k != "sort"),
        "page": page,
        "pages": max(1, -(-found.total // PAGE_SIZE)),
        "query": urlencode(chosen),
        **_facet_context(viewer),
    }
    return render(request, viewer, "hub.html", context, status_code=status)


@dataclass(frozen=True)
class Row:
    """A version on the card: its numbers in the page language."""

    version: int
    sha256: str
    created_at: Any
    metrics: list[tuple[str, str]]
    champion: bool


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def _quality(card: hub.Card) -> dict[str, Any]:
    """The quality block: newest scores, feedback rate per version, the latest drift check."""
    data = card.quality
    drift = data["drift"]
    latest = drift[-1] if drift else None
    return {
        "scores": [
            {**s, "score": "—" if s["score"] is None else f"{s['score']:.3f}"}
            for s in data["scores"][-12:]
        ],
        "live": [{**v, "bad_rate": _percent(v["bad_rate"])} for v in data["live"]],
        "drift": latest
        and {
            **latest,
            "ood_share": _percent(latest["ood_share"]),
            "p_value": "—" if latest["p_value"] is None else f"{latest['p_value']:.3g}",
        },
        "drift_checks": len(drift),
        "drift_alarms": sum(1 for d in drift if d["alarm"]),
    }


def _card_page(
    request: Request,
    viewer: Viewer,
    db: AppDatabase,
    adapter_id: int,
    *,
    version: int | None = None,
    fork_error: str | None = None,
    forked: bool = False,
    status_code: int = 200,
) -> Response:
    assert viewer.user is not None
    with db.session() as session:
        card = hub.card(session, viewer.user, adapter_id, version=version)
    champion = card.entry.champion
    # the card's own headings sit under the page's h1 and the section's h2
    readme = model_card(FilePath(card.shown.path), heading_offset=2) if card.shown else None
    context = {
        "active": "adapters",
        "card": card,
        "entry": card.entry,
        "adapter": card.entry.adapter,
        "mine": card.entry.adapter.owner_id == viewer.user.id,
        "model_card": readme,
        "rows": [
            Row(
                v.version,
                v.sha256,
                v.created_at,
                metrics(viewer.t, v.metrics or {}),
                v.version == champion,
            )
            for v in reversed(card.versions)
        ],
        "quality": _quality(card),
        "target": card.fork_target,
        "fork_error": fork_error,
        "forked": forked,
        "language_label": viewer.t(f"hub.language.{card.entry.adapter.language}"),
        "task_label": viewer.t(f"hub.task.{card.entry.adapter.task}"),
        "points": lambda millipoints: number(millipoints / 1000),
    }
    return render(request, viewer, "hub_card.html", context, status_code=status_code)


@router.get("/hub/{adapter_id}", name="hub_card_page")
def hub_card_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    forked: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """An adapter's card: model card, versions, live quality, people, lineage, use and fork."""
    if viewer.user is None:
        return _see_other("/signin")
    return _card_page(request, viewer, db, adapter_id, version=version, forked=bool(forked))


@router.post("/hub/{adapter_id}/star", name="hub_star")
def hub_star(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    csrf_token: Token = "",
    starred: Annotated[str, Form(max_length=8)] = "true",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "",
) -> Response:
    """Star (``starred=true``) or unstar, then go back where the form was."""
    if viewer.user is None:
        return _see_other("/signin")
    csrf.check(request, csrf_token, viewer.web_session)
    with db.session() as session:
        change = hub.star if starred == "true" else hub.unstar
        change(session, viewer.user, adapter_id)
    return _see_other(safe_next(next_path or f"/hub/{adapter_id}"))


@router.post("/hub/{adapter_id}/fork", name="hub_fork")
def hub_fork(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    csrf_token: Token = "",
    version: Annotated[str, Form(max_length=12)] = "",
    name: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Fork a version into a private adapter of yours and show the fork's card."""
    if viewer.user is None:
        return _see_other("/signin")
    csrf.check(request, csrf_token, viewer.web_session)
    chosen = int(version) if version.strip().isdigit() else None
    try:
        with db.session() as session:
            copy = hub.fork(
                session, viewer.user, adapter_id, version=chosen, name=name.strip() or None
            )
            copy_id = copy.id
    except FORK_ERRORS as exc:
        message = i18n.error_message(viewer.t, exc)
        return _card_page(
            request, viewer, db, adapter_id, fork_error=message, status_code=exc.status_code
        )
    return _see_other(f"/hub/{copy_id}?forked=1")
