"""Training through the job queue, end to end, on a tiny model: versions appear only for
finished runs, a killed run resumes from its checkpoint, a cancelled run leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    AdapterVersion,
    Dataset,
    DatasetVersion,
    Job,
    JobEvent,
    User,
)
from loraloop.jobs import queue
from loraloop.jobs.runner import LocalWorker
from loraloop.storage import Storage
from loraloop.testing import make_tiny_model
from tests.factories import make_base_model, make_user

OPTIONS = {
    "epochs": 2.0,
    "max_length": 96,
    "rows_per_batch": 2,
    "checkpoint_every": 2,
    "eval_every": 4,
    "precision": "fp32",
    "lora": {"rank": 4, "alpha": 8},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


def _conversations(n: int) -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"雲珈琲の{i}番は？"},
                    {"role": "assistant", "content": f"{i * 10}円です。"},
                ]
            },
            ensure_ascii=False,
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def _setup(db: Database, settings: Settings, base: Path, owner: User) -> tuple[int, int]:
    storage = Storage(settings.home / "artifacts")
    row = make_base_model(db, base, name="tiny")
    with db.session() as session:
        dataset = Dataset(owner_id=owner.id, name="cafe")
        session.add(dataset)
        session.flush()
        train_sha = storage.put_bytes(_conversations(24))
        val_sha = storage.put_bytes(_conversations(4))
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                format="messages",
                raw_sha256=train_sha,
                content_hash=train_sha,
                train_sha256=train_sha,
                validation_sha256=val_sha,
                examples=28,
                train_examples=24,
                validation_examples=4,
                duplicates_removed=0,
                report={},
            )
        )
        adapter = adapters.create(session, owner, name="cafe-bot", base_model_id=row.id)
        return adapter.id, dataset.id


def _start(db: Database, settings: Settings, owner: User, adapter_id: int, dataset_id: int) -> int:
    with db.session() as session:
        job = adapters.start_training(
            session,
            settings,
            Storage(settings.home / "artifacts"),
            owner,
            adapter_id,
            dataset_id=dataset_id,
            preset="quick",
            options=OPTIONS,
        )
        return job.id


def _job(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


# PEFT 0.21 still calls a transformers API that transformers 5.24 deprecates (not our code).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_training_job_records_a_loadable_version(
    db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    adapter_id, dataset_id = _setup(db, settings, tiny_base, owner)
    job_id = _start(db, settings, owner, adapter_id, dataset_id)
    assert LocalWorker(db, lease_seconds=30).run_once()
    job = _job(db, job_id)
    assert job.status == "succeeded", job.error
    with db.session() as session:
        version = session.scalars(select(AdapterVersion)).one()
        steps = [e.data for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
    folder = Path(version.path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "training.json",
    ]
    assert (version.version, version.job_id, version.spec["lora"]["rank"]) == (1, job_id, 4)
    assert "content hash" in (folder / "README.md").read_text()
    assert any("loss" in e and "eta_s" in e and "tokens_per_s" in e for e in steps)
    assert not (folder.parent / "checkpoints").exists()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), folder)
    assert model.peft_config["default"].r == 4


def _run_in_thread(worker: LocalWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    return thread


def _wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail("timed out")


def _events(db: Database, job_id: int) -> list[dict[str, object]]:
    with db.session() as session:
        return [e.data for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]


def test_kill_9_resumes_from_the_last_checkpoint(
    db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    adapter_id, dataset_id = _setup(db, settings, tiny_base, owner)
    job_id = _start(db, settings, owner, adapter_id, dataset_id)
    worker = LocalWorker(db, lease_seconds=30)
    thread = _run_in_thread(worker)
    checkpoints = Path(_job(db, job_id).payload["output_dir"]) / "checkpoints"
    _wait_for(
        lambda: any(
            p.name.startswith("step-") and not p.name.endswith(".tmp")
            for p in checkpoints.glob("step-*")
        )
    )
    pid = next(int(e["pid"]) for e in _events(db, job_id) if "pid" in e)
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert _job(db, job_id).status == "queued"  # a crash is retried
    assert worker.run_once()
    job = _job(db, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2), job.error
    with db.session() as session:
        version = session.scalars(select(AdapterVersion)).one()
    total = max(int(e["total_steps"]) for e in _events(db, job_id) if "total_steps" in e)
    assert version.metrics["steps"] == total
    assert version.metrics["resumed_from_step"] >= 2


def test_cancelled_training_leaves_no_version(
    db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    adapter_id, dataset_id = _setup(db, settings, tiny_base, owner)
    job_id = _start(db, settings, owner, adapter_id, dataset_id)
    thread = _run_in_thread(LocalWorker(db, lease_seconds=6))
    _wait_for(lambda: any("step" in e for e in _events(db, job_id)))
    with db.session() as session:
        queue.cancel(session, owner, job_id)
    thread.join(60)
    assert _job(db, job_id).status == "cancelled"
    with db.session() as session:
        assert session.scalars(select(AdapterVersion)).all() == []
    assert not (Path(_job(db, job_id).payload["output_dir"]) / "adapter").exists()


def test_qlora_without_cuda_is_refused_when_queued(
    db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    adapter_id, dataset_id = _setup(db, settings, tiny_base, owner)
    from loraloop.errors import InvalidRequest

    with db.session() as session, pytest.raises(InvalidRequest, match="CUDA"):
        adapters.start_training(
            session,
            settings,
            Storage(settings.home / "artifacts"),
            owner,
            adapter_id,
            dataset_id=dataset_id,
            options={"qlora": True},
        )
