"""What the community pages show, made from the services' rows: items and review tasks without
their authors, refusals in the page language, ledger entries as a formula with each factor's
value and the event that earned them, and the published rules' numbers (see
:mod:`loraloop.web.pages_community`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from loraloop.contributions import items, review, rules, standings
from loraloop.db.tables import Contribution, User
from loraloop.errors import LoraloopError, NotFound, RateLimited
from loraloop.web import i18n

__all__ = [
    "EntryView",
    "Factor",
    "ItemView",
    "Refusal",
    "TaskView",
    "adapter_names",
    "blob",
    "entry",
    "item",
    "label",
    "number",
    "refusal",
    "rule_numbers",
    "shown",
    "task_views",
]


def blob(value: Any) -> Markup:
    """``value`` as JSON to put inside ``<script type="application/json">`` (``<`` escaped)."""
    text = json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c")
    return Markup(text)  # noqa: S704 - JSON with "<" escaped cannot close the script element


def number(value: float) -> str:
    """A factor or a point total as people read it: ``10``, ``0.25``, ``1,000``, ``12.345``."""
    text = f"{value:,.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def label(t: i18n.Translate, prefix: str, value: object) -> str:
    """The catalog text for ``prefix + value``, or the value itself when there is none."""
    if value is None:
        return "—"
    key = f"{prefix}{value}"
    text = t(key)
    return str(value) if text == key else text


def shown(value: Any) -> str | None:
    """An eval case's expected answer as text (a pattern list or a number as JSON)."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# what the pages show of an item ----------------------------------------------------------


@dataclass(frozen=True)
class ItemView:
    """An item as a page shows it: never its author, nor anyone's verdict."""

    id: int
    adapter_id: int
    kind: str
    status: str
    messages: list[dict[str, Any]]
    expected: str | None
    metric: str | None
    source: str | None
    novelty: float
    reason: str | None
    created_at: datetime
    decided_at: datetime | None


def item(row: Contribution) -> ItemView:
    """What a page may show of ``row`` (its fixed version once a fix was accepted)."""
    return ItemView(
        id=row.id,
        adapter_id=row.adapter_id,
        kind=row.kind,
        status=row.status,
        messages=list(row.final or row.messages),
        expected=shown(row.expected),
        metric=row.metric,
        source=(row.provenance or {}).get("source"),
        novelty=row.novelty,
        reason=row.reason,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )


def adapter_names(session: Session, user: User, ids: set[int | None]) -> dict[int, str]:
    """Names of the adapters the user may still contribute to (others show as ``#id``)."""
    names: dict[int, str] = {}
    for adapter_id in sorted(i for i in ids if i is not None):
        try:
            names[adapter_id] = items.adapter_for(session, user, adapter_id).name
        except NotFound:
            names[adapter_id] = f"#{adapter_id}"
    return names


# the review queue --------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    """One review you were drawn for: the item (what the API's ``ReviewItem`` holds), never
    its author, its status (a gold item looks like any other) or another verdict."""

    assignment_id: int
    adapter_id: int
    adapter_name: str
    state: str
    reveal_open: bool
    due_at: datetime
    kind: str
    messages: list[dict[str, Any]]
    expected: str | None
    metric: str | None
    source: str | None
    fixable: bool


def task_views(session: Session, user: User) -> list[TaskView]:
    """The user's review queue (``review.queue``) as the page shows it."""
    queue = review.queue(session, user)
    names = adapter_names(session, user, {task.item.adapter_id for task in queue})
    return [
        TaskView(
            assignment_id=task.assignment.id,
            adapter_id=task.item.adapter_id,
            adapter_name=names[task.item.adapter_id],
            state=task.assignment.state,
            reveal_open=task.item.reveal_opened_at is not None,
            due_at=task.assignment.due_at,
            kind=task.item.kind,
            messages=list(task.item.messages),
            expected=shown(task.item.expected),
            metric=task.item.metric,
            source=(task.item.provenance or {}).get("source"),
            fixable="fix" in review.verdicts_for(task.item.kind),
        )
        for task in queue
    ]


# refusals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a form did not go through: in the page language, with the service's own words."""

    form: str
    message: str
    detail: str | None = None


