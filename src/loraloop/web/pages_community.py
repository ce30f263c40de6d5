"""The community pages: an adapter's community (``/adapters/{id}/community``), your review
queue (``/reviews``) and your contributions and points (``/me/points``).

The community page's forms post back here: each route checks the CSRF token, calls one
service of :mod:`loraloop.contributions` and redirects (303) to the page with a notice, or
renders the page again with the service's refusal beside the form that caused it (a duplicate
names the item it repeats). The review queue commits and reveals from ``static/community.js``
through the REST API, since the salt must stay in the browser until the reveal. Every number
of the points formula shown here comes from :mod:`loraloop.contributions.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase, AppSettings, AppStorage
from loraloop.contributions import content, items, reputation, rules, standings
from loraloop.db.engine import Database
from loraloop.db.tables import User
from loraloop.errors import Conflict, InvalidRequest, PermissionDenied, RateLimited
from loraloop.ml.evaluation import METRICS
from loraloop.web import csrf
from loraloop.web.community_views import (
    Refusal,
    adapter_names,
    blob,
    entry,
    item,
    label,
    number,
    refusal,
    rule_numbers,
    task_views,
)
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer, Viewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

AdapterId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Token = Annotated[str, Form(max_length=256)]
Text = Annotated[str, Form(max_length=content.MAX_ITEM_BYTES)]
Short = Annotated[str, Form(max_length=2000)]
Kind = Annotated[Literal["example", "eval_case"], Form()]
Flag = Annotated[Literal["true", "false"], Form()]

#: Errors a form shows beside itself; anything else (a 404 above all) is the error page.
FORM_ERRORS = (InvalidRequest, PermissionDenied, Conflict, RateLimited)
#: The notice after a form went through (``?done=``) -> the section it belongs to.
DONE = {
    "submitted": "offer",
    "accepted_own": "offer",
    "reviewer_on": "pool",
    "reviewer_off": "pool",
    "accepted": "pending",
    "rejected": "pending",
    "gold": "gold",
    "invited": "invite",
}


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# the community page ------------------------------------------------------------------------


def _reviewer(session: Session, user: User, adapter_id: int) -> bool:
    member = items.membership(session, user, adapter_id)
    return bool(member and member.reviewer)


def _community(session: Session, user: User, adapter_id: int) -> dict[str, Any]:
    """What the page shows ``user``; its owner also gets the items waiting for a decision."""
    adapter = items.adapter_for(session, user, adapter_id)  # others: not found
    mine = adapter.owner_id == user.id
    pending = items.list_for_adapter(session, user, adapter.id, "pending") if mine else []
    return {
        "adapter": adapter,
        "mine": mine,
        "reviewer": not mine and _reviewer(session, user, adapter.id),
        "counts": items.counts(session, adapter.id),
        "board": standings.leaderboard(session, user, adapter.id),
        "pending": [item(row) for row in pending],
        "numbers": rule_numbers(),
        "metrics": sorted(METRICS, key=lambda m: m != "contains"),  # the service's default first
    }


def _show(
    request: Request,
    viewer: Viewer,
    db: Database,
    adapter_id: int,
    *,
    done: str | None = None,
    done_id: int | None = None,
    problem: Refusal | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The page, with the notice of what just went through or the refusal of a form."""
    assert viewer.user is not None
    with db.session() as session:
        context = _community(session, viewer.user, adapter_id)
    placed = {"example", "eval_case"} | ({"gold"} if context["mine"] else {"pool"})
    if context["mine"] and context["adapter"].visibility == "private":
        placed.add("invite")
    placed |= {f"decide-{row.id}" for row in context["pending"]}
    context.update(
        active="adapters",
        # a refusal of a form the page no longer shows (an item decided meanwhile) goes on top
        loose=problem if problem is not None and problem.form not in placed else None,
        done=done,
        done_in=DONE.get(done or ""),
        done_id=done_id,
        refusal=problem,
        values={problem.form: values or {}} if problem else {},
        label=lambda prefix, value: label(viewer.t, prefix, value),
        number=number,
    )
    return render(
        request, viewer, "community.html", context, status_code=status_code, headers=headers
    )


