"""An adapter's quality over time, in one read: what the dashboard and ``GET .../quality`` show.

Eval scores per version and suite (the newest run of each), live feedback per version, the
drift series of its deployments, the champion/challenger history, gate decisions, retrain
runs, and the newest clusters of out-of-distribution requests (what users now ask).

:func:`quality` is the part anyone who may see the adapter may read (the hub's card): numbers
only, never the clusters (they quote users' requests) nor the owner's decisions and runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases
from loraloop.db.tables import Adapter, AdapterVersion, DriftReport, EvalRun, EvalSuite, User
from loraloop.mlops import gate, policy, promotion

__all__ = ["overview", "quality"]

DRIFT_REPORTS = 200


def overview(session: Session, user: User, adapter_id: int) -> dict[str, Any]:
    adapter = adapters.get_own(session, user, adapter_id)
    number = _numbers(session, adapter)
    reports = _reports(session, adapter)
    clusters: list[dict[str, Any]] = next(
        (r.input["clusters"] for r in reports if r.input.get("clusters")), []
    )
    return {
        "adapter": {"id": adapter.id, "name": adapter.name},
        "aliases": aliases.aliases_of(session, adapter.id),
        "versions": sorted(number.values()),
        **_quality(session, adapter, number, reports),
        "clusters": clusters,
        "history": [
            {
                "alias": c.alias,
                "from": number.get(c.from_version_id or -1),
                "to": number.get(c.to_version_id or -1),
                "cause": c.cause,
                "decision_id": c.decision_id,
                "actor_id": c.actor_id,
                "at": c.created_at.isoformat(),
            }
            for c in aliases.history(session, adapter.id)
        ],
        "decisions": [
            {
                "id": d.id,
                "outcome": d.outcome,
                "champion": number.get(d.champion_version_id or -1),
                "challenger": number.get(d.challenger_version_id or -1),
                "reason": d.reason,
                "numbers": d.numbers,
                "override_of": d.override_of,
                "actor_id": d.actor_id,
                "at": d.created_at.isoformat(),
            }
            for d in gate.decisions(session, user, adapter.id)
        ],
        "runs": [
            {
                "id": r.id,
                "trigger": r.trigger,
                "status": r.status,
                "detail": r.detail,
                "challenger": number.get(r.challenger_version_id or -1),
                "train_job_id": r.train_job_id,
                "eval_job_id": r.eval_job_id,
                "error": r.error,
                "at": r.created_at.isoformat(),
            }
            for r in policy.runs(session, user, adapter.id)
        ],
    }


def quality(session: Session, adapter: Adapter) -> dict[str, Any]:
    """``scores``, ``live`` and ``drift`` of ``adapter``, which the caller has checked the
    viewer may see. Numbers only: nothing here quotes a request."""
    return _quality(session, adapter, _numbers(session, adapter), _reports(session, adapter))


def _numbers(session: Session, adapter: Adapter) -> dict[int, int]:
    """version id -> version number."""
    query = select(AdapterVersion.id, AdapterVersion.version).where(
        AdapterVersion.adapter_id == adapter.id
    )
    return {vid: number for vid, number in session.execute(query)}


def _reports(session: Session, adapter: Adapter) -> list[DriftReport]:
    """The newest drift reports first."""
    return list(
        session.scalars(
            select(DriftReport)
            .where(DriftReport.adapter_id == adapter.id)
            .order_by(DriftReport.id.desc())
            .limit(DRIFT_REPORTS)
        )
    )


def _quality(
    session: Session, adapter: Adapter, number: dict[int, int], reports: list[DriftReport]
) -> dict[str, Any]:
    names = {
        s.id: s.name
        for s in session.scalars(select(EvalSuite).where(EvalSuite.adapter_id == adapter.id))
    }
    newest: dict[tuple[int, int], EvalRun] = {}
    for run in session.scalars(
        select(EvalRun).where(EvalRun.adapter_id == adapter.id).order_by(EvalRun.id)
    ):
        newest[(run.version_id, run.suite_id)] = run
    scores = [
        {
            "version": number.get(vid),
            "suite": names.get(sid, str(sid)),
            "metric": run.metric,
            "score": run.score,
            "loss": run.summary.get("loss"),
            "cases": run.summary.get("cases"),
            "at": run.created_at.isoformat(),
        }
        for (vid, sid), run in sorted(newest.items(), key=lambda item: item[1].id)
        if vid in number
    ]
    live = [
        {
            "version": number[vid],
            "rated": s.rated,
            "bad": s.bad,
            "bad_rate": s.bad_rate,
        }
        for vid, s in sorted(promotion.live_scores(session, adapter.id).items())
        if vid in number
    ]
    drift = [
        {
            "id": r.id,
            "deployment_id": r.deployment_id,
            "version": number.get(r.version_id or -1),
            "requests": r.requests,
            "at": r.created_at.isoformat(),
            "p_value": r.input.get("p_value"),
            "mmd2": r.input.get("mmd2"),
            "ood_share": r.input.get("ood_share"),
            "bad_rate": r.quality.get("recent_rate"),
            "alarm": r.alarm,
        }
        for r in reversed(reports)
    ]
    return {"scores": scores, "live": live, "drift": drift}
