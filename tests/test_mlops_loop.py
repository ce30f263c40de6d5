"""One ``loop.tick`` at a time, with hand-made rows: the examples and schedule triggers,
approved runs starting their training job (on the dataset's split plus accepted corrections),
failed jobs closing their run, canaries decided by live feedback."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from loraloop.catalog import aliases
from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import (
    AdapterVersion,
    AliasChange,
    Dataset,
    DatasetVersion,
    GateDecision,
    Job,
    RetrainPolicy,
    RetrainRun,
    TrainingCandidate,
)
from loraloop.mlops import loop, policy, promotion
from loraloop.storage import Storage
from tests.mlops_world import World, add_traces, make_job, make_world, rate

TRAIN = [
    [{"role": "user", "content": "Latte?"}, {"role": "assistant", "content": "480 yen."}],
    [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "300 yen."}],
]


@pytest.fixture
def storage(settings: Settings) -> Storage:
    return Storage(settings.home / "artifacts")


@pytest.fixture
def world(db: Database, tmp_path: Path, storage: Storage) -> World:
    """v1 (champion) trained on a stored dataset version; v2 exists for the gate tests."""
    world = make_world(db, tmp_path, versions=2)
    # the split as stored, deliberately without a final newline
    body = "\n".join(json.dumps({"messages": m}) for m in TRAIN).encode()
    with db.session() as session:
        dataset = Dataset(owner_id=world.owner.id, name="cafe")
        session.add(dataset)
        session.flush()
        sha = storage.put_bytes(body)
        version = DatasetVersion(
            dataset_id=dataset.id,
            version=1,
            format="messages",
            raw_sha256=sha,
            content_hash=sha,
            train_sha256=sha,
            validation_sha256=None,
            examples=2,
            train_examples=2,
            validation_examples=0,
            duplicates_removed=0,
            report={},
        )
        session.add(version)
        session.flush()
        champion = session.get(AdapterVersion, world.version_id(1))
        assert champion is not None
        champion.dataset_version_id = version.id
        champion.spec = {"epochs": 2.0, "learning_rate": 1e-3, "lora": {"rank": 4}}
    return world


def _tick(db: Database, settings: Settings, storage: Storage) -> loop.Tick:
    with db.session() as session:
        return loop.tick(session, settings, storage)


def _policy(db: Database, world: World, **changes: Any) -> None:
    with db.session() as session:
        policy.update(session, world.owner, world.adapter_id, **changes)


def _candidates(
    db: Database, world: World, *rows: tuple[str, str], answer: str = "fixed"
) -> list[int]:
    """Candidates as (status, role), oldest first; their ids."""
    ids = []
    with db.session() as session:
        for n, (status, role) in enumerate(rows):
            row = TrainingCandidate(
                adapter_id=world.adapter_id,
                author_id=world.owner.id,
                messages=[
                    {"role": "user", "content": f"Question {n}?"},
                    {"role": "assistant", "content": f"{answer} {n}"},
                ],
                status=status,
                role=role,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def _runs(db: Database) -> list[RetrainRun]:
    with db.session() as session:
        return list(session.scalars(select(RetrainRun).order_by(RetrainRun.id)))


def test_an_idle_tick_does_nothing(db: Database, settings: Settings, storage: Storage) -> None:
    assert _tick(db, settings, storage) == loop.Tick()


def test_enough_new_examples_propose_a_retraining(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    _policy(db, world, min_new_examples=3)
    _candidates(db, world, ("accepted", "train"), ("accepted", "train"), ("accepted", "eval"))
    _candidates(db, world, ("pending", "train"), ("rejected", "train"))
    assert _tick(db, settings, storage).triggered == []  # two accepted training examples
    _candidates(db, world, ("accepted", "train"))
    done = _tick(db, settings, storage)
    [run] = _runs(db)
    assert done.triggered == [run.id]
    assert (run.trigger, run.status) == ("examples", "proposed")
    assert run.detail["new_examples"] == 3
    assert _tick(db, settings, storage).triggered == []  # one open run


def test_a_dismissed_examples_run_is_not_proposed_again_at_once(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    _policy(db, world, min_new_examples=2)
    _candidates(db, world, ("accepted", "train"), ("accepted", "train"))
    [first] = _tick(db, settings, storage).triggered
    with db.session() as session:
        policy.dismiss(session, world.owner, first)
    assert _tick(db, settings, storage).triggered == []  # the owner said no to these two
    _candidates(db, world, ("accepted", "train"), ("accepted", "train"))
    assert len(_tick(db, settings, storage).triggered) == 1  # two more: ask again


def test_a_run_that_cannot_start_is_not_retried_every_tick(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    with db.session() as session:  # the champion's dataset is gone
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.id == world.version_id(1))
            .values(dataset_version_id=None)
        )
    _policy(db, world, mode="auto", min_new_examples=2)
    _candidates(db, world, ("accepted", "train"), ("accepted", "train"))
    done = _tick(db, settings, storage)
    [run] = _runs(db)
    assert done.triggered == done.closed == [run.id]
    assert run.status == "failed"
    assert run.error is not None
    assert "dataset version was deleted" in run.error
    for _ in range(3):
        assert _tick(db, settings, storage) == loop.Tick()
    assert len(_runs(db)) == 1


def test_a_schedule_triggers_after_its_hours(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    _policy(db, world, every_hours=24)
    assert _tick(db, settings, storage).triggered == []  # the policy was set just now
    with db.session() as session:
        session.execute(
            update(RetrainPolicy)
            .where(RetrainPolicy.adapter_id == world.adapter_id)
            .values(updated_at=utcnow() - timedelta(hours=25))
        )
    done = _tick(db, settings, storage)
    [run] = _runs(db)
    assert done.triggered == [run.id]
    assert (run.trigger, run.status, run.detail) == ("schedule", "proposed", {"every_hours": 24})
    with db.session() as session:
        policy.dismiss(session, world.owner, run.id)
    assert _tick(db, settings, storage).triggered == []  # the last run is the clock now
    with db.session() as session:
        session.execute(update(RetrainRun).values(created_at=utcnow() - timedelta(hours=25)))
    assert len(_tick(db, settings, storage).triggered) == 1


def test_no_trigger_fires_when_the_policy_is_off(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    _policy(db, world, mode="off", min_new_examples=1)
    _candidates(db, world, ("accepted", "train"))
    assert _tick(db, settings, storage) == loop.Tick()


def test_an_approved_run_starts_training_on_the_split_plus_corrections(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    ids = _candidates(
        db,
        world,
        ("accepted", "train"),
        ("accepted", "eval"),  # held out: the gate's case, never trained on
        ("pending", "train"),
        ("accepted", "train"),
        ("rejected", "train"),
    )
    with db.session() as session:
        run_id = policy.retrain_now(session, world.owner, world.adapter_id).id
    done = _tick(db, settings, storage)
    assert done.started == [run_id]
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        job = session.get(Job, run.train_job_id)
        assert job is not None
        assert (run.status, job.kind, job.status) == ("training", "train", "queued")
        assert run.detail["added_examples"] == 2
        assert run.detail["candidates_through"] == ids[3]
        payload = job.payload
    lines = [json.loads(line) for line in Path(payload["train_file"]).read_text().splitlines()]
    assert [row["messages"] for row in lines] == [
        *TRAIN,
        [{"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "fixed 0"}],
        [{"role": "user", "content": "Question 3?"}, {"role": "assistant", "content": "fixed 3"}],
    ]
    assert payload["maintenance"]["retrain_run_id"] == run_id
    assert payload["maintenance"]["added_examples"] == 2
    assert payload["parent_version_id"] == world.version_id(1)
    assert payload["spec"]["epochs"] == 2.0  # the champion's hyperparameters
    assert payload["spec"]["lora"]["rank"] == 4
    assert _tick(db, settings, storage).started == []  # started once


def test_without_corrections_the_split_itself_is_trained_on(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    with db.session() as session:
        run_id = policy.retrain_now(session, world.owner, world.adapter_id).id
        data = session.scalars(select(DatasetVersion)).one()
    _tick(db, settings, storage)
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        job = session.get(Job, run.train_job_id)
        assert job is not None
        assert job.payload["train_file"] == str(storage.path(data.train_sha256))
        assert run.detail["added_examples"] == 0


def _run(db: Database, world: World, status: str, **jobs: int) -> int:
    with db.session() as session:
        run = RetrainRun(adapter_id=world.adapter_id, trigger="drift", detail={}, status=status)
        for name, value in jobs.items():
            setattr(run, name, value)
        session.add(run)
        session.flush()
        return run.id


def test_a_failed_training_job_fails_its_run(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    job = make_job(db, world.owner, "train", {}, status="failed", error="CUDA out of memory")
    run_id = _run(db, world, "training", train_job_id=job.id)
    assert _tick(db, settings, storage).closed == [run_id]
    [run] = _runs(db)
    assert run.status == "failed"
    assert run.error == f"train job {job.id} failed: CUDA out of memory"
    with db.session() as session:
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}


def test_a_failed_evaluation_clears_the_challenger(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    trained = make_job(db, world.owner, "train", {})
    evaluation = make_job(db, world.owner, "evaluate", {}, status="cancelled")
    run_id = _run(
        db,
        world,
        "evaluating",
        train_job_id=trained.id,
        eval_job_id=evaluation.id,
        challenger_version_id=world.version_id(2),
    )
    with db.session() as session:
        aliases.move(session, world.adapter_id, "challenger", world.version_id(2), cause="retrain")
    assert _tick(db, settings, storage).closed == [run_id]
    [run] = _runs(db)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith(f"evaluate job {evaluation.id} cancelled")
    with db.session() as session:
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
        cleared = session.scalars(select(AliasChange).where(AliasChange.cause == "cleared")).one()
        assert (cleared.alias, cleared.from_version_id) == ("challenger", world.version_id(2))


def test_running_jobs_leave_their_runs_alone(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    job = make_job(db, world.owner, "train", {}, status="running")
    _run(db, world, "training", train_job_id=job.id)
    assert _tick(db, settings, storage).closed == []
    assert [r.status for r in _runs(db)] == ["training"]


def test_a_tick_decides_a_canary_with_enough_feedback(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    _policy(db, world, canary_min_feedback=3, canary_share=0.5)
    with db.session() as session:
        decision = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=world.version_id(2),
            outcome="canary",
            reason="passed",
            numbers={},
            created_at=utcnow() - timedelta(minutes=1),
        )
        session.add(decision)
        session.flush()
        decision_id = decision.id
        promotion.start_canary(session, world.adapter_id, world.version_id(2), 0.5)
    run_id = _run(db, world, "canary", decision_id=decision_id)
    for number in (1, 2):
        traces = add_traces(db, world.owner, count=3, version_id=world.version_id(number))
        rate(db, world.owner, traces, [False, False, number == 1])
    assert _tick(db, settings, storage).canaries == {run_id: "promoted"}
    with db.session() as session:
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 2}
    assert _tick(db, settings, storage).canaries == {}


# --- the train job's success hook ------------------------------------------------------


def _finished_training(
    db: Database, world: World, tmp_path: Path, run_id: int, *, validation: Path | None
) -> Job:
    """A succeeded train job of a retrain run, with a real (tiny) safetensors artifact."""
    from safetensors.numpy import save_file

    from loraloop.storage import sha256_file

    folder = tmp_path / "trained"
    folder.mkdir()
    save_file({"lora_A": np.zeros((2, 2), dtype=np.float32)}, folder / "adapter_model.safetensors")
    with db.session() as session:
        data = session.scalars(select(DatasetVersion)).one()
    payload = {
        "adapter_id": world.adapter_id,
        "dataset": {"id": data.id},
        "spec": {"epochs": 2.0},
        "parent_version_id": world.version_id(1),
        "validation_file": str(validation) if validation else None,
        "base_path": str(tmp_path / "base"),
        "base_default": False,
        "models_dir": str(tmp_path / "models"),
        "maintenance": {"retrain_run_id": run_id, "judge": None, "max_new_tokens": 16},
    }
    result = {
        "adapter_dir": str(folder),
        "sha256": sha256_file(folder / "adapter_model.safetensors"),
    }
    return make_job(db, world.owner, "train", payload, result=result)


def _train_succeeded(db: Database, job: Job) -> AdapterVersion:
    with db.session() as session:
        found = session.get(Job, job.id)
        assert found is not None
        return policy.train_succeeded(session, found)


def test_a_retrained_version_becomes_the_challenger_and_is_gated(
    db: Database, world: World, tmp_path: Path
) -> None:
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps({"messages": m}) + "\n" for m in TRAIN))
    run_id = _run(db, world, "training")
    version = _train_succeeded(
        db, _finished_training(db, world, tmp_path, run_id, validation=validation)
    )
    assert version.version == 3
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert (run.status, run.challenger_version_id) == ("evaluating", version.id)
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1, "challenger": 3}
        job = session.get(Job, run.eval_job_id)
        assert job is not None
        assert job.kind == "evaluate"
        assert job.payload["gate"] == {
            "retrain_run_id": run_id,
            "champion_id": world.version_id(1),
            "challenger_id": version.id,
        }
        assert job.payload["max_new_tokens"] == 16
        [suite] = job.payload["suites"]  # the held-out suite from the validation split
        assert suite["kind"] == "heldout"
        assert [c["expected"] for c in suite["cases"]] == ["480 yen.", "300 yen."]


def test_a_retrained_version_without_cases_to_gate_on_is_refused(
    db: Database, world: World, tmp_path: Path
) -> None:
    run_id = _run(db, world, "training")
    _train_succeeded(db, _finished_training(db, world, tmp_path, run_id, validation=None))
    with db.session() as session:
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert run.status == "refused"
        assert run.error == "the adapter has no evaluation cases to gate on"
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
        assert session.scalars(select(Job).where(Job.kind == "evaluate")).all() == []


def test_a_version_of_a_dismissed_run_is_only_recorded(
    db: Database, world: World, tmp_path: Path
) -> None:
    run_id = _run(db, world, "dismissed")
    version = _train_succeeded(db, _finished_training(db, world, tmp_path, run_id, validation=None))
    with db.session() as session:
        assert session.get(AdapterVersion, version.id) is not None
        run = session.get(RetrainRun, run_id)
        assert run is not None
        assert run.status == "dismissed"
        assert aliases.aliases_of(session, world.adapter_id) == {"champion": 1}