@router.get("/adapters/{adapter_id}/community", name="community_page")
def community_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    done: Annotated[str | None, Query(max_length=32)] = None,
    done_id: Annotated[int | None, Query(alias="id", ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Contribute to an adapter, join its reviewers, see its leaderboard; its owner decides."""
    if viewer.user is None:
        return _see_other("/signin")
    known = done if done in DONE else None  # a notice someone typed into the URL is ignored
    return _show(request, viewer, db, adapter_id, done=known, done_id=done_id)


Work = Callable[[Session, User], tuple[str, int | None]]


def _attempt(
    request: Request,
    viewer: Viewer,
    db: Database,
    adapter_id: int,
    token: str,
    form: str,
    values: dict[str, str],
    work: Work,
) -> Response:
    """Run one service call: go back to the page with its notice, or show why it was refused."""
    if viewer.user is None:
        return _see_other("/signin")
    csrf.check(request, token, viewer.web_session)
    user = viewer.user
    try:
        with db.session() as session:
            done, done_id = work(session, user)
    except FORM_ERRORS as exc:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return _show(
            request,
            viewer,
            db,
            adapter_id,
            problem=refusal(viewer.t, form, exc),
            values=values,
            status_code=exc.status_code,
            headers=headers,
        )
    query = f"done={done}" + (f"&id={done_id}" if done_id is not None else "")
    return _see_other(f"/adapters/{adapter_id}/community?{query}#{DONE[done]}")


def _offered(kind: str, question: str, answer: str, metric: str) -> dict[str, Any]:
    """The form's fields as the item the service reads (an example or an eval case)."""
    if kind == "eval_case":
        return {"prompt": question, "expected": answer, **({"metric": metric} if metric else {})}
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


@router.post("/adapters/{adapter_id}/community/contributions", name="community_contribute")
def contribute(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    storage: AppStorage,
    adapter_id: AdapterId,
    kind: Kind,
    csrf_token: Token = "",
    question: Text = "",
    answer: Text = "",
    metric: Annotated[str, Form(max_length=32)] = "",
    source: Short = "",
) -> Response:
    """Offer a training example or an eval case (``items.submit``)."""

    def work(session: Session, user: User) -> tuple[str, int | None]:
        row = items.submit(
            session,
            settings,
            storage,
            user,
            adapter_id,
            kind=kind,
            item=_offered(kind, question, answer, metric),
            source=source.strip() or None,
            via="web",
        )
        return ("accepted_own" if row.status == "accepted" else "submitted"), row.id

    values = {"question": question, "answer": answer, "metric": metric, "source": source}
    return _attempt(request, viewer, db, adapter_id, csrf_token, kind, values, work)


@router.post("/adapters/{adapter_id}/community/reviewer", name="community_reviewer")
def reviewer(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    join: Flag,
    csrf_token: Token = "",
) -> Response:
    """Join or leave the adapter's reviewer pool (``items.enrol``)."""

    def work(session: Session, user: User) -> tuple[str, int | None]:
        items.enrol(session, user, adapter_id, reviewer=join == "true")
        return ("reviewer_on" if join == "true" else "reviewer_off"), None

    return _attempt(request, viewer, db, adapter_id, csrf_token, "pool", {}, work)


@router.post("/adapters/{adapter_id}/community/decisions", name="community_decide")
def decide(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    contribution: Annotated[int, Form(ge=1, le=2**31 - 1)],
    accept: Flag,
    csrf_token: Token = "",
    reason: Short = "",
) -> Response:
    """The owner accepts or rejects a pending item directly (``items.decide``)."""

    def work(session: Session, user: User) -> tuple[str, int | None]:
        row = items.decide(
            session, user, contribution, accept=accept == "true", reason=reason.strip() or None
        )
        return ("accepted" if row.status == "accepted" else "rejected"), row.id

    form = f"decide-{contribution}"
    return _attempt(request, viewer, db, adapter_id, csrf_token, form, {"reason": reason}, work)


@router.post("/adapters/{adapter_id}/community/gold", name="community_gold")
def gold(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    adapter_id: AdapterId,
    verdict: Annotated[Literal["accept", "reject"], Form()],
    csrf_token: Token = "",
    question: Text = "",
    answer: Text = "",
) -> Response:
    """The owner adds a training example whose right verdict is known (``items.add_gold``)."""

    def work(session: Session, user: User) -> tuple[str, int | None]:
        row = items.add_gold(
            session,
            settings,
            user,
            adapter_id,
            kind="example",
            item=_offered("example", question, answer, ""),
            verdict=verdict,
        )
        return "gold", row.id

    values = {"question": question, "answer": answer, "verdict": verdict}
    return _attempt(request, viewer, db, adapter_id, csrf_token, "gold", values, work)


@router.post("/adapters/{adapter_id}/community/invites", name="community_invite")
def invite(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    adapter_id: AdapterId,
    csrf_token: Token = "",
    email: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    """The owner lets someone contribute to and review for a private adapter."""

    def work(session: Session, user: User) -> tuple[str, int | None]:
        items.invite(session, user, adapter_id, email)
        return "invited", None

    return _attempt(request, viewer, db, adapter_id, csrf_token, "invite", {"email": email}, work)


# the review queue --------------------------------------------------------------------------


@router.get("/reviews", name="reviews_page")
def reviews_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """The reviews you were drawn for: commit a sealed verdict, then reveal it."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        tasks = task_views(session, viewer.user)
    context = {
        "active": "reviews",
        "tasks": tasks,
        "label": lambda prefix, value: label(viewer.t, prefix, value),
        "page_data": blob({str(task.assignment_id): {"messages": task.messages} for task in tasks}),
    }
    return render(request, viewer, "reviews.html", context)


# my contributions and my points ------------------------------------------------------------


@router.get("/me/points", name="points_page")
def points_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """Your points with the formula and source of every entry, your reputation, your items."""
    if viewer.user is None:
        return _see_other("/signin")
    t = viewer.t
    with db.session() as session:
        total, lines = standings.my_points(session, viewer.user)
        standing = reputation.standing(session, viewer.user.id).as_dict()
        mine = [item(row) for row in items.list_mine(session, viewer.user)]
        ids = {line.entry.adapter_id for line in lines} | {row.adapter_id for row in mine}
        names = adapter_names(session, viewer.user, ids)
    context = {
        "active": "rewards",
        "total": number(total / 1000),
        "standing": standing,
        "probation_reviews": rules.PROBATION_REVIEWS,
        "probation_weight": number(rules.PROBATION_WEIGHT),
        "entries": [entry(t, line, names) for line in lines],
        "mine": mine,
        "names": names,
        "label": lambda prefix, value: label(t, prefix, value),
        "number": number,
    }
    return render(request, viewer, "points.html", context)
