"""The local worker inside ``loraloop up``: claims jobs and runs each in a child process, so a
crash, an out-of-memory kill or a cancel never takes the server down.

It forwards the child's progress events, heartbeats while the child runs, and kills the child
as soon as a heartbeat is refused (the job was cancelled or its lease was taken back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from loraloop.db.engine import Database
from loraloop.db.tables import Job
from loraloop.errors import Conflict, LoraloopError, NotFound
from loraloop.jobs import queue as jobs

__all__ = ["LocalWorker"]

log = logging.getLogger(__name__)
_STDERR_TAIL = 2000


@dataclass
class _Outcome:
    result: dict[str, Any] | None = None
    error: str | None = None
    stopped: bool = False


class LocalWorker:
    """A background thread that drains the queue one job at a time."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str = "local",
        lease_seconds: int = 60,
        poll_seconds: float = 1.0,
    ):
        self.db = db
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
            job = jobs.claim(session, self.worker_id, lease_seconds=self.lease_seconds)
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
        with tempfile.TemporaryFile("w+") as stderr:
            outcome, code = self._supervise(job, token, stderr)
            stderr.seek(0)
            tail = stderr.read()[-_STDERR_TAIL:]
        self._finish(job, token, outcome, code, tail)

    def _supervise(self, job: Job, token: str, stderr: IO[str]) -> tuple[_Outcome, int]:
        child = subprocess.Popen(
            [sys.executable, "-m", "loraloop.jobs.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group: a kill reaches its children too
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(json.dumps({"kind": job.kind, "payload": job.payload}))
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child died before reading its job; its exit code tells the story
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
        reader.start()
        outcome = _Outcome()
        try:
            self._follow(job, token, child, lines, outcome)
        except BaseException:
            _kill(child)  # whatever went wrong here (the database too), no child outlives it
            raise
        finally:
            code = child.wait()
            reader.join(timeout=5)
            child.stdout.close()
        return outcome, code

    def _follow(
        self,
        job: Job,
        token: str,
        child: subprocess.Popen[str],
        lines: queue.Queue[str | None],
        outcome: _Outcome,
    ) -> None:
        """Forward the child's messages and heartbeat until it exits or must be stopped."""
        beat_every = self.lease_seconds / 3
        last_beat = time.monotonic()
        while True:
            try:
                line = lines.get(timeout=min(beat_every, 1.0))
            except queue.Empty:
                line = ""
            if line is None:
                return
            try:
                message = _parse(line) if line else None
                if message is not None:
                    self._handle(job, token, message, outcome)
                    last_beat = time.monotonic()
                if self._stop.is_set():
                    raise Conflict("the worker is shutting down")
                if message is None and time.monotonic() - last_beat >= beat_every:
                    with self.db.session() as session:
                        jobs.heartbeat(session, job.id, token, lease_seconds=self.lease_seconds)
                    last_beat = time.monotonic()
            except (Conflict, NotFound):
                outcome.stopped = True
                _kill(child)
                return

    def _handle(self, job: Job, token: str, message: dict[str, Any], outcome: _Outcome) -> None:
        kind = message.get("type")
        if kind == "event":
            with self.db.session() as session:
                jobs.add_event(
                    session, job.id, token, message["data"], lease_seconds=self.lease_seconds
                )
        elif kind == "result":
            outcome.result = message["data"]
        elif kind == "error":
            outcome.error = str(message["message"])

    def _finish(self, job: Job, token: str, outcome: _Outcome, code: int, tail: str) -> None:
        try:
            with self.db.session() as session:
                if outcome.stopped and self._stop.is_set():
                    jobs.fail(session, job.id, token, "the worker shut down", retryable=True)
                elif outcome.stopped:
                    return  # cancelled, or another attempt owns the job now
                elif outcome.result is not None and code == 0:
                    jobs.complete(session, job.id, token, outcome.result)
                elif outcome.error is not None:
                    jobs.fail(session, job.id, token, outcome.error + _tail(tail))
                else:
                    jobs.fail(
                        session,
                        job.id,
                        token,
                        f"the job's process exited with code {code} without a result" + _tail(tail),
                        retryable=True,
                    )
        except (Conflict, NotFound) as exc:
            log.info("job %s finished after losing its lease: %s", job.id, exc.message)
        except LoraloopError as exc:  # the result could not be recorded (success hook refused)
            with self.db.session() as session:
                jobs.fail(session, job.id, token, f"could not record the result: {exc.message}")


def _kill(child: subprocess.Popen[str]) -> None:
    """Kill the job's whole process group (data loaders and the like included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _tail(text: str) -> str:
    return f"\n--- last output ---\n{text.strip()}" if text.strip() else ""


def _parse(line: str) -> dict[str, Any] | None:
    """One protocol message, or None for a line that is not one (stray output is ignored)."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        log.warning("ignoring a line that is not a protocol message: %.200s", line)
        return None
    return message


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.strip() or "")
    lines.put(None)
