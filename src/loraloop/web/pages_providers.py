"""The compute page (``/providers``): the signed-in user's provider nodes with what they
reported and how reliable their work proved, their recent work (training or evaluation) with
its verification (an evaluation's rescoring and spot check: answers agreeing of those
sampled), and the compute points it earned, each credit with its formula. Without a node yet,
the three steps to start one (a provider key, the install, the ``loraloop worker`` command for
this server).

Everything is read through :mod:`loraloop.providers` (``nodes.mine``, ``nodes.reliability``,
``work.recent``, ``work.job_kinds``, ``earnings``), so another user's nodes never reach the
template.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase
from loraloop.db.tables import PointsEntry, ProviderNode, ProviderWork
from loraloop.providers import earnings, nodes, work
from loraloop.web import i18n
from loraloop.web.community_views import number
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = [
    "INSTALL",
    "KEY_PLACEHOLDER",
    "NOTES",
    "STATUSES",
    "hardware",
    "router",
    "worker_command",
]

router = APIRouter(include_in_schema=False)

INSTALL = "git clone <the loraloop repository> loraloop && cd loraloop && scripts/bootstrap"
KEY_PLACEHOLDER = "YOUR_PROVIDER_KEY"
STATUSES = ("running", "verifying", "confirming", "accepted", "rejected", "lost", "failed")
"""The states of ``ProviderWork`` the page has a label for (``providers.status.*``)."""
NOTES = ("running", "verifying", "lost")
"""States without a verdict yet, explained instead (``providers.work.note.*``)."""
_SHORT = 60
"""Reported strings (GPU names, versions) are the node's own words: cut to this length."""


def worker_command(server: str, key: str = KEY_PLACEHOLDER) -> str:
    return f"loraloop worker --server {server} --token {key}"


@dataclass(frozen=True)
class NodeView:
    node: ProviderNode
    reliability: float
    percent: str
    hardware: list[str]


@dataclass(frozen=True)
class WorkView:
    work: ProviderWork
    kind: str
    """The job's kind, in words (``job.kind.*``)."""
    node_name: str
    reason: str | None
    numbers: list[str]
    points: str | None


@dataclass(frozen=True)
class CreditView:
    entry: PointsEntry
    points: str
    tokens: str
    tokens_label: str
    """Tokens trained or tokens evaluated, as the credit's work was."""
    parameters: str
    formula: str
    job_id: Any
    node_name: str


def _short(value: Any) -> str:
    text = str(value).strip()
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def _gpus(t: i18n.Translate, gpus: Any) -> str:
    if not isinstance(gpus, list) or not gpus:
        return t("providers.hw.no_gpu")
    kinds = Counter(
        (_short(g.get("name") or "GPU"), number(float(g.get("memory_gb") or 0)))
        for g in gpus
        if isinstance(g, dict)
    )
    return ", ".join(
        t("providers.hw.gpus", count=count, name=name, memory=memory)
        if count > 1
        else t("providers.hw.gpu", name=name, memory=memory)
        for (name, memory), count in kinds.items()
    )


def hardware(t: i18n.Translate, capabilities: dict[str, Any]) -> list[str]:
    """The capability report in short: cores, memory, GPUs, torch and CUDA versions."""
    shown = []
    if isinstance(capabilities.get("cpu_count"), int):
        shown.append(t("providers.hw.cpu", count=capabilities["cpu_count"]))
    if isinstance(capabilities.get("memory_gb"), (int, float)):
        shown.append(t("providers.hw.memory", memory=number(capabilities["memory_gb"])))
    shown.append(_gpus(t, capabilities.get("gpus")))
    if capabilities.get("torch"):
        shown.append(f"torch {_short(capabilities['torch'])}")
    cuda = capabilities.get("cuda")
    shown.append(f"CUDA {_short(cuda)}" if cuda else t("providers.hw.no_cuda"))
    return shown


