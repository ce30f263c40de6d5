"""The maintenance dashboard of one adapter (``/adapters/{id}/maintenance``): quality over
versions and requests, what users ask now, the champion/challenger history and the gate's
decisions, retrain runs, corrections to review, evaluation suites and the retraining policy.

Everything shown comes from ``mlops.timeline.overview`` and the services' own readers, which
check ownership: anyone else gets the 404 of a missing adapter. The charts are SVG drawn on
the server, so the page reads without JavaScript; ``static/maintenance.js`` sends changes to
the REST API (``api/routes/maintenance.py``) and holds no rule of its own.

    score chart:  x = version (one slot each), y = score 0..1, a line per suite
    drift chart:  x = requests served, y = share 0..1, OOD share and bad-answer rate per
                  deployment, a vertical mark at each alarm
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase
from loraloop.db.tables import User
from loraloop.gateway import deployments
from loraloop.ml.evaluation import METRICS
from loraloop.mlops import candidates, policy, suites, timeline
from loraloop.web import i18n
from loraloop.web.catalog_views import owner_name
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: The SVG's coordinate box; the plot sits inside the margins (left, top, right, bottom).
WIDTH, HEIGHT = 480, 250
MARGIN = (60, 16, 20, 42)
#: Series colours and dash patterns cycle through this many CSS classes (mnt-series--N).
PALETTE = 6
MAX_VERSION_TICKS = 12


# charts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    label: str
    style: int
    dashed: bool
    dots: list[Dot]

    @property
    def path(self) -> str:
        return " ".join(f"{'L' if i else 'M'}{d.x:.1f} {d.y:.1f}" for i, d in enumerate(self.dots))


@dataclass(frozen=True)
class Mark:
    x: float
    title: str


@dataclass(frozen=True)
class Chart:
    lines: list[Line]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    marks: list[Mark]
    width: int = WIDTH
    height: int = HEIGHT
    left: float = MARGIN[0]
    top: float = MARGIN[1]
    right: float = WIDTH - MARGIN[2]
    bottom: float = HEIGHT - MARGIN[3]


def _y(value: float) -> float:
    """A share or score in [0, 1] as a y coordinate (1 at the top)."""
    bottom, top = HEIGHT - MARGIN[3], MARGIN[1]
    return bottom - min(1.0, max(0.0, value)) * (bottom - top)


def _share_ticks(label: Callable[[float], str]) -> list[Tick]:
    return [Tick(_y(v / 4), label(v / 4)) for v in range(5)]


def nice_ticks(high: float, count: int = 6) -> list[float]:
    """Round values from 0 covering ``high``: steps of 1, 2 or 5 × 10^n (as chart.js does)."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    step = 10 ** math.floor(math.log10(raw))
    ratio = raw / step
    step *= 10 if ratio >= 7.5 else 5 if ratio >= 3.5 else 2 if ratio >= 1.5 else 1
    return [i * step for i in range(math.ceil(high / step - 1e-9) + 1)]


def score_chart(scores: list[dict[str, Any]], versions: list[int]) -> Chart | None:
    """Eval score per version and suite; None before the first evaluation."""
    if not scores or not versions:
        return None
    left, right = MARGIN[0], WIDTH - MARGIN[2]
    slot = (right - left) / len(versions)
    at = {v: left + (i + 0.5) * slot for i, v in enumerate(versions)}
    names: list[str] = []
    for row in scores:
        if row["suite"] not in names:
            names.append(row["suite"])
    lines = []
    for style, name in enumerate(names):
        rows = sorted((r for r in scores if r["suite"] == name), key=lambda r: r["version"])
        dots = [
            Dot(at[r["version"]], _y(r["score"]), f"{name} v{r['version']}: {r['score']:.3f}")
            for r in rows
            if r["version"] in at
        ]
        lines.append(Line(name, style % PALETTE, style >= PALETTE, dots))
    every = math.ceil(len(versions) / MAX_VERSION_TICKS)
    ticks = [Tick(at[v], f"v{v}") for i, v in enumerate(versions) if i % every == 0]
    return Chart(lines, ticks, _share_ticks(lambda v: f"{v:.2f}"), [])


def drift_chart(
    t: i18n.Translate, drift: list[dict[str, Any]], names: dict[int, str]
) -> Chart | None:
    """OOD share and bad-answer rate over requests per deployment; None without reports."""
    if not drift:
        return None
    left, right = MARGIN[0], WIDTH - MARGIN[2]
    ticks = nice_ticks(max(r["requests"] for r in drift))
    span = ticks[-1] or 1.0

    def x(requests: float) -> float:
        return left + requests / span * (right - left)

    served = sorted({r["deployment_id"] for r in drift})
    lines = []
    for k, deployment in enumerate(served):
        rows = sorted((r for r in drift if r["deployment_id"] == deployment), key=_requests)
        suffix = f" · {names.get(deployment, f'#{deployment}')}" if len(served) > 1 else ""
        for field, key, dashed in (("ood_share", "ood", False), ("bad_rate", "bad", True)):
            label = t(f"maintenance.drift.{key}") + suffix
            dots = [
                Dot(x(r["requests"]), _y(r[field]), f"{label}: {r[field]:.0%} ({r['requests']:,})")
                for r in rows
                if isinstance(r[field], int | float)
            ]
            if dots:
                style = int(dashed) if len(served) == 1 else k  # colour per deployment
                lines.append(Line(label, style % PALETTE, dashed, dots))
    marks = [
        Mark(
            x(r["requests"]),
            t(
                "maintenance.drift.alarm_at",
                kind=_label(t, "maintenance.alarm.", r["alarm"]),
                requests=f"{r['requests']:,}",
            ),
        )
        for r in drift
        if r["alarm"]
    ]
    x_ticks = [Tick(x(v), f"{v:,.0f}") for v in ticks]
    return Chart(lines, x_ticks, _share_ticks(lambda v: f"{v:.0%}"), marks)


