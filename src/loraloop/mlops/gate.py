"""The evaluation gate: a challenger replaces the champion only when it is measurably better.

Rule (every number is stored with the decision):

- pooled over every case of every suite, the challenger's mean score beats the champion's by
  at least ``margin``, and the paired bootstrap 95% interval of the difference excludes zero;
- on no suite does the challenger fall behind by more than ``tolerance`` (point estimate);
- with a judge, its mean preference for the challenger is not below 0.5 - ``tolerance``.

Evaluation jobs record one :class:`EvalRun` per version and suite whether or not they gate,
so an adapter's quality history holds every evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases, base_models
from loraloop.config import Settings
from loraloop.db.tables import (
    AdapterVersion,
    EvalRun,
    EvalSuite,
    GateDecision,
    Job,
    RetrainPolicy,
    RetrainRun,
    User,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.jobs import queue
from loraloop.ml import evaluation
from loraloop.mlops import promotion, suites

__all__ = [
    "Verdict",
    "base_of",
    "compare",
    "decisions",
    "evaluation_payload",
    "evaluation_succeeded",
    "judge_of",
    "override",
    "run",
    "runs",
    "start_evaluation",
]


@dataclass
class Verdict:
    outcome: str
    """``promote`` or ``refuse``."""
    reason: str
    pooled: dict[str, Any]
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    margin: float = 0.0
    tolerance: float = 0.0

    def numbers(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("outcome")
        out.pop("reason")
        return out


def compare(
    champion: dict[str, Any],
    challenger: dict[str, Any],
    names: dict[str, str],
    *,
    margin: float,
    tolerance: float,
    judge: dict[str, list[float | None]] | None = None,
    seed: int = 0,
) -> Verdict:
    """Decide on the per-suite case scores of both versions (``{suite_id: {"cases": ...}}``)."""
    pooled_a: list[float] = []
    pooled_b: list[float] = []
    per_suite: dict[str, dict[str, Any]] = {}
    regressions: list[str] = []
    for sid, old in champion.items():
        new = challenger.get(sid)
        if new is None:
            continue
        theirs = {c["id"]: c["score"] for c in new["cases"]}
        pairs = [(c["score"], theirs[c["id"]]) for c in old["cases"] if c["id"] in theirs]
        if not pairs:
            continue
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        result: dict[str, Any] = {
            **evaluation.paired_bootstrap(a, b, seed=seed).to_dict(),
            "name": names.get(sid, sid),
        }
        per_suite[sid] = result
        pooled_a += a
        pooled_b += b
        if result["delta"] < -tolerance:
            regressions.append(f"{result['name']} ({result['delta']:+.3f})")
    if not pooled_a:
        return Verdict("refuse", "no case was scored for both versions", {}, per_suite)
    pooled = evaluation.paired_bootstrap(pooled_a, pooled_b, seed=seed).to_dict()
    judged = _judge_summary(judge)
    problems = []
    if pooled["delta"] < margin:
        problems.append(f"the gain {pooled['delta']:+.3f} is below the margin {margin:.3f}")
    if pooled["low"] <= 0:
        problems.append(
            f"the 95% interval [{pooled['low']:+.3f}, {pooled['high']:+.3f}] includes zero"
        )
    if regressions:
        problems.append(f"regressed beyond {tolerance:.3f} on " + ", ".join(regressions))
    if judged and judged["mean"] < 0.5 - tolerance:
        problems.append(f"the judge prefers the champion ({judged['mean']:.2f})")
    if problems:
        outcome, reason = "refuse", "; ".join(problems)
    else:
        outcome = "promote"
        reason = (
            f"better by {pooled['delta']:+.3f} (95% interval [{pooled['low']:+.3f}, "
            f"{pooled['high']:+.3f}]) over {pooled['n']} cases, no suite regressed"
        )
    return Verdict(outcome, reason, pooled, per_suite, judged, margin, tolerance)


def _judge_summary(judge: dict[str, list[float | None]] | None) -> dict[str, Any] | None:
    if not judge:
        return None
    scores = [s for values in judge.values() for s in values if s is not None]
    if not scores:
        return None
    return {"mean": sum(scores) / len(scores), "n": len(scores)}


# --- jobs -------------------------------------------------------------------------------


def evaluation_payload(
    session: Session,
    adapter_id: int,
    versions: list[AdapterVersion],
    *,
    base: dict[str, Any],
    judge: dict[str, Any] | None,
    max_new_tokens: int,
    gate: dict[str, Any] | None = None,
    remote_ok: bool = False,
) -> dict[str, Any]:
    """What the ``evaluate`` job needs; ``base`` holds base_path, base_default, models_dir.
    ``remote_ok``: the owner lets compute providers run it (they receive the cases), which
    they may only without a judge (see ``providers.eval_work``)."""
    payload = {
        "adapter_id": adapter_id,
        **base,
        "versions": [{"id": v.id, "version": v.version, "path": v.path} for v in versions],
        "suites": suites.cases_payload(session, adapter_id),
        "max_new_tokens": max_new_tokens,
        "judge": judge,
        "gate": gate,
    }
    if remote_ok:
        payload["remote_ok"] = True
    return payload


def base_of(settings: Settings, session: Session, adapter_id: int) -> dict[str, Any]:
    adapter = adapters.get_any(session, adapter_id)
    base = base_models.get(session, adapter.base_model_id)
    return {
        "base_path": str(base_models.absolute_path(settings, base)),
        "base_default": base.is_default,
        "models_dir": str(base_models.models_dir(settings)),
    }


def judge_of(settings: Settings) -> dict[str, Any] | None:
    if settings.judge_base_url and settings.judge_model:
        return {"base_url": settings.judge_base_url, "model": settings.judge_model}
    return None


def start_evaluation(
    session: Session,
    settings: Settings,
    user: User,
    adapter_id: int,
    versions: list[int],
    *,
    community_compute: bool = False,
) -> Job:
    """Score versions of your adapter on its suites (history only: nothing is promoted);
    ``community_compute`` lets providers' nodes run it (verified before it is recorded)."""
    adapters.get_own(session, user, adapter_id)
    if not versions or len(versions) > 4:
        raise InvalidRequest("name 1 to 4 versions to evaluate", param="versions")
    rows = [adapters.get_version(session, user, adapter_id, v) for v in versions]
    payload = evaluation_payload(
        session,
        adapter_id,
        rows,
        base=base_of(settings, session, adapter_id),
        judge=judge_of(settings) if len(rows) == 2 else None,
        max_new_tokens=settings.eval_max_new_tokens,
        remote_ok=community_compute,
    )
    return queue.enqueue(session, user, "evaluate", payload, submitted=False)


