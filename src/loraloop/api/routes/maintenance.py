"""The maintenance loop of your adapters: policy, retrain runs, evaluation suites and runs,
gate decisions and overrides, rollback, correction candidates, drift reports, the quality
timeline. Everything here is the adapter owner's: anyone else gets 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from loraloop.api.deps import AppSettings, CurrentUser, DbSession
from loraloop.api.mlops_schemas import (
    CandidateDecision,
    CandidatePublic,
    CasesAdd,
    ChallengeBody,
    DecisionPublic,
    DriftReportPublic,
    EvalRunPublic,
    EvaluationStart,
    OverrideBody,
    PolicyPublic,
    PolicyUpdate,
    RetrainRunPublic,
    RollbackBody,
    SuiteCreate,
    SuitePublic,
)
from loraloop.api.schemas import JobPublic
from loraloop.mlops import candidates, gate, monitor, policy, promotion, suites, timeline

router = APIRouter(prefix="/api", tags=["maintenance"])


@router.get("/adapters/{adapter_id}/policy")
def get_policy(adapter_id: int, user: CurrentUser, session: DbSession) -> PolicyPublic:
    """When the adapter retrains and how its challengers are judged (defaults until set)."""
    return PolicyPublic.model_validate(policy.get(session, user, adapter_id))


@router.put("/adapters/{adapter_id}/policy")
def set_policy(
    adapter_id: int, body: PolicyUpdate, user: CurrentUser, session: DbSession
) -> PolicyPublic:
    """Change the fields you send; the others keep their values."""
    changes = body.model_dump(exclude_unset=True)
    return PolicyPublic.model_validate(policy.update(session, user, adapter_id, **changes))


@router.post("/adapters/{adapter_id}/retrain", status_code=201)
def retrain(adapter_id: int, user: CurrentUser, session: DbSession) -> RetrainRunPublic:
    """Retrain now on the dataset plus accepted corrections; the gate judges the result."""
    return RetrainRunPublic.model_validate(policy.retrain_now(session, user, adapter_id))


@router.post("/adapters/{adapter_id}/challenge", status_code=201)
def challenge(
    adapter_id: int,
    body: ChallengeBody,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> RetrainRunPublic:
    """Gate an existing version against the champion; it is promoted only if it wins."""
    run = policy.challenge(session, settings, user, adapter_id, body.version)
    return RetrainRunPublic.model_validate(run)


@router.get("/adapters/{adapter_id}/retrain-runs")
def list_runs(adapter_id: int, user: CurrentUser, session: DbSession) -> list[RetrainRunPublic]:
    """Retrain runs (why each started, its jobs, how it ended), newest first."""
    return [RetrainRunPublic.model_validate(r) for r in policy.runs(session, user, adapter_id)]


@router.post("/retrain-runs/{run_id}/approve")
def approve_run(run_id: int, user: CurrentUser, session: DbSession) -> RetrainRunPublic:
    """Start a proposed retraining (policy mode ``propose``)."""
    return RetrainRunPublic.model_validate(policy.approve(session, user, run_id))


@router.post("/retrain-runs/{run_id}/dismiss")
def dismiss_run(run_id: int, user: CurrentUser, session: DbSession) -> RetrainRunPublic:
    """Drop a proposed (or approved, not yet started) retraining."""
    return RetrainRunPublic.model_validate(policy.dismiss(session, user, run_id))


@router.get("/adapters/{adapter_id}/suites")
def list_suites(adapter_id: int, user: CurrentUser, session: DbSession) -> list[SuitePublic]:
    """The adapter's evaluation suites with their case counts."""
    return [
        SuitePublic(
            id=s.id, adapter_id=s.adapter_id, name=s.name, kind=s.kind, metric=s.metric, cases=n
        )
        for s, n in suites.list_for(session, user, adapter_id)
    ]


@router.post("/adapters/{adapter_id}/suites", status_code=201)
def create_suite(
    adapter_id: int, body: SuiteCreate, user: CurrentUser, session: DbSession
) -> SuitePublic:
    """A suite of your own cases (metric: exact_match, contains, regex or rouge_l)."""
    row = suites.create(session, user, adapter_id, name=body.name, metric=body.metric)
    return SuitePublic(
        id=row.id, adapter_id=adapter_id, name=row.name, kind=row.kind, metric=row.metric, cases=0
    )


