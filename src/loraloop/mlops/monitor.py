"""Drift monitoring per deployment: what users ask now against what the model learned.

Every ``drift_every`` new requests of an adapter deployment, a ``drift_check`` job embeds the
newest ``drift_window`` inputs with MiniLM and tests them against the training inputs of the
version that served them (MMD permutation test, out-of-distribution share, clusters of the
new questions). Its success hook adds quality drift from feedback (a change point in the
rate of bad answers), stores the report and, on an alarm, fires the retraining trigger.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.db.tables import (
    AdapterVersion,
    Deployment,
    DriftReport,
    Feedback,
    Job,
    Trace,
    User,
)
from loraloop.jobs import queue
from loraloop.ml import drift
from loraloop.mlops import drift_job, policy
from loraloop.mlops.promotion import BAD

__all__ = ["drift_checked", "due", "enqueue_check", "quality", "reports", "text_of"]


def text_of(request: dict[str, Any]) -> str:
    """The text a request asked: its last user turn, or its prompt."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    prompt = request.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _served(deployment_id: int) -> Any:
    return (Trace.deployment_id == deployment_id) & (Trace.status == "ok")


def due(session: Session, settings: Settings) -> list[tuple[Deployment, int]]:
    """Active adapter deployments with ``drift_every`` new requests since their last check
    (and a full window), with their request count."""
    counts = (
        select(Trace.deployment_id, func.count().label("n"))
        .where(Trace.status == "ok", Trace.deployment_id.is_not(None))
        .group_by(Trace.deployment_id)
        .subquery()
    )
    last = (
        select(DriftReport.deployment_id, func.max(DriftReport.requests).label("seen"))
        .group_by(DriftReport.deployment_id)
        .subquery()
    )
    rows = session.execute(
        select(Deployment, counts.c.n, last.c.seen)
        .join(counts, counts.c.deployment_id == Deployment.id)
        .outerjoin(last, last.c.deployment_id == Deployment.id)
        .where(Deployment.status == "active", Deployment.adapter_id.is_not(None))
    )
    out = []
    for row, n, seen in rows:
        if n >= settings.drift_window and n - (seen or 0) >= settings.drift_every:
            out.append((row, int(n)))
    return out


def _pending(session: Session, deployment_id: int, requests: int, every: int) -> bool:
    """A check of the deployment is queued or running, or one failed fewer than ``every``
    requests ago (a check that keeps failing must not be queued again on every tick)."""
    failed_recently = (Job.status == "failed") & (
        Job.payload["requests"].as_integer() > requests - every
    )
    return bool(
        session.scalar(
            select(func.count()).where(
                Job.kind == "drift_check",
                Job.status.in_(("queued", "leased", "running")) | failed_recently,
                Job.payload["deployment_id"].as_integer() == deployment_id,
            )
        )
    )


def enqueue_check(
    session: Session, settings: Settings, deployment: Deployment, requests: int
) -> Job | None:
    """Queue a check of the deployment's newest window; None when one is already queued (or
    failed on about this window)."""
    if _pending(session, deployment.id, requests, settings.drift_every):
        return None
    traces = list(
        session.execute(
            select(Trace.request, Trace.adapter_version_id, Trace.created_at)
            .where(_served(deployment.id))
            .order_by(Trace.created_at.desc(), Trace.id.desc())
            .limit(settings.drift_window)
        )
    )
    versions = [t.adapter_version_id for t in traces if t.adapter_version_id]
    if not versions:
        return None
    serving = max(set(versions), key=versions.count)  # the version that served most of it
    version = session.get(AdapterVersion, serving)
    trained = session.get(Job, version.job_id) if version and version.job_id else None
    if version is None or trained is None:
        return None
    train_file = Path(trained.payload["train_file"])
    owner = session.get(User, deployment.owner_id)
    assert owner is not None
    payload = {
        "deployment_id": deployment.id,
        "adapter_id": version.adapter_id,
        "version_id": version.id,
        "requests": requests,
        "first_trace_at": traces[-1].created_at.isoformat(),
        "last_trace_at": traces[0].created_at.isoformat(),
        "train_file": str(train_file),
        "reference_cache": str(drift_job.reference_cache(settings.home, train_file)),
        "texts": [text_of(t.request) for t in reversed(traces)],
        "alpha": settings.drift_alpha,
    }
    return queue.enqueue(session, owner, "drift_check", payload, submitted=False, max_attempts=2)


def quality(session: Session, deployment_id: int) -> drift.QualityDrift:
    """Quality drift of the deployment: per answer with feedback, was it bad (in order)?"""
    rows = session.execute(
        select(func.max(BAD))
        .select_from(Trace)
        .join(Feedback, Feedback.trace_id == Trace.id)
        .where(_served(deployment_id))
        .group_by(Trace.id, Trace.created_at)
        .order_by(Trace.created_at, Trace.id)
    )
    return drift.quality_drift([bool(bad) for (bad,) in rows])


def drift_checked(session: Session, job: Job) -> DriftReport:
    """Success hook of ``drift_check``: store the report; an alarm fires the trigger."""
    payload, result = job.payload, job.result or {}
    found = quality(session, payload["deployment_id"])
    checked = result.get("input", {})
    alarm = "drift" if checked.get("alarm") else "quality" if found.alarm else None
    report = DriftReport(
        deployment_id=payload["deployment_id"],
        adapter_id=payload["adapter_id"],
        version_id=payload["version_id"],
        job_id=job.id,
        first_trace_at=datetime.fromisoformat(payload["first_trace_at"]),
        last_trace_at=datetime.fromisoformat(payload["last_trace_at"]),
        requests=payload["requests"],
        input=checked,
        quality=found.to_dict(),
        alarm=alarm,
    )
    session.add(report)
    session.flush()
    rules = policy.policy_of(session, payload["adapter_id"])
    # the report names one alarm, but a quality drop still counts when drift is ignored
    fire = (
        "drift"
        if checked.get("alarm") and rules.on_drift
        else "quality"
        if found.alarm and rules.on_quality
        else None
    )
    if fire is not None:
        policy.trigger(
            session,
            payload["adapter_id"],
            fire,
            {"report_id": report.id, "deployment_id": payload["deployment_id"]},
        )
    return report


def reports(session: Session, user: User, adapter_id: int, limit: int = 100) -> list[DriftReport]:
    """Drift reports of every deployment of your adapter, newest first."""
    adapters.get_own(session, user, adapter_id)
    query = select(DriftReport).where(DriftReport.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(DriftReport.id.desc()).limit(limit)))
