"""Acceptance: concurrent claimers drain the queue with every job claimed exactly once and no
deadlock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite)."""

import threading
import time

import pytest
from sqlalchemy import select

from loraloop.db.engine import Database
from loraloop.db.tables import Job
from loraloop.jobs import queue
from tests.factories import make_user

DEADLINE_S = 60.0

# (dialect, jobs, claiming threads)
CASES = [
    pytest.param("postgresql", 100, 8, marks=pytest.mark.postgres, id="postgresql-100x8"),
    pytest.param("sqlite", 30, 4, id="sqlite-30x4"),
]


def _drain(db: Database, worker: str, start: threading.Barrier, claimed: list[int]) -> None:
    start.wait(timeout=DEADLINE_S)
    while True:
        with db.session() as session:
            job = queue.claim(session, worker, lease_seconds=60)
        if job is None:
            return
        claimed.append(job.id)


@pytest.mark.parametrize(("dialect", "jobs", "threads"), CASES)
def test_concurrent_claims_take_every_job_exactly_once(
    db: Database, dialect: str, jobs: int, threads: int
) -> None:
    if db.dialect != dialect:
        pytest.skip(f"this case runs on {dialect}")
    owner = make_user(db)
    with db.session() as session:
        ids = [
            queue.enqueue(session, owner, "selftest", {"steps": 1}, priority=i % 3).id
            for i in range(jobs)
        ]
    start = threading.Barrier(threads)
    per_worker: dict[str, list[int]] = {f"w{n}": [] for n in range(threads)}
    errors: list[BaseException] = []

    def run(worker: str) -> None:
        try:
            _drain(db, worker, start, per_worker[worker])
        except BaseException as exc:  # reported below, with the worker's name
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(name,), daemon=True) for name in per_worker]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=max(0.0, DEADLINE_S - (time.monotonic() - began)))
    stuck = [w.name for w in workers if w.is_alive()]
    assert not stuck, f"claimers still running after {DEADLINE_S} s (deadlock?): {stuck}"
    assert not errors, f"claimers raised: {errors!r}"

    claimed = [job_id for got in per_worker.values() for job_id in got]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == sorted(ids)
    with db.session() as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempts, Job.worker_id)).all()
    holder = {job_id: worker for worker, got in per_worker.items() for job_id in got}
    assert all(status == "leased" and attempts == 1 for _, status, attempts, _ in rows)
    assert {job_id: worker for job_id, _, _, worker in rows} == holder