@router.post("/suites/{suite_id}/cases", status_code=201)
def add_cases(
    suite_id: int, body: CasesAdd, user: CurrentUser, session: DbSession
) -> dict[str, int]:
    """Add cases; a bad one is reported with its number and nothing is added."""
    return {"added": len(suites.add_cases(session, user, suite_id, body.cases))}


@router.post("/adapters/{adapter_id}/evaluations", status_code=201)
def start_evaluation(
    adapter_id: int,
    body: EvaluationStart,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> JobPublic:
    """Score versions on every suite (history only; promotion is the gate's)."""
    job = gate.start_evaluation(
        session,
        settings,
        user,
        adapter_id,
        body.versions,
        community_compute=body.community_compute,
    )
    return JobPublic.model_validate(job)


@router.get("/adapters/{adapter_id}/evaluations")
def list_evaluations(adapter_id: int, user: CurrentUser, session: DbSession) -> list[EvalRunPublic]:
    """Every stored evaluation run, newest first (per-case answers: ``.../evaluations/{id}``)."""
    return [EvalRunPublic.model_validate(r) for r in gate.runs(session, user, adapter_id)]


@router.get("/adapters/{adapter_id}/evaluations/{run_id}")
def get_evaluation(
    adapter_id: int, run_id: int, user: CurrentUser, session: DbSession
) -> dict[str, Any]:
    """One run with every case's answer and score."""
    row = gate.run(session, user, adapter_id, run_id)
    return {**EvalRunPublic.model_validate(row).model_dump(mode="json"), "cases": row.cases}


@router.get("/adapters/{adapter_id}/decisions")
def list_decisions(adapter_id: int, user: CurrentUser, session: DbSession) -> list[DecisionPublic]:
    """The gate's decisions with their numbers, and owners' overrides, newest first."""
    return [DecisionPublic.model_validate(d) for d in gate.decisions(session, user, adapter_id)]


@router.post("/decisions/{decision_id}/override", status_code=201)
def override_decision(
    decision_id: int, body: OverrideBody, user: CurrentUser, session: DbSession
) -> DecisionPublic:
    """Reverse the gate: promote a refused challenger, or undo a promotion (logged)."""
    row = gate.override(session, user, decision_id, promote=body.promote, reason=body.reason)
    return DecisionPublic.model_validate(row)


@router.post("/adapters/{adapter_id}/rollback")
def rollback(
    adapter_id: int, body: RollbackBody, user: CurrentUser, session: DbSession
) -> dict[str, int]:
    """Serve an earlier version again from the next request on (default: the previous)."""
    return {"champion": promotion.rollback(session, user, adapter_id, body.version)}


@router.get("/adapters/{adapter_id}/candidates")
def list_candidates(
    adapter_id: int, user: CurrentUser, session: DbSession, status: str | None = None
) -> list[CandidatePublic]:
    """Corrections offered as training examples (``status``: pending, accepted, rejected)."""
    rows = candidates.list_for(session, user, adapter_id, status)
    return [CandidatePublic.model_validate(r) for r in rows]


@router.post("/candidates/{candidate_id}/accept")
def accept_candidate(
    candidate_id: int, body: CandidateDecision, user: CurrentUser, session: DbSession
) -> CandidatePublic:
    """Accept a correction as a training example (or, if held out, an eval case)."""
    row = candidates.decide(session, user, candidate_id, accept=True, reason=body.reason)
    return CandidatePublic.model_validate(row)


@router.post("/candidates/{candidate_id}/reject")
def reject_candidate(
    candidate_id: int, body: CandidateDecision, user: CurrentUser, session: DbSession
) -> CandidatePublic:
    """Reject a correction; the reason is required and kept."""
    row = candidates.decide(session, user, candidate_id, accept=False, reason=body.reason)
    return CandidatePublic.model_validate(row)


@router.get("/adapters/{adapter_id}/drift")
def list_drift(adapter_id: int, user: CurrentUser, session: DbSession) -> list[DriftReportPublic]:
    """Drift reports of the deployments of your adapter, newest first."""
    return [DriftReportPublic.model_validate(r) for r in monitor.reports(session, user, adapter_id)]


@router.get("/adapters/{adapter_id}/quality")
def quality(adapter_id: int, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    """The quality timeline: eval scores per version, live feedback, drift, history."""
    return timeline.overview(session, user, adapter_id)
