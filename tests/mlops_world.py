"""Small factories for the maintenance-loop tests: rows inserted directly, no child processes.

``make_world(db, tmp_path)`` gives an owner with an adapter of ``versions`` versions (dummy
weights files: nothing here loads a model), v1 its champion. The other helpers add suites,
hand-made jobs, traces and feedback the way the real jobs and the gateway would.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loraloop.catalog import adapters
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import (
    Adapter,
    AdapterVersion,
    Deployment,
    EvalCase,
    EvalSuite,
    Feedback,
    Job,
    Trace,
    User,
)
from loraloop.storage import sha256_file
from tests.factories import make_base_model

_counter = itertools.count(1)


def quick_user(db: Database) -> User:
    """An account row without an argon2 hash (it cannot sign in; use an API key): a real
    hash costs a third of a second, and these tests make many users."""
    n = next(_counter)
    with db.session() as session:
        user = User(email=f"mlops{n}@example.com", display_name=f"mlops{n}", password_hash="!")
        session.add(user)
        session.flush()
        return user


@dataclass
class World:
    """An owner, their adapter, and its versions' ids (index 0 is v1, the champion)."""

    db: Database
    owner: User
    adapter_id: int
    base_id: int
    versions: list[int] = field(default_factory=list)

    def version_id(self, number: int) -> int:
        return self.versions[number - 1]


def _weights(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(f"dummy weights {seed}".encode())
    return folder


def make_world(
    db: Database,
    tmp_path: Path,
    *,
    versions: int = 2,
    owner: User | None = None,
    visibility: str = "private",
) -> World:
    """An adapter with ``versions`` versions; v1 is the champion and nothing else is set."""
    owner = owner or quick_user(db)
    base = make_base_model(db, tmp_path / "base")
    n = next(_counter)
    with db.session() as session:
        adapter = adapters.create(
            session, owner, name=f"loop-{n}", base_model_id=base.id, visibility=visibility
        )
        adapter_id = adapter.id
    world = World(db, owner, adapter_id, base.id)
    for number in range(1, versions + 1):
        world.versions.append(add_version(db, world, tmp_path / f"a{n}-v{number}"))
    with db.session() as session:
        from loraloop.catalog import aliases

        first = session.get(AdapterVersion, world.versions[0])
        assert first is not None
        aliases.ensure_champion(session, first)
    return world


def add_version(
    db: Database,
    world: World,
    folder: Path,
    *,
    dataset_version_id: int | None = None,
    spec: dict[str, Any] | None = None,
    job_id: int | None = None,
) -> int:
    """The next version of the world's adapter (no alias moves)."""
    _weights(folder, next(_counter))
    with db.session() as session:
        latest = len(adapters.versions(session, world.owner, world.adapter_id))
        row = AdapterVersion(
            adapter_id=world.adapter_id,
            version=latest + 1,
            path=str(folder),
            sha256=sha256_file(folder / "adapter_model.safetensors"),
            spec=spec or {},
            metrics={},
            dataset_version_id=dataset_version_id,
            job_id=job_id,
        )
        session.add(row)
        session.flush()
        return row.id


def make_suite(
    db: Database,
    adapter_id: int,
    *,
    name: str = "prices",
    kind: str = "owner",
    metric: str = "contains",
    cases: int = 0,
) -> tuple[int, list[int]]:
    """A suite with ``cases`` simple cases; (suite id, case ids)."""
    with db.session() as session:
        suite = EvalSuite(adapter_id=adapter_id, name=name, kind=kind, metric=metric)
        session.add(suite)
        session.flush()
        rows = [
            EvalCase(
                suite_id=suite.id,
                messages=[{"role": "user", "content": f"How much is item {i}?"}],
                expected="yen",
                metric=metric,
                source=kind,
            )
            for i in range(cases)
        ]
        session.add_all(rows)
        session.flush()
        return suite.id, [r.id for r in rows]


def scored(case_ids: list[int], scores: list[float]) -> dict[str, Any]:
    """One version's result on one suite, as the evaluate job reports it."""
    assert len(case_ids) == len(scores)
    return {
        "cases": [
            {"id": c, "answer": "...", "score": s, "loss": None}
            for c, s in zip(case_ids, scores, strict=True)
        ],
        "score": sum(scores) / len(scores) if scores else 0.0,
        "loss": None,
    }


def make_job(
    db: Database,
    owner: User,
    kind: str,
    payload: dict[str, Any],
    *,
    status: str = "succeeded",
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Job:
    """A job row as the queue would hold it after a worker finished it (nothing runs)."""
    with db.session() as session:
        job = Job(
            owner_id=owner.id,
            kind=kind,
            status=status,
            payload=payload,
            result=result,
            error=error,
            attempts=1,
            max_attempts=3,
            finished_at=utcnow() if status in ("succeeded", "failed", "cancelled") else None,
        )
        session.add(job)
        session.flush()
        return job


def make_alias_deployment(
    db: Database, owner: User, adapter_id: int, *, alias: str = "champion", name: str | None = None
) -> int:
    with db.session() as session:
        row = Deployment(
            owner_id=owner.id,
            name=name or f"dep-{next(_counter)}",
            kind="adapter",
            adapter_id=adapter_id,
            alias=alias,
        )
        session.add(row)
        session.flush()
        return row.id


def add_traces(
    db: Database,
    owner: User,
    *,
    count: int,
    deployment_id: int | None = None,
    version_id: int | None = None,
    status: str = "ok",
    start: datetime | None = None,
    texts: list[str] | None = None,
) -> list[str]:
    """``count`` served answers, one second apart from ``start`` (default: now); their ids."""
    start = start or utcnow()
    ids = []
    with db.session() as session:
        for i in range(count):
            text = texts[i] if texts else f"question {next(_counter)}"
            row = Trace(
                id=f"chatcmpl-mlops{next(_counter):010d}",
                owner_id=owner.id,
                deployment_id=deployment_id,
                adapter_version_id=version_id,
                source="api",
                endpoint="chat",
                model="cafe",
                request={"messages": [{"role": "user", "content": text}]},
                response="an answer",
                finish_reason="stop",
                status=status,
                created_at=start + timedelta(seconds=i),
            )
            session.add(row)
            ids.append(row.id)
        session.flush()
    return ids


def rate(db: Database, owner: User, trace_ids: list[str], bad: list[bool]) -> None:
    """A thumbs rating per trace: down where ``bad``, up elsewhere."""
    with db.session() as session:
        for trace_id, is_bad in zip(trace_ids, bad, strict=True):
            session.add(
                Feedback(
                    trace_id=trace_id,
                    owner_id=owner.id,
                    author_id=owner.id,
                    rating=-1 if is_bad else 1,
                    scale="thumbs",
                    tags=[],
                )
            )
        session.flush()


def adapter_row(db: Database, adapter_id: int) -> Adapter:
    with db.session() as session:
        row = session.get(Adapter, adapter_id)
        assert row is not None
        return row
