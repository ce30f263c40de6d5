"""Issue 8's acceptance: a server on 127.0.0.1 and three worker processes speaking only HTTP.
An honest node, one that uploads a random adapter, and one killed mid-job. The honest work is
verified and credited; the forged adapter fails the hidden evaluation and earns nothing; the
killed job is re-queued and finished by another node; no job is lost or finished twice. Then
an evaluation: a node that reports the expected answers as its own (its scores true to them)
is caught by the spot check; an honest node's evaluation is recorded and credited."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from loraloop.api.app import create_app
from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    Adapter,
    AdapterVersion,
    Dataset,
    DatasetVersion,
    EvalRun,
    Job,
    JobEvent,
    PointsEntry,
    ProviderNode,
    ProviderWork,
    User,
)
from loraloop.jobs.runner import LocalWorker
from loraloop.mlops import gate, suites
from loraloop.providers import work as provider_work
from loraloop.storage import Storage
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.conftest import serve
from tests.factories import make_adapter_version, make_base_model, make_key, make_user

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {
    "epochs": 6.0,
    "learning_rate": 1e-2,
    "max_length": 64,
    "rows_per_batch": 4,
    "checkpoint_every": 2,  # the audit trail: the verifier replays one segment
    "eval_every": 1000,
    "precision": "fp32",
    "lora": {"rank": 4, "alpha": 8},
}

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


def _conversations(n: int, offset: int = 0) -> bytes:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What does cup {i} cost?"},
                    {"role": "assistant", "content": f"Cup {i} costs {i * 10} yen."},
                ]
            }
        )
        for i in range(offset, offset + n)
    ]
    return ("\n".join(rows) + "\n").encode()


def _training_jobs(db: Database, settings: Settings, base: Path, owner: User, n: int) -> list[int]:
    storage = Storage(settings.home / "artifacts")
    row = make_base_model(db, base, name="tiny")
    with db.session() as session:
        dataset = Dataset(owner_id=owner.id, name="cups")
        session.add(dataset)
        session.flush()
        train, held = (
            storage.put_bytes(_conversations(32)),
            storage.put_bytes(_conversations(8, 100)),
        )
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                format="messages",
                raw_sha256=train,
                content_hash=train,
                train_sha256=train,
                validation_sha256=held,
                examples=40,
                train_examples=32,
                validation_examples=8,
                duplicates_removed=0,
                report={},
            )
        )
        session.flush()
        ids = []
        for k in range(n):
            adapter = adapters.create(session, owner, name=f"cups-{k}", base_model_id=row.id)
            job = adapters.start_training(
                session,
                settings,
                storage,
                owner,
                adapter.id,
                dataset_id=dataset.id,
                preset="quick",
                options=OPTIONS,
                extra={"remote_ok": True},
            )
            ids.append(job.id)
        return ids


PRICES = [
    {"prompt": f"What does cup {i} cost?", "expected": f"Cup {i} costs {i * 10} yen."}
    for i in range(12)
]
WORDS = [{"prompt": f"Say the price of tea {i}.", "expected": ["yen"]} for i in range(6)]


def _adapter_with_suites(db: Database, tiny_base: Path, tmp_path: Path, owner: User) -> int:
    """An adapter on the tiny base with two random versions (v1 the champion) and two suites:
    a rouge_l one (its cases also scored by loss) and a contains one."""
    base = make_base_model(db, tiny_base)
    first = make_adapter_version(
        db, owner, base, make_tiny_adapter(tiny_base, tmp_path / "v1", seed=1)
    )
    with db.session() as session:
        adapter = session.get(Adapter, first.adapter_id)
    make_adapter_version(
        db, owner, base, make_tiny_adapter(tiny_base, tmp_path / "v2", seed=2), adapter=adapter
    )
    with db.session() as session:
        for name, metric, cases in (("prices", "rouge_l", PRICES), ("words", "contains", WORDS)):
            suite = suites.create(session, owner, first.adapter_id, name=name, metric=metric)
            suites.add_cases(session, owner, suite.id, cases)
    return first.adapter_id


def _until(what: str, check: Callable[[], bool], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Workers:
    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder = url, folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def start(self, mode: str, token: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.provider_agent",
                mode,
                self.url,
                token,
                name,
                str(self.folder / name),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill_hard(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9 the agent and the job's child (its own process group)."""
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        proc.send_signal(signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill_hard(proc)
        for log in self.logs:
            log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[str], Workers]]:
    made: list[Workers] = []

    def make(url: str) -> Workers:
        made.append(Workers(url, tmp_path))
        return made[-1]

    yield make
    for w in made:
        w.stop_all()
    for log in tmp_path.glob("*.log"):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def test_honest_forged_and_killed_providers(
    db: Database,
    settings: Settings,
    tmp_path: Path,
    workers: Callable[[str], Workers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings.model_copy(update={"job_lease_seconds": 8})
    # a new node's first verified job is confirmed by a second run (here the trusted local
    # worker referees); its second counts on verification alone
    monkeypatch.setattr(provider_work, "PROBATION_JOBS", 1)
    owner = make_user(db)
    jobs = _training_jobs(db, settings, make_tiny_model(tmp_path / "base"), owner, 2)
    honest, forger, flaky = (make_user(db) for _ in range(3))
    token = {
        u.id: make_key(db, u, name="node", scopes=["provider"], rate_limit_per_minute=10_000)
        for u in (honest, forger, flaky)
    }
    verifier = LocalWorker(
        db,
        worker_id="verifier",
        lease_seconds=30,
        poll_seconds=0.3,
        kinds=["verify_train", "train_check"],
    )
    verifier.start()

    def work(user: User) -> list[ProviderWork]:
        with db.session() as session:
            return list(
                session.scalars(
                    select(ProviderWork).join(ProviderNode).where(ProviderNode.owner_id == user.id)
                )
            )

    try:
        with serve(create_app(settings, db)) as url:
            pool = workers(url)
            pool.start("forge", token[forger.id], "forger")
            _until(
                "the forgery to be judged",
                lambda: any(w.status == "rejected" for w in work(forger)),
            )
            flaky_proc = pool.start("honest", token[flaky.id], "flaky")

            def flaky_training() -> bool:
                mine = [w for w in work(flaky) if w.status == "running"]
                if not mine:
                    return False
                with db.session() as session:
                    return bool(
                        session.scalar(
                            select(JobEvent.id).where(
                                JobEvent.job_id == mine[0].job_id,
                                JobEvent.attempt == mine[0].attempt,
                            )
                        )
                    )

            _until("the flaky node to be training", flaky_training)
            pool.kill_hard(flaky_proc)
            pool.start("honest", token[honest.id], "honest")

            def all_done() -> bool:
                with db.session() as session:
                    return all(session.get(Job, j).status == "succeeded" for j in jobs)  # type: ignore[union-attr]

            _until("both jobs to finish", all_done, timeout=420)
    finally:
        verifier.stop()

    with db.session() as session:
        versions = session.scalars(select(AdapterVersion)).all()
        assert sorted(v.job_id for v in versions) == sorted(jobs)  # each finished exactly once
        points = {
            u.id: [
                e for e in session.scalars(select(PointsEntry).where(PointsEntry.user_id == u.id))
            ]
            for u in (honest, forger, flaky)
        }
        nodes = {n.owner_id: n for n in session.scalars(select(ProviderNode))}
        finished = {j: session.get(Job, j) for j in jobs}
    (forged,) = work(forger)
    assert forged.status == "rejected"
    assert forged.verification is not None
    assert "held-out" in forged.verification["reason"]
    assert forged.verification["adapter_loss"] > forged.verification["base_loss"]
    assert [w.status for w in work(flaky)] == ["lost"]
    accepted = [w for w in work(honest) if w.status == "accepted"]
    assert sorted(w.job_id for w in accepted) == sorted(jobs)
    for w in accepted:  # one segment of each run was trained again and matched
        assert w.verification is not None
        replay = w.verification.get("replay") or pytest.fail(str(w.verification))
        assert replay["passed"]
        assert replay["distance"] < 1e-3
        assert any(name.startswith("checkpoints/step-") for name in w.uploads)
        print(w.verification["reason"], w.verification.get("confirmation"))
    confirmed = [
        w.verification["confirmation"]
        for w in accepted
        if w.verification and "confirmation" in w.verification
    ]
    assert len(confirmed) == 1  # the first job on probation, the second not
    assert confirmed[0]["agreed"]
    assert confirmed[0]["distance"] < 1e-3
    assert points[forger.id] == []
    assert points[flaky.id] == []
    assert len(points[honest.id]) == 2
    for entry in points[honest.id]:
        assert entry.kind == "compute"
        assert entry.breakdown["tokens"] > 0
        assert entry.breakdown["parameters"] > 0
        assert entry.millipoints >= 1
    assert (nodes[forger.id].verified_bad, nodes[flaky.id].lost) == (1, 1)
    assert nodes[honest.id].verified_ok == 2
    for job in finished.values():
        assert job is not None
        assert job.result is not None
        assert job.result["node_id"] == nodes[honest.id].id
    assert max(j.attempts for j in finished.values() if j is not None) >= 2


def test_honest_and_copying_evaluators(
    db: Database, settings: Settings, tmp_path: Path, workers: Callable[[str], Workers]
) -> None:
    base = make_tiny_model(tmp_path / "base")
    owner = make_user(db)
    adapter_id = _adapter_with_suites(db, base, tmp_path, owner)
    with db.session() as session:
        job_id = gate.start_evaluation(
            session, settings, owner, adapter_id, [1, 2], community_compute=True
        ).id
    honest, copier = make_user(db), make_user(db)
    token = {
        u.id: make_key(db, u, name="node", scopes=["provider"], rate_limit_per_minute=10_000)
        for u in (honest, copier)
    }
    verifier = LocalWorker(
        db, worker_id="verifier", lease_seconds=30, poll_seconds=0.3, kinds=["verify_evaluate"]
    )
    verifier.start()

    def work(user: User) -> list[ProviderWork]:
        with db.session() as session:
            return list(
                session.scalars(
                    select(ProviderWork).join(ProviderNode).where(ProviderNode.owner_id == user.id)
                )
            )

    def finished() -> bool:
        with db.session() as session:
            return session.get(Job, job_id).status == "succeeded"  # type: ignore[union-attr]

    try:
        with serve(create_app(settings, db)) as url:
            pool = workers(url)
            pool.start("copy", token[copier.id], "copier")
            _until("the copier to take the job", lambda: bool(work(copier)))
            # the honest node starts up meanwhile, and gets the job once the copy is rejected
            pool.start("once", token[honest.id], "evaluator")
            _until("the evaluation to be recorded", finished)
    finally:
        verifier.stop()

    (copied,) = work(copier)
    assert copied.verification is not None
    assert "sampled answers differ" in copied.verification["reason"]
    print("copier:", copied.verification["reason"])
    (done,) = work(honest)
    assert done.status == "accepted"
    assert done.verification is not None
    print("honest:", done.verification["reason"])
    assert done.verification["agreement"] == 1.0
    assert done.verification["rescore"]["cases"] == 2 * (len(PRICES) + len(WORDS))
    with db.session() as session:
        runs = session.scalars(select(EvalRun).where(EvalRun.job_id == job_id)).all()
        credits = {
            u.id: session.scalars(select(PointsEntry).where(PointsEntry.user_id == u.id)).all()
            for u in (honest, copier)
        }
    assert len(runs) == 4  # one per version and suite, as a local evaluation records
    assert credits[copier.id] == []
    (credit,) = credits[honest.id]
    assert credit.breakdown["work"] == "evaluation"
    assert credit.breakdown["tokens"] == done.verification["tokens"]
