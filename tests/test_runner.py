"""The local worker end to end, with real child processes: results and progress, handler
failures, crashes retried until ``max_attempts``, and cancellation that kills the child."""

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from loraloop.db.engine import Database
from loraloop.db.tables import Job, User
from loraloop.jobs import queue
from loraloop.jobs.runner import LocalWorker
from tests.factories import make_user


def _enqueue(db: Database, owner: User, payload: dict[str, Any], max_attempts: int = 3) -> int:
    with db.session() as session:
        return queue.enqueue(session, owner, "selftest", payload, max_attempts=max_attempts).id


def _job(db: Database, owner: User, job_id: int) -> Job:
    with db.session() as session:
        return queue.get_own(session, owner, job_id)


def _events(db: Database, owner: User, job_id: int) -> list[dict[str, Any]]:
    with db.session() as session:
        return [e.data for e in queue.events_after(session, owner, job_id)]


def _worker(db: Database, lease_seconds: int = 5) -> LocalWorker:
    return LocalWorker(db, worker_id="test-worker", lease_seconds=lease_seconds, poll_seconds=0.05)


# (name, payload, max_attempts, status after each run_once, fragments of the final error)
OUTCOMES = [
    ("success", {"steps": 3}, 3, ["succeeded"], []),
    (
        "handler failure is final",
        {"steps": 3, "fail_at_step": 2},
        3,
        ["failed"],
        ["RuntimeError: selftest asked to fail at step 2", "Traceback"],
    ),
    (
        "crash is retried, then final",
        {"steps": 2, "crash_at_step": 1},
        3,
        ["queued", "queued", "failed"],
        ["exited with code 17", "selftest: crashing at step 1"],
    ),
]


@pytest.mark.parametrize(
    ("name", "payload", "max_attempts", "statuses", "fragments"),
    OUTCOMES,
    ids=[case[0] for case in OUTCOMES],
)
def test_run_once_outcomes(
    db: Database,
    name: str,
    payload: dict[str, Any],
    max_attempts: int,
    statuses: list[str],
    fragments: list[str],
) -> None:
    owner = make_user(db)
    job_id = _enqueue(db, owner, {**payload, "seconds_per_step": 0}, max_attempts=max_attempts)
    worker = _worker(db)
    seen = []
    while worker.run_once():
        seen.append(_job(db, owner, job_id).status)
        assert len(seen) <= max_attempts, name
    assert seen == statuses
    job = _job(db, owner, job_id)
    assert job.attempts == len(statuses)
    for fragment in fragments:
        assert fragment in (job.error or ""), f"{fragment!r} not in {job.error!r}"
    # the worker (and this process, the server) carry on: the next job runs normally
    follow_up = _enqueue(db, owner, {"steps": 1, "seconds_per_step": 0})
    assert worker.run_once()
    assert _job(db, owner, follow_up).status == "succeeded"


def test_success_stores_the_result_and_progress(db: Database) -> None:
    owner = make_user(db)
    job_id = _enqueue(db, owner, {"steps": 3, "seconds_per_step": 0})
    assert _worker(db).run_once()
    job = _job(db, owner, job_id)
    assert (job.status, job.error, job.attempts) == ("succeeded", None, 1)
    assert job.result is not None
    assert job.result["steps"] == 3
    events = _events(db, owner, job_id)
    assert [(e["step"], e["total"]) for e in events] == [(1, 3), (2, 3), (3, 3)]
    assert {e["pid"] for e in events} == {job.result["pid"]} != {os.getpid()}


def test_an_idle_worker_reports_an_empty_queue(db: Database) -> None:
    assert _worker(db).run_once() is False


# (name, steps, seconds_per_step, lease_seconds, seconds within which the child must be gone)
CANCELS = [
    ("between progress events", 50, 0.1, 5, 3.0),
    # the next event is 2 s away, so only a refused heartbeat can stop it this soon
    ("during a silent step", 3, 2.0, 2, 1.6),
]


@pytest.mark.parametrize(
    ("name", "steps", "delay", "lease", "bound"), CANCELS, ids=[case[0] for case in CANCELS]
)
def test_cancel_kills_the_running_child(
    db: Database, name: str, steps: int, delay: float, lease: int, bound: float
) -> None:
    owner = make_user(db)
    job_id = _enqueue(db, owner, {"steps": steps, "seconds_per_step": delay})
    worker = _worker(db, lease_seconds=lease)
    ran: list[bool] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ran.append(worker.run_once())
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pid = _first_pid(db, owner, job_id, within=delay + 10)
    os.kill(pid, 0)  # alive while it runs
    with db.session() as session:
        queue.cancel(session, owner, job_id)
    cancelled_at = time.monotonic()
    thread.join(timeout=bound + 5)
    took = time.monotonic() - cancelled_at
    assert not thread.is_alive(), f"{name}: run_once still running {bound + 5} s after cancel"
    assert not errors, errors
    assert took < bound, f"{name}: the child was stopped {took:.1f} s after the cancel"
    assert ran == [True]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    job = _job(db, owner, job_id)
    assert (job.status, job.result) == ("cancelled", None)
    assert len(_events(db, owner, job_id)) < steps


def _first_pid(db: Database, owner: User, job_id: int, within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        events = _events(db, owner, job_id)
        if events:
            pid: int = events[0]["pid"]
            return pid
        time.sleep(0.05)
    pytest.fail(f"no progress event within {within} s")


def test_stray_output_of_the_handler_cannot_corrupt_the_protocol() -> None:
    """Native code and subprocesses write to file descriptor 1, not to ``sys.stdout``."""
    script = (
        "import os\n"
        "from loraloop.jobs import child, kinds\n"
        "def handler(payload, report):\n"
        "    os.write(1, b'native noise\\n')\n"
        "    print('python noise')\n"
        "    report({'step': 1})\n"
        "    return {'ok': True}\n"
        "kinds.load_handler = lambda kind: handler\n"
        "raise SystemExit(child.main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps({"kind": "selftest", "payload": {}}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert messages == [
        {"type": "event", "data": {"step": 1}},
        {"type": "result", "data": {"ok": True}},
    ]
    assert "native noise" in done.stderr
    assert "python noise" in done.stderr