def _requests(row: dict[str, Any]) -> int:
    return int(row["requests"])


# rows -----------------------------------------------------------------------------------


def _label(t: i18n.Translate, prefix: str, value: str | None) -> str:
    """The catalog text for ``prefix + value``, or the value itself when there is none."""
    if value is None:
        return "—"
    key = prefix + value
    text = t(key)
    return value if text == key else text


def _when(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _people(session: Session, user: User, t: i18n.Translate) -> Any:
    """``name(actor_id)``: who did it; None is loraloop itself."""
    known: dict[int, str] = {}

    def name(actor_id: int | None) -> str:
        if actor_id is None:
            return t("maintenance.by.system")
        if actor_id not in known:
            known[actor_id] = owner_name(session, user, actor_id)
        return known[actor_id]

    return name


@dataclass(frozen=True)
class SuiteDelta:
    name: str
    delta: float
    low: float
    high: float
    n: int


def _suite_deltas(numbers: dict[str, Any]) -> list[SuiteDelta]:
    return [
        SuiteDelta(str(s.get("name", sid)), s["delta"], s["low"], s["high"], s["n"])
        for sid, s in (numbers.get("suites") or {}).items()
        if all(k in s for k in ("delta", "low", "high", "n"))
    ]


def _decisions(data: dict[str, Any], name: Any) -> list[dict[str, Any]]:
    return [
        {
            **d,
            "at": _when(d["at"]),
            "by": name(d["actor_id"]),
            "pooled": d["numbers"].get("pooled") or None,
            "suites": _suite_deltas(d["numbers"]),
            "judge": d["numbers"].get("judge"),
            "live": d["numbers"].get("live"),
            "margin": d["numbers"].get("margin"),
            "tolerance": d["numbers"].get("tolerance"),
        }
        for d in data["decisions"]
    ]


def _candidate_views(session: Session, user: User, adapter_id: int) -> list[dict[str, Any]]:
    views = []
    for row in candidates.list_for(session, user, adapter_id, "pending"):
        *asked, answer = row.messages or [{"role": "assistant", "content": ""}]
        views.append(
            {
                "id": row.id,
                "role": row.role,
                "at": row.created_at,
                "asked": asked,
                "answer": str(answer.get("content", "")),
            }
        )
    return views


def signed(value: float) -> str:
    return f"{value:+.3f}"


def _context(session: Session, user: User, t: i18n.Translate, adapter_id: int) -> dict[str, Any]:
    data = timeline.overview(session, user, adapter_id)  # another user's adapter: not found
    name = _people(session, user, t)
    named = {row.id: row.name for row in deployments.list_own(session, user)}
    latest = data["drift"][-1] if data["drift"] else None
    return {
        "data": data,
        "champion": data["aliases"].get("champion"),
        "challenger": data["aliases"].get("challenger"),
        "score_chart": score_chart(data["scores"], data["versions"]),
        "drift_chart": drift_chart(t, data["drift"], named),
        "latest": latest,
        "scores": [{**s, "at": _when(s["at"])} for s in data["scores"]],
        "deployment_names": named,
        "history": [
            {**h, "at": _when(h["at"]), "by": name(h["actor_id"])} for h in data["history"]
        ],
        "decisions": _decisions(data, name),
        "runs": [{**r, "at": _when(r["at"])} for r in data["runs"]],
        "candidates": _candidate_views(session, user, adapter_id),
        "suites": suites.list_for(session, user, adapter_id),
        "policy": policy.get(session, user, adapter_id),
        "modes": policy.MODES,
        "metrics": sorted(METRICS, key=lambda m: m != "contains"),  # the API's default first
        "case_example": json.dumps(
            {
                "prompt": t("maintenance.suites.form.example_prompt"),
                "expected": t("maintenance.suites.form.example_expected"),
            },
            ensure_ascii=False,
        ),
    }


@router.get("/adapters/{adapter_id}/maintenance", name="maintenance_page")
def maintenance_page(
    request: Request, viewer: PageViewer, db: AppDatabase, adapter_id: int
) -> Response:
    """Your adapter's quality over time and the loop that keeps it good (owner only)."""
    if viewer.user is None:
        return RedirectResponse("/signin", status_code=303)
    t = viewer.t
    with db.session() as session:
        context = _context(session, viewer.user, t, adapter_id)
    context.update(
        active="adapters",
        label=lambda prefix, value: _label(t, prefix, value),
        signed=signed,
    )
    return render(request, viewer, "maintenance.html", context)
