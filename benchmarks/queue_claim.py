"""Job claims per second: loraloop's single guarded claim vs a select-then-update baseline.

Both drain the same number of queued jobs with the same number of concurrent claimers. The
baseline reads the oldest queued id, then tries ``UPDATE ... WHERE id = ? AND status =
'queued'`` and starts over when another claimer won the race; loraloop's claim is one
statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). Prints ``ratio = loraloop / baseline``.

Usage: python benchmarks/queue_claim.py [--database-url URL] [--jobs N] [--claimers K]
The database is emptied first: point it at a scratch database (default: a temporary SQLite).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import insert, select, text, update

from loraloop.db import Database, upgrade, utcnow
from loraloop.db.tables import Base, Job, User
from loraloop.jobs import queue


def _reset(db: Database, jobs: int) -> None:
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        owner = conn.execute(
            insert(User)
            .values(
                email="bench@example.com",
                display_name="bench",
                password_hash="x",
                role="member",
                locale="en",
                is_active=True,
                created_at=utcnow(),
            )
            .returning(User.id)
        ).scalar_one()
        conn.execute(
            insert(Job),
            [
                {
                    "owner_id": owner,
                    "kind": "selftest",
                    "status": "queued",
                    "payload": {},
                    "priority": 0,
                    "attempts": 0,
                    "max_attempts": 3,
                    "created_at": utcnow(),
                }
                for _ in range(jobs)
            ],
        )


def _loraloop_claim(db: Database) -> bool:
    with db.session() as session:
        return queue.claim(session, "bench", lease_seconds=60) is not None


def _baseline_claim(db: Database) -> bool:
    while True:
        with db.session() as session:
            job_id = session.scalar(
                select(Job.id)
                .where(Job.status == "queued")
                .order_by(Job.priority.desc(), Job.id)
                .limit(1)
            )
            if job_id is None:
                return False
            won = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="leased",
                    lease_token="t",
                    attempts=Job.attempts + 1,
                    lease_expires_at=utcnow() + timedelta(seconds=60),
                )
            ).rowcount
        if won:
            return True


def _drain(db: Database, claim: Callable[[Database], bool], claimers: int) -> tuple[float, int]:
    counts = [0] * claimers

    def work(index: int) -> None:
        while claim(db):
            counts[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(claimers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        db = Database(url)
        if db.dialect == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(db.engine)
        rates: dict[str, list[float]] = {"baseline": [], "loraloop": []}
        for _ in range(args.rounds):
            for name, claim in (("baseline", _baseline_claim), ("loraloop", _loraloop_claim)):
                _reset(db, args.jobs)
                seconds, claimed = _drain(db, claim, args.claimers)
                assert claimed == args.jobs, f"{name} claimed {claimed} of {args.jobs}"
                rates[name].append(claimed / seconds)
        db.dispose()
    best = {name: max(values) for name, values in rates.items()}
    print(
        f"database: {db.dialect}; {args.jobs} jobs, {args.claimers} claimers, best of {args.rounds}"
    )
    for name, rate in best.items():
        print(f"  {name:<9} {rate:8.1f} claims/s")
    print(f"ratio = {best['loraloop'] / best['baseline']:.2f}x (loraloop / baseline)")


if __name__ == "__main__":
    main()
