"""The local worker inside ``loraloop up``: claims jobs and runs each in a child process, so a
crash, an out-of-memory kill or a cancel never takes the server down.

It forwards the child's progress events, heartbeats while the child runs, and kills the child
as soon as a heartbeat is refused (the job was cancelled or its lease was taken back).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from loraloop.db.engine import Database
from loraloop.db.tables import Job
from loraloop.errors import Conflict, LoraloopError, NotFound
from loraloop.jobs import queue as jobs
from loraloop.jobs import supervisor

__all__ = ["LocalWorker"]

log = logging.getLogger(__name__)


class LocalWorker:
    """A background thread that drains the queue one job at a time."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str = "local",
        lease_seconds: int = 60,
        poll_seconds: float = 1.0,
        kinds: list[str] | None = None,
    ):
        self.db = db
        self.kinds = kinds
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="loraloop-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.run_once():
                    self._stop.wait(self.poll_seconds)
            except Exception:  # keep the worker alive through a database hiccup
                log.exception("worker loop error")
                self._stop.wait(self.poll_seconds)

    def run_once(self) -> bool:
        """Reap expired leases, then claim and run one job. False when the queue is empty."""
        with self.db.session() as session:
            jobs.reap(session)
        with self.db.session() as session:
            job = jobs.claim(
                session, self.worker_id, lease_seconds=self.lease_seconds, kinds_=self.kinds
            )
        if job is None:
            return False
        self._run(job)
        return True

    def _run(self, job: Job) -> None:
        token = job.lease_token
        assert token is not None
        try:
            with self.db.session() as session:
                jobs.start(session, job.id, token)
        except (Conflict, NotFound):
            return  # cancelled between claim and start
        outcome = supervisor.run_child(
            job.kind,
            job.payload,
            _DbLease(self.db, job.id, token, self.lease_seconds),
            beat_every=self.lease_seconds / 3,
            stopping=self._stop.is_set,
        )
        self._finish(job, token, outcome)

    def _finish(self, job: Job, token: str, outcome: supervisor.Outcome) -> None:
        try:
            with self.db.session() as session:
                failure = outcome.failure()
                if outcome.stopped and self._stop.is_set():
                    jobs.fail(session, job.id, token, "the worker shut down", retryable=True)
                elif outcome.stopped:
                    return  # cancelled, or another attempt owns the job now
                elif failure is None:
                    assert outcome.result is not None
                    jobs.complete(session, job.id, token, outcome.result)
                else:
                    message, retryable = failure
                    jobs.fail(session, job.id, token, message, retryable=retryable)
        except (Conflict, NotFound) as exc:
            log.info("job %s finished after losing its lease: %s", job.id, exc.message)
        except LoraloopError as exc:  # the result could not be recorded (success hook refused)
            with self.db.session() as session:
                jobs.fail(session, job.id, token, f"could not record the result: {exc.message}")


class _DbLease:
    """The lease of a job held by the local worker, through the database."""

    def __init__(self, db: Database, job_id: int, token: str, lease_seconds: int) -> None:
        self.db, self.job_id, self.token, self.lease_seconds = db, job_id, token, lease_seconds

    def heartbeat(self) -> None:
        try:
            with self.db.session() as session:
                jobs.heartbeat(session, self.job_id, self.token, lease_seconds=self.lease_seconds)
        except (Conflict, NotFound) as exc:
            raise supervisor.Stop(exc.message) from exc

    def event(self, data: dict[str, Any]) -> None:
        try:
            with self.db.session() as session:
                jobs.add_event(
                    session, self.job_id, self.token, data, lease_seconds=self.lease_seconds
                )
        except (Conflict, NotFound) as exc:
            raise supervisor.Stop(exc.message) from exc
