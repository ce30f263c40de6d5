"""Tables of the platform services. Each block is owned by the service named above it.

Changing a table here needs a migration in ``db/migrations/versions``; a test compares
the two and fails when they drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loraloop.db.engine import utcnow
from loraloop.db.types import UTCDateTime

__all__ = [
    "Adapter",
    "AdapterAlias",
    "AdapterExport",
    "AdapterStar",
    "AdapterVersion",
    "AliasChange",
    "ApiKey",
    "Base",
    "BaseModel",
    "ChainDeployment",
    "ChainJournal",
    "CommunityMember",
    "Contribution",
    "Conversation",
    "Dataset",
    "DatasetVersion",
    "Deployment",
    "DriftReport",
    "EvalCase",
    "EvalRun",
    "EvalSuite",
    "Feedback",
    "GateDecision",
    "Invite",
    "Job",
    "JobEvent",
    "LoginFailure",
    "PointsEntry",
    "ProviderNode",
    "ProviderWork",
    "ReputationEvent",
    "RetrainPolicy",
    "RetrainRun",
    "ReviewAssignment",
    "RewardAllocation",
    "RewardEpoch",
    "RewardPayout",
    "SiweNonce",
    "Trace",
    "TrainingCandidate",
    "UsageDaily",
    "UsageEvent",
    "User",
    "WalletLink",
    "WebSession",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}  # noqa: RUF012


# identity -------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="member")
    locale: Mapped[str] = mapped_column(String(8), default="ja")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Invite(Base):
    """A one-time sign-up code; ``role='admin'`` invites bootstrap the first admin."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    used_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class LoginFailure(Base):
    """One failed sign-in, keyed by a hash of the email or the client address."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]]
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    window_start: Mapped[int] = mapped_column(BigInteger, default=0)
    window_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # token limits (gateway): a per-minute window and a lifetime budget, reserved then settled
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    tpm_window_start: Mapped[int] = mapped_column(BigInteger, default=0)
    tpm_window_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    token_budget: Mapped[int | None] = mapped_column(BigInteger)
    tokens_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_reserved: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def prefix(self) -> str:
        """The recognisable, non-secret start of the key (``ll_<public id>``)."""
        return f"ll_{self.public_id}"


# jobs -----------------------------------------------------------------------------------


class Job(Base):
    """One unit of background work. State changes are single guarded UPDATE statements."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    payload: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(80))
    node_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The provider node holding (or last holding) the lease, when one does."""
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobEvent(Base):
    """A progress report (any JSON: step, loss, tokens/s, ETA) or a log line of a job."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]]


# catalog --------------------------------------------------------------------------------


class BaseModel(Base):
    """An open base model converted or downloaded into ``<home>/models`` (safetensors only)."""

    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    hub_id: Mapped[str | None] = mapped_column(String(200))
    revision: Mapped[str | None] = mapped_column(String(80))
    path: Mapped[str] = mapped_column(String(500))
    architecture: Mapped[str] = mapped_column(String(80))
    model_type: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[int] = mapped_column(BigInteger)
    context_length: Mapped[int] = mapped_column(Integer)
    chat_template: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Adapter(Base):
    """A named line of LoRA versions owned by one user on one base model."""

    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    visibility: Mapped[str] = mapped_column(String(8), default="private")
    licence: Mapped[str] = mapped_column(String(40), default="apache-2.0")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the hub's facets and fork lineage (catalog.hub)
    language: Mapped[str] = mapped_column(String(16), default="other", server_default="other")
    """One of ``catalog.facets.LANGUAGES``; ``other`` also means "not said"."""
    task: Mapped[str] = mapped_column(String(24), default="other", server_default="other")
    """One of ``catalog.facets.TASKS``."""
    forked_from_version_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The version a fork copied. No foreign key on purpose: adding one makes SQLite rebuild
    ``adapters``, and that rebuild's DROP cascades into every version; an id whose row is gone
    reads as "the source is gone"."""


class AdapterVersion(Base):
    """One trained PEFT artifact; created only when its training job succeeds."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdapterAlias(Base):
    """A movable name (``champion``, ``challenger``) for one version of an adapter."""

    __tablename__ = "adapter_aliases"

    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(16), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AdapterStar(Base):
    """One user's star on one adapter (the hub counts them; a second star is the same row)."""

    __tablename__ = "adapter_stars"

    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdapterExport(Base):
    """A merged safetensors model or a GGUF file (with its Ollama Modelfile) made from one
    adapter version by an ``export`` job; ``files`` is set when the job succeeds."""

    __tablename__ = "adapter_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True
    )
    format: Mapped[str] = mapped_column(String(16))
    """``merged`` or ``gguf``."""
    options: Mapped[dict[str, Any]]
    """What else shaped the files (GGUF ``dtype``, the Modelfile's ``system`` prompt)."""
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    path: Mapped[str] = mapped_column(String(500))
    """The folder the job writes the files into."""
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """``[{name, size, sha256}]`` of the finished files, checked on arrival."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


# datasets -------------------------------------------------------------------------------


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """An immutable upload: raw file, normalised train/validation splits, stats."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(24))
    raw_sha256: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))
    train_sha256: Mapped[str] = mapped_column(String(64))
    validation_sha256: Mapped[str | None] = mapped_column(String(64))
    examples: Mapped[int] = mapped_column(Integer)
    train_examples: Mapped[int] = mapped_column(Integer)
    validation_examples: Mapped[int] = mapped_column(Integer)
    duplicates_removed: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# gateway --------------------------------------------------------------------------------


