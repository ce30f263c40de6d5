"""The maintenance loop's clock: one :func:`tick` looks for everything that is due.

- deployments with enough new requests get a drift check;
- adapters whose policy counts new accepted examples or a schedule get a retrain run;
- approved runs start training; runs whose job failed are closed with its error;
- canaries with enough live feedback are promoted or rolled back.

``loraloop up`` runs :class:`Maintenance`, a thread that ticks every
``maintenance_interval_seconds``; tests call :func:`tick` directly. Each step is idempotent, so
two ticks at once (two server processes) do no harm beyond a wasted query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import Job, RetrainPolicy, RetrainRun, TrainingCandidate
from loraloop.errors import LoraloopError
from loraloop.mlops import candidates, events, monitor, policy, promotion
from loraloop.storage import Storage

__all__ = ["Maintenance", "Tick", "tick"]

log = logging.getLogger(__name__)


@dataclass
class Tick:
    """What one tick did (for logs and tests)."""

    drift_checks: list[int] = field(default_factory=list)
    triggered: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    canaries: dict[int, str] = field(default_factory=dict)
    community: dict[str, int] = field(default_factory=dict)
    """What community review did: corrections placed, late reviewers expired, drawn."""


def tick(session: Session, settings: Settings, storage: Storage) -> Tick:
    done = Tick()
    for deployment, requests in monitor.due(session, settings):
        job = monitor.enqueue_check(session, settings, deployment, requests)
        if job is not None:
            done.drift_checks.append(job.id)
    _scheduled_triggers(session, done)
    for run in session.scalars(select(RetrainRun).where(RetrainRun.status == "approved")):
        try:
            policy.start_run(session, settings, storage, run)
            done.started.append(run.id)
        except LoraloopError as exc:
            run.status, run.error = "failed", exc.message
            done.closed.append(run.id)
    _close_failed(session, done)
    for run in session.scalars(select(RetrainRun).where(RetrainRun.status == "canary")):
        outcome = promotion.check_canary(session, run)
        if outcome:
            done.canaries[run.id] = outcome
    events.publish("tick", session, settings=settings, storage=storage, done=done)
    session.flush()
    return done


def _scheduled_triggers(session: Session, done: Tick) -> None:
    rules = session.scalars(
        select(RetrainPolicy).where(
            RetrainPolicy.mode != "off",
            (RetrainPolicy.min_new_examples.is_not(None))
            | (RetrainPolicy.every_hours.is_not(None)),
        )
    )
    for rule in rules:
        last = session.scalar(
            select(RetrainRun)
            .where(RetrainRun.adapter_id == rule.adapter_id)
            .order_by(RetrainRun.id.desc())
            .limit(1)
        )
        fired = None
        if rule.min_new_examples is not None:
            # examples a run already took up (trained on, dismissed, or failed with) count once
            through = _candidates_through(session, rule.adapter_id)
            new = candidates.count_since(session, rule.adapter_id, through)
            if new >= rule.min_new_examples:
                newest = session.scalar(
                    select(func.max(TrainingCandidate.id)).where(
                        TrainingCandidate.adapter_id == rule.adapter_id,
                        TrainingCandidate.status == "accepted",
                        TrainingCandidate.role == "train",
                    )
                )
                fired = ("examples", {"new_examples": new, "candidates_through": newest})
        if fired is None and rule.every_hours is not None:
            since = last.created_at if last else rule.updated_at
            if utcnow() - since >= timedelta(hours=rule.every_hours):
                fired = ("schedule", {"every_hours": rule.every_hours})
        if fired is not None:
            run = policy.trigger(session, rule.adapter_id, *fired)
            if run is not None:
                done.triggered.append(run.id)


def _candidates_through(session: Session, adapter_id: int) -> int:
    """The newest candidate id any run of the adapter recorded as taken up."""
    details = session.scalars(select(RetrainRun.detail).where(RetrainRun.adapter_id == adapter_id))
    return max((int((d or {}).get("candidates_through") or 0) for d in details), default=0)


def _close_failed(session: Session, done: Tick) -> None:
    """Runs whose training or evaluation job ended without success."""
    stuck = session.execute(
        select(RetrainRun, Job)
        .join(Job, Job.id == func.coalesce(RetrainRun.eval_job_id, RetrainRun.train_job_id))
        .where(
            RetrainRun.status.in_(("training", "evaluating")),
            Job.status.in_(("failed", "cancelled")),
        )
    )
    for run, job in stuck:
        run.status = "failed"
        run.error = f"{job.kind} job {job.id} {job.status}: {(job.error or '')[:500]}"
        if run.challenger_version_id is not None:
            promotion.drop_challenger(
                session, run.adapter_id, run.challenger_version_id, cause="cleared"
            )
        done.closed.append(run.id)


class Maintenance:
    """A background thread that ticks on its own session every ``interval`` seconds, then
    runs each of ``duties`` (other services' periodic work, such as closing reward epochs)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        storage: Storage,
        duties: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.db, self.settings, self.storage = db, settings, storage
        self.duties = tuple(duties)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="loraloop-maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.maintenance_interval_seconds):
            try:
                with self.db.session() as session:
                    done = tick(session, self.settings, self.storage)
                if any(vars(done).values()):
                    log.info("maintenance: %s", done)
            except Exception:  # keep ticking through a database hiccup
                log.exception("maintenance tick failed")
            for duty in self.duties:
                try:
                    duty()
                except Exception:  # one service's failure must not stop the others
                    log.exception("maintenance duty %s failed", getattr(duty, "__qualname__", duty))