def evaluation_succeeded(session: Session, job: Job) -> None:
    """Success hook of ``evaluate``: store the runs; a gating job then decides."""
    result = job.result or {}
    known = {
        str(s.id): s
        for s in session.scalars(
            select(EvalSuite).where(EvalSuite.adapter_id == job.payload["adapter_id"])
        )
    }
    for vid, per_suite in result.get("versions", {}).items():
        for sid, scored in per_suite.items():
            suite = known.get(sid)
            if suite is None:
                continue  # deleted while the job ran
            session.add(
                EvalRun(
                    adapter_id=suite.adapter_id,
                    version_id=int(vid),
                    suite_id=suite.id,
                    job_id=job.id,
                    metric=suite.metric,
                    score=float(scored["score"]),
                    summary={
                        "loss": scored.get("loss"),
                        "perplexity": scored.get("perplexity"),
                        "cases": len(scored["cases"]),
                    },
                    cases=scored["cases"],
                )
            )
    session.flush()
    gate = job.payload.get("gate")
    if gate:
        _decide(session, job, gate, result, {k: s.name for k, s in known.items()})


def _decide(
    session: Session,
    job: Job,
    gate: dict[str, Any],
    result: dict[str, Any],
    names: dict[str, str],
) -> None:
    adapter_id = job.payload["adapter_id"]
    champion_id, challenger_id = gate["champion_id"], gate["challenger_id"]
    policy = session.get(RetrainPolicy, adapter_id) or RetrainPolicy(adapter_id=adapter_id)
    versions = result.get("versions", {})
    verdict = compare(
        versions.get(str(champion_id), {}),
        versions.get(str(challenger_id), {}),
        names,
        margin=_or(policy.margin, 0.02),
        tolerance=_or(policy.tolerance, 0.02),
        judge=result.get("judge"),
    )
    canary = verdict.outcome == "promote" and _or(policy.canary_share, 0.0) > 0
    decision = GateDecision(
        adapter_id=adapter_id,
        champion_version_id=champion_id,
        challenger_version_id=challenger_id,
        job_id=job.id,
        outcome="canary" if canary else verdict.outcome,
        reason=verdict.reason,
        numbers=verdict.numbers(),
    )
    session.add(decision)
    session.flush()
    run = session.get(RetrainRun, gate["retrain_run_id"]) if gate.get("retrain_run_id") else None
    if canary:
        promotion.start_canary(session, adapter_id, challenger_id, policy.canary_share)
    elif verdict.outcome == "promote":
        promotion.promote(session, adapter_id, challenger_id, cause="gate", decision=decision)
    else:
        promotion.drop_challenger(session, adapter_id, challenger_id, cause="gate")
    if run is not None:
        run.status = {"canary": "canary", "promote": "promoted"}.get(decision.outcome, "refused")
        run.decision_id = decision.id


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def runs(session: Session, user: User, adapter_id: int) -> list[EvalRun]:
    """Every stored evaluation run of your adapter, newest first."""
    adapters.get_own(session, user, adapter_id)
    query = select(EvalRun).where(EvalRun.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(EvalRun.id.desc())))