class Deployment(Base):
    """A model id on ``/v1``: an adapter version, an adapter's alias, a bare base model, or an
    external OpenAI-compatible upstream (whose key is stored encrypted)."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    adapter_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE")
    )
    alias: Mapped[str | None] = mapped_column(String(16))
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("base_models.id"))
    upstream_url: Mapped[str | None] = mapped_column(String(500))
    upstream_model: Mapped[str | None] = mapped_column(String(200))
    upstream_key: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    app: Mapped[dict[str, Any] | None]
    """For ``kind="app"``: the app's spec (type, members, rules, defaults); see gateway.apps."""
    canary_share: Mapped[float] = mapped_column(Float, default=0.0)
    """On an alias deployment: the share of requests the adapter's challenger answers."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Trace(Base):
    """One served request: what was asked, what came back, by which version, how fast."""

    __tablename__ = "traces"
    __table_args__ = (Index("ix_traces_owner_created", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    adapter_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    app_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    """The app the client called, when ``deployment_id`` is the member that answered."""
    route: Mapped[dict[str, Any] | None]
    """Why that member answered: the rule, the similarity, the fallbacks tried before it."""
    source: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(24))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]]
    response: Mapped[str] = mapped_column(Text, default="")
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageEvent(Base):
    """A compact row per request, kept for ``usage_retention_days``; daily totals stay."""

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))


class UsageDaily(Base):
    """Requests and tokens per day, owner, key and deployment (0: none, e.g. the playground)."""

    __tablename__ = "usage_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class Conversation(Base):
    """A playground conversation, kept per user so it can be reopened."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(120))
    target: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# mlops ----------------------------------------------------------------------------------