def _loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def _checks(t: i18n.Translate, verification: dict[str, Any]) -> list[str]:
    """An evaluation's two checks: answers rescored, then the sampled answers that agreed."""
    shown = []
    rescore = verification.get("rescore")
    if isinstance(rescore, dict) and isinstance(rescore.get("cases"), int):
        shown.append(t("providers.work.rescored", n=rescore["cases"]))
    sampled = verification.get("sampled")
    if isinstance(sampled, int) and sampled:
        agreed = int(verification.get("agreed") or 0)
        shown.append(
            t(
                "providers.work.agreement",
                agreed=agreed,
                sampled=sampled,
                share=f"{agreed / sampled:.0%}",
            )
        )
        checked = verification.get("losses_checked")
        if isinstance(checked, int) and checked:
            shown.append(
                t(
                    "providers.work.loss_checks",
                    agreed=int(verification.get("losses_agreed") or 0),
                    checked=checked,
                    tolerance=f"{float(verification.get('loss_tolerance') or 0):.0%}",
                )
            )
    return shown


def _numbers(t: i18n.Translate, verification: dict[str, Any]) -> list[str]:
    shown = _checks(t, verification)
    if "adapter_loss" in verification or "base_loss" in verification:
        shown.append(
            t(
                "providers.work.losses",
                adapter=_loss(verification.get("adapter_loss")),
                base=_loss(verification.get("base_loss")),
            )
        )
    if verification.get("tokens"):
        shown.append(t("providers.work.tokens", n=f"{int(verification['tokens']):,}"))
    if verification.get("params"):
        shown.append(t("providers.work.params", n=f"{int(verification['params']):,}"))
    return shown


def _work_view(
    t: i18n.Translate,
    row: ProviderWork,
    names: dict[int, str],
    earned: dict[int, str],
    kinds: dict[int, str],
) -> WorkView:
    verification = row.verification or {}
    kind = kinds.get(row.job_id, "train")
    reason = verification.get("reason")
    if reason is None and row.status in NOTES:
        note = "verifying_evaluation" if kind == "evaluate" and row.status == "verifying" else ""
        reason = t(f"providers.work.note.{note or row.status}")
    return WorkView(
        work=row,
        kind=t(f"job.kind.{kind}"),
        node_name=names.get(row.node_id, f"#{row.node_id}"),
        reason=str(reason) if reason is not None else None,
        numbers=_numbers(t, verification),
        points=earned.get(row.id),
    )


def _credit_view(entry: PointsEntry, names: dict[int, str]) -> CreditView:
    breakdown = entry.breakdown or {}
    node_id = breakdown.get("node_id")
    return CreditView(
        entry=entry,
        points=number(entry.millipoints / 1000),
        tokens=f"{int(breakdown.get('tokens') or 0):,}",
        tokens_label=(
            "providers.credits.tokens_evaluated"
            if breakdown.get("work") == "evaluation"
            else "providers.credits.tokens"
        ),
        parameters=f"{int(breakdown.get('parameters') or 0):,}",
        formula=str(breakdown.get("formula") or ""),
        job_id=breakdown.get("job_id"),
        node_name=names.get(node_id, f"#{node_id}") if isinstance(node_id, int) else "—",
    )


def _server(request: Request) -> str:
    """This server's URL as the request reached it, as the deploy page's snippets use it."""
    return str(request.base_url).rstrip("/")


@router.get("/providers", name="providers_page")
def providers_page(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """Your nodes, their recent work and its verification, and the compute points it earned."""
    if viewer.user is None:
        return RedirectResponse("/signin", status_code=303)
    t = viewer.t
    with db.session() as session:
        mine = nodes.mine(session, viewer.user)
        recent = work.recent(session, [n.id for n in mine])
        kinds = work.job_kinds(session, recent)
        credits = earnings.credits(session, viewer.user)
        total = earnings.total(session, viewer.user)
    names = {n.id: n.name for n in mine}
    earned = {
        c.source_id: number(c.millipoints / 1000)
        for c in credits
        if c.source_type == "provider_work"
    }
    views = []
    for node in mine:
        share = nodes.reliability(node)
        views.append(NodeView(node, share, f"{share:.0%}", hardware(t, node.capabilities)))
    server = _server(request)
    context = {
        "active": "providers",
        "nodes": views,
        "work": [_work_view(t, row, names, earned, kinds) for row in recent],
        "credits": [_credit_view(c, names) for c in credits],
        "total": number(total / 1000),
        "accepted": sum(n.verified_ok for n in mine),
        "rejected": sum(n.verified_bad for n in mine),
        "server": server,
        "install": INSTALL,
        "command": worker_command(server),
    }
    return render(request, viewer, "providers.html", context)