def run(session: Session, user: User, adapter_id: int, run_id: int) -> EvalRun:
    """One evaluation run of your adapter, with every case."""
    adapters.get_own(session, user, adapter_id)
    row = session.get(EvalRun, run_id)
    if row is None or row.adapter_id != adapter_id:
        raise NotFound(f"adapter {adapter_id} has no evaluation run {run_id}", param="run_id")
    return row


def decisions(session: Session, user: User, adapter_id: int) -> list[GateDecision]:
    adapters.get_own(session, user, adapter_id)
    query = select(GateDecision).where(GateDecision.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(GateDecision.id.desc())))


def override(
    session: Session, user: User, decision_id: int, *, promote: bool, reason: str
) -> GateDecision:
    """The owner reverses a decision: promote a refused challenger, or undo a promotion.
    The override is a decision of its own, with the owner's name and reason."""
    original = session.get(GateDecision, decision_id)
    if original is None:
        raise NotFound(f"decision {decision_id} not found", param="decision_id")
    adapter = adapters.get_own(session, user, original.adapter_id)
    if not reason.strip():
        raise InvalidRequest("say why you override the gate", param="reason")
    if original.challenger_version_id is None or original.champion_version_id is None:
        raise Conflict("a version of this decision was deleted", code="version_gone")
    row = GateDecision(
        adapter_id=adapter.id,
        champion_version_id=original.champion_version_id,
        challenger_version_id=original.challenger_version_id,
        outcome="promote" if promote else "refuse",
        reason=reason.strip(),
        numbers=original.numbers,
        override_of=original.id,
        actor_id=user.id,
    )
    session.add(row)
    session.flush()
    if promote:
        promotion.promote(
            session,
            adapter.id,
            original.challenger_version_id,
            cause="override",
            decision=row,
            actor_id=user.id,
        )
    else:
        current = aliases.current(session, adapter.id, "champion")
        if current is not None and current.id == original.challenger_version_id:
            aliases.move(
                session,
                adapter.id,
                "champion",
                original.champion_version_id,
                cause="override",
                actor_id=user.id,
                decision_id=row.id,
            )
        promotion.drop_challenger(
            session, adapter.id, original.challenger_version_id, cause="override"
        )
    return row
