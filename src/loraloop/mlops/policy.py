"""Retraining policy and retrain runs: when an adapter retrains, on what, and what follows.

A trigger (drift, falling quality, N new accepted examples, a schedule, or the owner's click)
records a :class:`RetrainRun`. Under ``auto`` the run is approved at once; under ``propose`` it
waits for the owner. The maintenance loop starts approved runs: a training job on the
champion's dataset version plus every accepted correction, with the champion's
hyperparameters. When it succeeds the new version becomes the challenger and an evaluation
job gates it against the champion (``gate.evaluation_succeeded`` decides).

An adapter has at most one open run, so a burst of alarms starts one retraining.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases
from loraloop.config import Settings
from loraloop.db.tables import (
    AdapterVersion,
    DatasetVersion,
    Job,
    RetrainPolicy,
    RetrainRun,
    TrainingCandidate,
    User,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.jobs import queue
from loraloop.mlops import gate, suites
from loraloop.storage import Storage

__all__ = [
    "MODES",
    "OPEN",
    "TRIGGERS",
    "approve",
    "challenge",
    "dismiss",
    "get",
    "open_run",
    "policy_of",
    "retrain_now",
    "runs",
    "start_run",
    "train_succeeded",
    "trigger",
    "update",
]

MODES = ("auto", "propose", "off")
TRIGGERS = ("drift", "quality", "examples", "schedule", "manual")
OPEN = ("proposed", "approved", "training", "evaluating", "canary")
#: setting -> the kind of value it takes (``choice``: checked against its allowed values)
_FIELDS = {
    "mode": "choice",
    "on_drift": "flag",
    "on_quality": "flag",
    "min_new_examples": "count or null",
    "every_hours": "count or null",
    "margin": "number",
    "tolerance": "number",
    "canary_share": "number",
    "canary_min_feedback": "count",
    "trust_owner_corrections": "flag",
}
_KIND_WORDS = {
    "flag": "true or false",
    "number": "a number",
    "count": "a whole number",
    "count or null": "a whole number or null",
}


def _defaults(adapter_id: int) -> RetrainPolicy:
    return RetrainPolicy(
        adapter_id=adapter_id,
        mode="propose",
        on_drift=True,
        on_quality=True,
        min_new_examples=None,
        every_hours=None,
        margin=0.02,
        tolerance=0.02,
        canary_share=0.0,
        canary_min_feedback=20,
        trust_owner_corrections=True,
    )


def policy_of(session: Session, adapter_id: int) -> RetrainPolicy:
    """The stored policy, or the defaults (not stored) when the owner never set one."""
    return session.get(RetrainPolicy, adapter_id) or _defaults(adapter_id)


def get(session: Session, user: User, adapter_id: int) -> RetrainPolicy:
    adapters.get_own(session, user, adapter_id)
    return policy_of(session, adapter_id)


def update(session: Session, user: User, adapter_id: int, **changes: Any) -> RetrainPolicy:
    """Change some fields of your adapter's policy; every problem is reported at once."""
    adapters.get_own(session, user, adapter_id)
    problems = []
    usable: dict[str, Any] = {}
    for name, value in changes.items():
        kind = _FIELDS.get(name)
        if kind is None:
            problems.append(f"{name} is not a policy setting")
        elif not _fits(value, kind):
            problems.append(f"{name} {value!r} must be {_KIND_WORDS[kind]}")
        else:
            usable[name] = value
    merged = {**_as_dict(policy_of(session, adapter_id)), **usable}
    if merged["mode"] not in MODES:
        problems.append(f"mode {merged['mode']!r} must be one of {', '.join(MODES)}")
    for name in ("margin", "tolerance"):
        if not 0 <= merged[name] <= 1:
            problems.append(f"{name} {merged[name]} must be between 0 and 1")
    if not 0 <= merged["canary_share"] < 1:
        problems.append("canary_share must be at least 0 and below 1 (0: no canary)")
    for name in ("min_new_examples", "every_hours"):
        if merged[name] is not None and merged[name] < 1:
            problems.append(f"{name} must be at least 1, or null to turn it off")
    if merged["canary_min_feedback"] < 1:
        problems.append("canary_min_feedback must be at least 1")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_policy")
    row = session.get(RetrainPolicy, adapter_id)
    if row is None:
        row = _defaults(adapter_id)
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    session.flush()
    return row


def _fits(value: Any, kind: str) -> bool:
    """Whether ``value`` is of the ``kind`` (booleans are not numbers here)."""
    if kind == "choice":
        return True
    if kind == "flag":
        return isinstance(value, bool)
    if value is None:
        return kind == "count or null"
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind == "number" else isinstance(value, int)