class Feedback(Base):
    """A rating, correction, tags or comment on one served answer (a trace)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    rating: Mapped[int | None] = mapped_column(Integer)
    scale: Mapped[str] = mapped_column(String(8), default="thumbs")
    correction: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]]
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingCandidate(Base):
    """A corrected answer offered as a training example (or a held-out eval case) for the
    adapter that gave the original answer. Accepted ones feed the next retraining."""

    __tablename__ = "training_candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    feedback_id: Mapped[int | None] = mapped_column(
        ForeignKey("feedback.id", ondelete="SET NULL"), unique=True
    )
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    role: Mapped[str] = mapped_column(String(8), default="train")
    """``train`` (goes into the next training set) or ``eval`` (held out: the corrections
    suite the gate scores a challenger on)."""
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class EvalSuite(Base):
    """A named set of evaluation cases of one adapter: ``heldout`` (the dataset's validation
    split), ``owner`` (written by the owner), ``corrections`` or ``community``."""

    __tablename__ = "eval_suites"
    __table_args__ = (UniqueConstraint("adapter_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(12))
    metric: Mapped[str] = mapped_column(String(16))
    """The metric the gate compares on; each case may name its own."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalCase(Base):
    __tablename__ = "eval_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite_id: Mapped[int] = mapped_column(
        ForeignKey("eval_suites.id", ondelete="CASCADE"), index=True
    )
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """The conversation up to the user turn the model answers."""
    expected: Mapped[Any] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_candidates.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalRun(Base):
    """One version scored on one suite by one evaluation job: the summary and every case."""

    __tablename__ = "eval_runs"
    __table_args__ = (UniqueConstraint("job_id", "version_id", "suite_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True
    )
    suite_id: Mapped[int] = mapped_column(ForeignKey("eval_suites.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    metric: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    """Mean of the suite's metric over its cases."""
    summary: Mapped[dict[str, Any]]
    cases: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """Per case: id, answer, score (and loss where measured)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GateDecision(Base):
    """The gate's verdict on a challenger against the champion, with every number it used;
    an owner's override is a decision of its own, naming who made it and why."""

    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    champion_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    challenger_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(12))
    """``promote``, ``canary`` (promote after a live trial) or ``refuse``."""
    reason: Mapped[str] = mapped_column(Text)
    numbers: Mapped[dict[str, Any]]
    override_of: Mapped[int | None] = mapped_column(
        ForeignKey("gate_decisions.id", ondelete="SET NULL")
    )
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    """None: the gate decided; else the owner who overrode it."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasChange(Base):
    """Every move of an adapter's champion or challenger: the history rollback reads."""

    __tablename__ = "alias_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str] = mapped_column(String(16))
    from_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    to_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    cause: Mapped[str] = mapped_column(String(16))
    """``first``, ``gate``, ``override``, ``canary``, ``rollback``, ``manual``, ``cleared``."""
    decision_id: Mapped[int | None] = mapped_column(
        ForeignKey("gate_decisions.id", ondelete="SET NULL")
    )
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RetrainPolicy(Base):
    """When an adapter retrains itself, and how its challengers are judged."""

    __tablename__ = "retrain_policies"

    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True
    )
    mode: Mapped[str] = mapped_column(String(8), default="propose")
    """``auto`` (retrain, gate and promote unattended), ``propose`` (wait for the owner's
    click), ``off``."""
    on_drift: Mapped[bool] = mapped_column(Boolean, default=True)
    on_quality: Mapped[bool] = mapped_column(Boolean, default=True)
    min_new_examples: Mapped[int | None] = mapped_column(Integer)
    every_hours: Mapped[int | None] = mapped_column(Integer)
    margin: Mapped[float] = mapped_column(Float, default=0.02)
    tolerance: Mapped[float] = mapped_column(Float, default=0.02)
    canary_share: Mapped[float] = mapped_column(Float, default=0.0)
    canary_min_feedback: Mapped[int] = mapped_column(Integer, default=20)
    trust_owner_corrections: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RetrainRun(Base):
    """One pass of the loop for an adapter: why it started, its jobs, how it ended."""

    __tablename__ = "retrain_runs"
    __table_args__ = (Index("ix_retrain_runs_adapter_status", "adapter_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(12))
    """``drift``, ``quality``, ``examples``, ``schedule`` or ``manual``."""
    detail: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(12))
    """``proposed`` → ``training`` → ``evaluating`` → ``promoted`` | ``canary`` | ``refused``;
    or ``dismissed``, ``failed``."""
    train_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    eval_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    challenger_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    decision_id: Mapped[int | None] = mapped_column(
        ForeignKey("gate_decisions.id", ondelete="SET NULL")
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DriftReport(Base):
    """Input and quality drift of one deployment over one window of its traffic."""

    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_deployment", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL")
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    first_trace_at: Mapped[datetime | None]
    last_trace_at: Mapped[datetime | None]
    requests: Mapped[int] = mapped_column(Integer)
    """Traces of the deployment up to this window (its position in the traffic)."""
    input: Mapped[dict[str, Any]]
    """MMD², p-value, out-of-distribution share and threshold, clusters with example texts."""
    quality: Mapped[dict[str, Any]]
    alarm: Mapped[str | None] = mapped_column(String(12))
    """None, ``drift`` or ``quality``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# identity: wallets ----------------------------------------------------------------------


class WalletLink(Base):
    """An EVM address a user proved they control. Unlinked rows stay: an address once linked
    to an account still counts as that account's when reviewers are drawn."""

    __tablename__ = "wallet_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    """Lower-case 0x hex."""
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    unlinked_at: Mapped[datetime | None]

    __table_args__ = (
        # one account per address at a time, enforced by the database as well as the service
        Index(
            "uq_wallet_links_active_address",
            "address",
            unique=True,
            sqlite_where=text("unlinked_at IS NULL"),
            postgresql_where=text("unlinked_at IS NULL"),
        ),
    )


class SiweNonce(Base):
    """A single-use nonce for one Sign-In with Ethereum message, bound to the account that
    asked for it."""

    __tablename__ = "siwe_nonces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


# contributions --------------------------------------------------------------------------


class CommunityMember(Base):
    """A user in an adapter's community: invited to a private adapter, or enrolled to review."""

    __tablename__ = "community_members"
    __table_args__ = (UniqueConstraint("adapter_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewer: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contribution(Base):
    """A training example, an eval case or a correction offered to an adapter, and its fate.
    Gold items (``gold`` set) are the owner's items with a known verdict, mixed into review
    queues to measure reviewers; they never reach training."""

    __tablename__ = "contributions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "content_sha256"),
        Index("ix_contributions_adapter_status", "adapter_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(12))
    """``example``, ``eval_case`` or ``correction``."""
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    expected: Mapped[Any] = mapped_column(JSON, nullable=True)
    metric: Mapped[str | None] = mapped_column(String(16))
    provenance: Mapped[dict[str, Any]]
    """How it arrived (``via``), where it comes from (``source``), the trace of a correction."""
    content_sha256: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    """MiniLM vector of its user turns (float32), for near-duplicate checks."""
    novelty: Mapped[float] = mapped_column(Float, default=1.0)
    """1 - the highest cosine similarity to the adapter's training inputs."""
    drift_cluster: Mapped[str | None] = mapped_column(Text)
    """The current drift cluster it covers (its label), if any."""
    status: Mapped[str] = mapped_column(String(12), default="pending")
    """``pending`` → ``accepted`` | ``rejected``; gold items stay ``gold``."""
    gold: Mapped[str | None] = mapped_column(String(8))
    """A gold item's known verdict: ``accept`` or ``reject``."""
    final: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """The messages as accepted when a reviewer's fix won."""
    reason: Mapped[str | None] = mapped_column(Text)
    decided_via: Mapped[str | None] = mapped_column(String(12))
    """``consensus`` or ``owner``."""
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The weighted tally the decision came from."""
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_candidates.id", ondelete="SET NULL")
    )
    case_id: Mapped[int | None] = mapped_column(ForeignKey("eval_cases.id", ondelete="SET NULL"))
    reveal_opened_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class ReviewAssignment(Base):
    """One reviewer's part in deciding one item: drawn, committed (a hash), revealed."""

    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("contribution_id", "reviewer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contribution_id: Mapped[int] = mapped_column(
        ForeignKey("contributions.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(12), default="assigned")
    """``assigned`` → ``committed`` → ``revealed``; or ``expired``, ``cancelled``."""
    commitment: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str | None] = mapped_column(String(8))
    edited: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    weight: Mapped[float | None] = mapped_column(Float)
    """The reviewer's vote weight when they revealed."""
    matched: Mapped[bool | None] = mapped_column(Boolean)
    """Whether the verdict agreed with the final outcome (or the gold answer)."""
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]
    committed_at: Mapped[datetime | None]
    revealed_at: Mapped[datetime | None]


class ReputationEvent(Base):
    """One piece of evidence about a user's judgement; reputation is their decayed sum."""

    __tablename__ = "reputation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    """``agreement``, ``gold``, ``silent`` (committed, never revealed) or ``authored``."""
    good: Mapped[float] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float)
    source_key: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# rewards --------------------------------------------------------------------------------


class PointsEntry(Base):
    """Append-only: points a user earned for one source event, with the formula's factors.
    The idempotency key names the event, so replaying it writes nothing new."""

    __tablename__ = "points_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    adapter_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapters.id", ondelete="SET NULL"), index=True
    )
    millipoints: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(12))
    """``contribution``, ``review``, ``impact`` or ``compute``."""
    source_type: Mapped[str] = mapped_column(String(24))
    source_id: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    breakdown: Mapped[dict[str, Any]]
    epoch_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RewardEpoch(Base):
    """One payout period. ``open`` (points accrue) → ``closed`` (amounts, tree and proofs
    stored) → ``published`` (root on chain, distributor funded); ``empty`` when it closed with
    nothing to pay. Token amounts are decimal strings of the smallest unit (18 decimals):
    they outgrow 64-bit integers."""

    __tablename__ = "reward_epochs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The epoch number, also the distributor's epoch on chain."""
    status: Mapped[str] = mapped_column(String(12), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closes_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    rule: Mapped[dict[str, Any] | None]
    """The rule the epoch closed under: pool, compute share, the points on each side."""
    root: Mapped[str | None] = mapped_column(String(66))
    total: Mapped[str | None] = mapped_column(String(80))
    leaves: Mapped[int] = mapped_column(Integer, default=0)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    published_at: Mapped[datetime | None]


class RewardAllocation(Base):
    """What one user earned in one epoch: their points on each side and the tokens they
    convert to. Paid in the first epoch tree built while the user has a linked wallet."""

    __tablename__ = "reward_allocations"
    __table_args__ = (UniqueConstraint("epoch_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch_id: Mapped[int] = mapped_column(ForeignKey("reward_epochs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    millipoints: Mapped[dict[str, Any]]
    """Millipoints by ledger kind (contribution, review, impact, compute)."""
    amount: Mapped[str] = mapped_column(String(80))
    breakdown: Mapped[dict[str, Any]]
    """Each side's pool, total points, this user's points and the tokens they gave."""
    payout_id: Mapped[int | None] = mapped_column(ForeignKey("reward_payouts.id"), index=True)


class RewardPayout(Base):
    """One leaf of an epoch's Merkle tree: an address, the amount it may claim, its proof."""

    __tablename__ = "reward_payouts"
    __table_args__ = (
        UniqueConstraint("epoch_id", "leaf_index", name="uq_reward_payouts_leaf"),
        UniqueConstraint("epoch_id", "address", name="uq_reward_payouts_address"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch_id: Mapped[int] = mapped_column(ForeignKey("reward_epochs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    leaf_index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(42))
    """Checksummed, as in the leaf."""
    amount: Mapped[str] = mapped_column(String(80))
    proof: Mapped[list[str]]
    claim_tx: Mapped[str | None] = mapped_column(String(66))
    claimed_at: Mapped[datetime | None]


class ChainDeployment(Base):
    """The reward contracts on one chain (on the embedded chain: redeployed, and checked to
    land at the same addresses, on every start)."""

    __tablename__ = "chain_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    token: Mapped[str] = mapped_column(String(42))
    distributor: Mapped[str] = mapped_column(String(42))
    evm_version: Mapped[str] = mapped_column(String(20))
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChainJournal(Base):
    """Every reward transaction the platform sent, in order: an audit trail on any chain,
    and what rebuilds the in-memory embedded chain after a restart."""

    __tablename__ = "chain_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, index=True)
    operation: Mapped[str] = mapped_column(String(16))
    """``publish`` or ``claim``."""
    args: Mapped[dict[str, Any]]
    tx_hash: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# providers ------------------------------------------------------------------------------


class ProviderNode(Base):
    """A machine someone lends: registered with a provider key, reporting what it can run."""

    __tablename__ = "provider_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(80))
    capabilities: Mapped[dict[str, Any]]
    """CPU cores, memory, GPUs, torch and CUDA versions, loraloop version, as reported."""
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Registered with an admin's ``worker`` key: its work is taken without verification."""
    verified_ok: Mapped[int] = mapped_column(Integer, default=0)
    verified_bad: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)
    """Jobs whose lease ran out on this node."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderWork(Base):
    """One attempt of one job on one node: what it claims, what it uploaded, the verdict."""

    __tablename__ = "provider_work"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(
        ForeignKey("provider_nodes.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default="running")
    """``running`` → ``verifying`` → ``accepted`` | ``rejected``; or ``lost``, ``failed``."""
    uploads: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """File name → sha256 of what the node uploaded."""
    claimed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The result the node reported."""
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    verify_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
