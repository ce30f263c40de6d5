"""Bodies of the maintenance-loop routes (policy, suites, evaluations, gate, candidates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from loraloop.api.schemas import Public, Strict
from loraloop.ml.evaluation import metric_names

__all__ = [
    "CandidateDecision",
    "CandidatePublic",
    "CasesAdd",
    "ChallengeBody",
    "DecisionPublic",
    "DriftReportPublic",
    "EvalRunPublic",
    "EvaluationStart",
    "OverrideBody",
    "PolicyPublic",
    "PolicyUpdate",
    "RetrainRunPublic",
    "RollbackBody",
    "SuiteCreate",
    "SuitePublic",
]


class PolicyUpdate(Strict):
    mode: Literal["auto", "propose", "off"] | None = None
    on_drift: bool | None = None
    on_quality: bool | None = None
    min_new_examples: int | None = Field(default=None, ge=1)
    every_hours: int | None = Field(default=None, ge=1)
    margin: float | None = Field(default=None, ge=0, le=1)
    tolerance: float | None = Field(default=None, ge=0, le=1)
    canary_share: float | None = Field(default=None, ge=0, lt=1)
    canary_min_feedback: int | None = Field(default=None, ge=1)
    trust_owner_corrections: bool | None = None


class PolicyPublic(Public):
    adapter_id: int
    mode: str
    on_drift: bool
    on_quality: bool
    min_new_examples: int | None
    every_hours: int | None
    margin: float
    tolerance: float
    canary_share: float
    canary_min_feedback: int
    trust_owner_corrections: bool


class RetrainRunPublic(Public):
    id: int
    adapter_id: int
    trigger: str
    detail: dict[str, Any]
    status: str
    train_job_id: int | None
    eval_job_id: int | None
    challenger_version_id: int | None
    decision_id: int | None
    error: str | None
    created_at: datetime


class SuiteCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    metric: str = Field(
        default="contains",
        max_length=64,
        description="exact_match, contains, regex, rouge_l, or a metric a plugin adds.",
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        """Checked against the metrics known now, so a plugin's metric is accepted too."""
        if value not in metric_names():
            raise ValueError(f"metric must be one of {', '.join(metric_names())}")
        return value


class SuitePublic(Public):
    id: int
    adapter_id: int
    name: str
    kind: str
    metric: str
    cases: int


class CasesAdd(Strict):
    cases: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=2000,
        description="Each: 'prompt' (or 'messages' ending with a user turn), 'expected', "
        "optional 'metric'.",
    )


class EvaluationStart(Strict):
    versions: list[int] = Field(min_length=1, max_length=4)
    community_compute: bool = Field(
        default=False,
        description="Let compute providers' nodes run it: they receive the cases and the "
        "versions' weights, and their answers are verified before they are recorded. With a "
        "judge configured it stays on trusted workers, where the judge's key is.",
    )


class EvalRunPublic(Public):
    id: int
    version_id: int
    suite_id: int
    job_id: int | None
    metric: str
    score: float
    summary: dict[str, Any]
    created_at: datetime


class DecisionPublic(Public):
    id: int
    adapter_id: int
    champion_version_id: int | None
    challenger_version_id: int | None
    job_id: int | None
    outcome: str
    reason: str
    numbers: dict[str, Any]
    override_of: int | None
    actor_id: int | None
    created_at: datetime


class OverrideBody(Strict):
    promote: bool = Field(description="true: promote the challenger; false: keep the champion")
    reason: str = Field(min_length=1, max_length=2000)


class ChallengeBody(Strict):
    version: int = Field(ge=1, description="The version to put against the champion.")


class RollbackBody(Strict):
    version: int | None = Field(
        default=None, ge=1, description="The version to serve; default: the previous champion."
    )


class CandidatePublic(Public):
    id: int
    adapter_id: int
    feedback_id: int | None
    messages: list[dict[str, Any]]
    status: str
    role: str
    reason: str | None
    created_at: datetime


class CandidateDecision(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class DriftReportPublic(Public):
    id: int
    deployment_id: int
    version_id: int | None
    requests: int
    first_trace_at: datetime | None
    last_trace_at: datetime | None
    input: dict[str, Any]
    quality: dict[str, Any]
    alarm: str | None
    created_at: datetime