def _as_dict(row: RetrainPolicy) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _FIELDS}


def open_run(session: Session, adapter_id: int) -> RetrainRun | None:
    return session.scalar(
        select(RetrainRun)
        .where(RetrainRun.adapter_id == adapter_id, RetrainRun.status.in_(OPEN))
        .order_by(RetrainRun.id.desc())
        .limit(1)
    )


def trigger(
    session: Session, adapter_id: int, trigger: str, detail: dict[str, Any]
) -> RetrainRun | None:
    """Record that ``trigger`` fired. None when the policy is off or a run is already open."""
    policy = policy_of(session, adapter_id)
    if policy.mode == "off" or open_run(session, adapter_id) is not None:
        return None
    if aliases.current(session, adapter_id, "champion") is None:
        return None  # nothing trained yet: nothing to retrain
    run = RetrainRun(
        adapter_id=adapter_id,
        trigger=trigger,
        detail=detail,
        status="approved" if policy.mode == "auto" else "proposed",
    )
    session.add(run)
    session.flush()
    return run


def retrain_now(session: Session, user: User, adapter_id: int) -> RetrainRun:
    """The owner's "retrain now": a manual run, approved."""
    adapters.get_own(session, user, adapter_id)
    _refuse_if_open(session, adapter_id)
    if aliases.current(session, adapter_id, "champion") is None:
        raise Conflict("train a first version before retraining", code="no_champion")
    run = RetrainRun(
        adapter_id=adapter_id, trigger="manual", detail={"by": user.id}, status="approved"
    )
    session.add(run)
    session.flush()
    return run


def _refuse_if_open(session: Session, adapter_id: int) -> None:
    found = open_run(session, adapter_id)
    if found is not None:
        raise Conflict(
            f"retrain run {found.id} is still {found.status}; wait for it or dismiss it",
            code="run_open",
        )


def _own_run(session: Session, user: User, run_id: int) -> RetrainRun:
    run = session.get(RetrainRun, run_id)
    if run is None:
        raise NotFound(f"retrain run {run_id} not found", param="run_id")
    adapters.get_own(session, user, run.adapter_id)
    return run


def approve(session: Session, user: User, run_id: int) -> RetrainRun:
    run = _own_run(session, user, run_id)
    if run.status != "proposed":
        raise Conflict(
            f"retrain run {run_id} is {run.status}, not proposed", code="run_not_proposed"
        )
    run.status = "approved"
    session.flush()
    return run


def dismiss(session: Session, user: User, run_id: int) -> RetrainRun:
    run = _own_run(session, user, run_id)
    if run.status not in ("proposed", "approved"):
        raise Conflict(f"retrain run {run_id} is already {run.status}", code="run_started")
    run.status = "dismissed"
    session.flush()
    return run


def runs(session: Session, user: User, adapter_id: int, limit: int = 50) -> list[RetrainRun]:
    adapters.get_own(session, user, adapter_id)
    query = select(RetrainRun).where(RetrainRun.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(RetrainRun.id.desc()).limit(limit)))


def start_run(session: Session, settings: Settings, storage: Storage, run: RetrainRun) -> Job:
    """Queue the training job of an approved run."""
    adapter = adapters.get_any(session, run.adapter_id)
    owner = session.get(User, adapter.owner_id)
    champion = aliases.current(session, adapter.id, "champion")
    assert owner is not None
    assert champion is not None
    data = (
        session.get(DatasetVersion, champion.dataset_version_id)
        if champion.dataset_version_id
        else None
    )
    if data is None:
        raise Conflict("the champion's dataset version was deleted; retrain by hand")
    train_sha, added, through = _training_file(session, storage, adapter.id, data)
    job = adapters.start_training(
        session,
        settings,
        storage,
        owner,
        adapter.id,
        dataset_id=data.dataset_id,
        dataset_version=data.version,
        options=champion.spec,
        parent_version=champion.version,
        train_sha256=train_sha,
        extra={
            "maintenance": {
                "retrain_run_id": run.id,
                "judge": gate.judge_of(settings),
                "max_new_tokens": settings.eval_max_new_tokens,
                "added_examples": added,
            }
        },
    )
    run.train_job_id = job.id
    run.status = "training"
    run.detail = {**run.detail, "added_examples": added, "candidates_through": through}
    session.flush()
    return job