def refusal(t: i18n.Translate, form: str, exc: LoraloopError) -> Refusal:
    """The refusal of ``form``; a duplicate names the item it repeats."""
    param = exc.param or ""
    existing = param.split(":", 1)[1] if param.startswith("contribution:") else None
    if isinstance(exc, RateLimited) and exc.code == "contribution_rate":
        return Refusal(form, t("community.refused.rate", seconds=exc.retry_after), exc.message)
    if exc.code == "duplicate" and existing:
        return Refusal(form, t("community.refused.duplicate", id=existing), exc.message)
    if exc.code == "near_duplicate" and existing:
        return Refusal(form, t("community.refused.near_duplicate", id=existing), exc.message)
    if exc.code == "near_duplicate":
        return Refusal(form, t("community.refused.training_set"), exc.message)
    if exc.code == "no_such_account":
        return Refusal(form, t("community.refused.no_account"), exc.message)
    return Refusal(form, i18n.error_message(t, exc))


# ledger entries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """One number behind an entry: its key in the breakdown, its name on the page, its value."""

    key: str
    name: str
    value: str


@dataclass(frozen=True)
class EntryView:
    """One ledger entry: its formula with each factor's value, and the event behind it."""

    id: int
    created_at: datetime
    adapter_id: int | None
    adapter_name: str
    kind: str
    points: str
    formula: str
    factors: list[Factor]
    details: list[Factor]
    source: str
    source_href: str | None


def _factor(t: i18n.Translate, key: str, value: Any) -> Factor:
    if value is None:
        shown = "—"
    elif isinstance(value, bool):
        shown = t("community.yes" if value else "community.no")
    elif isinstance(value, int | float) and (key.endswith("_id") or key.startswith("measured")):
        shown = f"#{value}"
    elif isinstance(value, int | float):
        shown = number(value)
    elif key in ("kind", "verdict", "decided_via"):
        shown = label(t, f"community.{key}.", value)
    else:
        shown = str(value)
    return Factor(key, label(t, "community.factor.", key), shown)


def _source(t: i18n.Translate, source: dict[str, Any] | None) -> tuple[str, str | None]:
    """What earned an entry, in words, and where on the page it is (``#contribution-N``)."""
    kind = (source or {}).get("type")
    if source is None or kind not in ("contribution", "review", "promotion"):
        return t("community.source.gone"), None
    if kind == "contribution":
        text = t(
            "community.source.contribution",
            id=source["id"],
            kind=label(t, "community.kind.", source["kind"]),
            status=label(t, "community.status.", source["status"]),
        )
        return text, f"#contribution-{source['id']}"
    if kind == "review":
        text = t(
            "community.source.review",
            id=source["contribution_id"],
            verdict=label(t, "community.verdict.", source["verdict"]),
        )
        return text, None
    contribution = source.get("contribution_id")
    text = t("community.source.promotion", id=source["id"], contribution=contribution or "?")
    return text, f"#contribution-{contribution}" if contribution else None


def entry(t: i18n.Translate, line: standings.Line, names: dict[int, str]) -> EntryView:
    """The entry of ``line``: the terms of its formula first, then the rest of its breakdown."""
    row = line.entry
    breakdown = dict(row.breakdown or {})
    formula = str(breakdown.pop("formula", ""))
    breakdown.pop("points", None)
    terms = [term.strip() for term in formula.split("×") if term.strip()]
    factors = [_factor(t, term, breakdown.pop(term, None)) for term in terms]
    source, href = _source(t, line.source)
    return EntryView(
        id=row.id,
        created_at=row.created_at,
        adapter_id=row.adapter_id,
        adapter_name=names.get(row.adapter_id or 0, "—"),
        kind=row.kind,
        points=number(row.millipoints / 1000),
        formula=formula,
        factors=factors,
        details=[_factor(t, key, value) for key, value in breakdown.items()],
        source=source,
        source_href=href,
    )


# the rules -----------------------------------------------------------------------------------


def rule_numbers() -> dict[str, str]:
    """The published rules' numbers, as the formula explanation quotes them."""
    return {
        **{f"base_{kind}": number(value) for kind, value in rules.BASE_POINTS.items()},
        "fix": number(rules.FIX_WEIGHT),
        "novelty_low": number(rules.NOVELTY_MIN),
        "novelty_high": number(rules.NOVELTY_MAX),
        "drift": number(rules.DRIFT_BONUS),
        "review": number(rules.REVIEW_POINTS),
        "impact": number(rules.IMPACT_POINTS_PER_GAIN),
        "probation_weight": number(rules.PROBATION_WEIGHT),
        "probation_reviews": str(rules.PROBATION_REVIEWS),
    }