def _training_file(
    session: Session, storage: Storage, adapter_id: int, data: DatasetVersion
) -> tuple[str, int, int]:
    """The dataset's training split plus accepted corrections: (sha256, added, last id)."""
    rows = list(
        session.execute(
            select(TrainingCandidate.id, TrainingCandidate.messages)
            .where(
                TrainingCandidate.adapter_id == adapter_id,
                TrainingCandidate.status == "accepted",
                TrainingCandidate.role == "train",
            )
            .order_by(TrainingCandidate.id)
        )
    )
    if not rows:
        return data.train_sha256, 0, 0
    base = storage.path(data.train_sha256).read_bytes()
    if base and not base.endswith(b"\n"):
        base += b"\n"
    extra = "".join(
        json.dumps({"messages": messages}, ensure_ascii=False) + "\n" for _, messages in rows
    )
    return storage.put_bytes(base + extra.encode("utf-8")), len(rows), rows[-1][0]


def train_succeeded(session: Session, job: Job) -> AdapterVersion:
    """Success hook of ``train``: record the version, make the held-out suite, and for a
    retrain run set the challenger and queue the gate's evaluation."""
    version = adapters.record_version(session, job)
    validation = job.payload.get("validation_file")
    data = (
        session.get(DatasetVersion, version.dataset_version_id)
        if version.dataset_version_id
        else None
    )
    if validation and data is not None:
        suites.ensure_heldout(session, version.adapter_id, data, validation)
    maintenance = job.payload.get("maintenance") or {}
    run = session.get(RetrainRun, maintenance["retrain_run_id"]) if maintenance else None
    if run is None or run.status != "training":
        return version
    champion = aliases.current(session, version.adapter_id, "champion")
    if champion is None or champion.id == version.id:
        run.status = "promoted"  # it had no champion to beat
        return version
    owner = session.get(User, job.owner_id)
    assert owner is not None
    _queue_gate(
        session,
        run,
        owner,
        champion,
        version,
        base={k: job.payload[k] for k in ("base_path", "base_default", "models_dir")},
        judge=maintenance.get("judge"),
        max_new_tokens=int(maintenance.get("max_new_tokens", 64)),
        remote_ok=bool(job.payload.get("remote_ok")),  # as the owner chose for its training
    )
    return version


def _queue_gate(
    session: Session,
    run: RetrainRun,
    owner: User,
    champion: AdapterVersion,
    challenger: AdapterVersion,
    *,
    base: dict[str, Any],
    judge: dict[str, Any] | None,
    max_new_tokens: int,
    remote_ok: bool = False,
) -> None:
    """Make ``challenger`` the challenger and queue the evaluation that gates it."""
    run.challenger_version_id = challenger.id
    payload = gate.evaluation_payload(
        session,
        challenger.adapter_id,
        [champion, challenger],
        base=base,
        judge=judge,
        max_new_tokens=max_new_tokens,
        gate={"retrain_run_id": run.id, "champion_id": champion.id, "challenger_id": challenger.id},
        remote_ok=remote_ok,
    )
    if not any(s["cases"] for s in payload["suites"]):
        run.status, run.error = "refused", "the adapter has no evaluation cases to gate on"
        return
    aliases.move(session, challenger.adapter_id, "challenger", challenger.id, cause="retrain")
    evaluation = queue.enqueue(session, owner, "evaluate", payload, submitted=False)
    run.eval_job_id = evaluation.id
    run.status = "evaluating"
    session.flush()


def challenge(
    session: Session, settings: Settings, user: User, adapter_id: int, version: int
) -> RetrainRun:
    """Put an existing version of your adapter through the gate against the champion."""
    adapters.get_own(session, user, adapter_id)
    challenger = adapters.get_version(session, user, adapter_id, version)
    champion = aliases.current(session, adapter_id, "champion")
    if champion is None:
        raise Conflict("the adapter has no champion to challenge", code="no_champion")
    if champion.id == challenger.id:
        raise Conflict(f"version {version} is the champion already", code="already_champion")
    _refuse_if_open(session, adapter_id)
    run = RetrainRun(
        adapter_id=adapter_id,
        trigger="manual",
        detail={"by": user.id, "challenge": version},
        status="evaluating",
    )
    session.add(run)
    session.flush()
    _queue_gate(
        session,
        run,
        user,
        champion,
        challenger,
        base=gate.base_of(settings, session, adapter_id),
        judge=gate.judge_of(settings),
        max_new_tokens=settings.eval_max_new_tokens,
    )
    if run.status == "refused":
        raise InvalidRequest(
            "the adapter has no evaluation cases: add a suite, or train on a dataset with a "
            "validation split",
            code="no_eval_cases",
        )
    return run
