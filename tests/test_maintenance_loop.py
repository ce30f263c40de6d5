"""The maintenance loop end to end on a tiny model, through the real pieces: the gateway
(official ``openai`` client over HTTP), feedback from ``/v1/feedback``, MiniLM drift checks,
training and evaluation jobs run by the local worker in child processes, the gate.

Drifted traffic plus corrections → alarm → retraining job → challenger → gate → promotion →
the deployment answers with the new version, with no manual step (policy ``auto``). A worse
challenger is refused and never serves; a rollback moves traffic on the next request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from loraloop.api.app import create_app
from loraloop.catalog import adapters, aliases
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    Adapter,
    AdapterVersion,
    BaseModel,
    Dataset,
    DatasetVersion,
    DriftReport,
    GateDecision,
    Job,
    RetrainRun,
    Trace,
    TrainingCandidate,
    User,
)
from loraloop.jobs.runner import LocalWorker
from loraloop.mlops import loop, policy
from loraloop.storage import Storage
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.conftest import serve
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_key,
    make_user,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

ITEMS = ["latte", "mocha", "scone", "tea", "cake", "toast", "bagel", "juice"]
CATERING = "Call 075."
OPTIONS = {
    "epochs": 40.0,
    "learning_rate": 5e-3,
    "max_length": 96,
    "rows_per_batch": 4,
    "precision": "fp32",
    "eval_every": 1000,
    "checkpoint_every": 1000,
    "lora": {"rank": 8, "alpha": 16},
}


def _price(i: int) -> list[dict[str, str]]:
    item = ITEMS[i % len(ITEMS)]
    return [
        {"role": "user", "content": f"How much is the {item} {i}?"},
        {"role": "assistant", "content": f"{100 + i * 10} yen."},
    ]


def _catering_question(n: int) -> str:
    return f"Can you cater a party of {n} people?"


def _jsonl(rows: list[list[dict[str, str]]]) -> bytes:
    return "".join(json.dumps({"messages": m}) + "\n" for m in rows).encode()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loop-models")
    base = make_tiny_model(root / "base", hidden=64)
    return {"base": base, "random": make_tiny_adapter(base, root / "random", seed=7)}


@pytest.fixture
def loop_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"drift_window": 100, "drift_every": 50})


@pytest.fixture
def loop_app(loop_settings: Settings, db: Database) -> FastAPI:
    return create_app(loop_settings, db)


class Owner:
    """The adapter owner's view: their API key, the server, the worker, the clock."""

    def __init__(
        self, db: Database, settings: Settings, url: str, user: User, adapter_id: int
    ) -> None:
        self.db, self.settings, self.url, self.user = db, settings, url, user
        self.adapter_id = adapter_id
        self.secret = make_key(
            db, user, rate_limit_per_minute=10_000, scopes=["inference:*", "manage"]
        )
        self.sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=self.secret, max_retries=0)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.secret}"})
        self.worker = LocalWorker(db, lease_seconds=120)
        self.storage = Storage(settings.home / "artifacts")

    def close(self) -> None:
        self.sdk.close()
        self.http.close()

    def ask(self, text: str) -> tuple[str, str]:
        """(completion id, answer) from the deployment."""
        reply = self.sdk.chat.completions.create(
            model="cafe",
            messages=[{"role": "user", "content": text}],
            max_tokens=12,
            temperature=0,
        )
        return reply.id, reply.choices[0].message.content or ""

    def tick(self) -> loop.Tick:
        with self.db.session() as session:
            return loop.tick(session, self.settings, self.storage)

    def drain(self) -> list[Job]:
        """Run every queued job (each in its child process); the jobs that ran, in order."""
        with self.db.session() as session:
            done_before = set(session.scalars(select(Job.id).where(Job.finished_at.is_not(None))))
        while self.worker.run_once():
            pass
        with self.db.session() as session:
            finished = select(Job).where(Job.finished_at.is_not(None)).order_by(Job.id)
            return [j for j in session.scalars(finished) if j.id not in done_before]

    def served_version(self, completion_id: str) -> int:
        with self.db.session() as session:
            trace = session.get(Trace, completion_id)
            assert trace is not None
            version = session.get(AdapterVersion, trace.adapter_version_id)
            assert version is not None
            return version.version

    def champion(self) -> int:
        with self.db.session() as session:
            return aliases.aliases_of(session, self.adapter_id)["champion"]


@pytest.fixture
def owner(
    db: Database, loop_settings: Settings, loop_app: FastAPI, tiny: dict[str, Path]
) -> Iterator[Owner]:
    user = make_user(db)
    storage = Storage(loop_settings.home / "artifacts")
    base = make_base_model(db, tiny["base"], name="tiny")
    with db.session() as session:
        dataset = Dataset(owner_id=user.id, name="cafe")
        session.add(dataset)
        session.flush()
        train = storage.put_bytes(_jsonl([_price(i) for i in range(24)]))
        validation = storage.put_bytes(_jsonl([_price(i) for i in range(100, 108)]))
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                format="messages",
                raw_sha256=train,
                content_hash=train,
                train_sha256=train,
                validation_sha256=validation,
                examples=32,
                train_examples=24,
                validation_examples=8,
                duplicates_removed=0,
                report={},
            )
        )
        adapter = adapters.create(session, user, name="cafe-bot", base_model_id=base.id)
        policy.update(session, user, adapter.id, mode="auto", tolerance=0.1)
        adapters.start_training(
            session,
            loop_settings,
            storage,
            user,
            adapter.id,
            dataset_id=dataset.id,
            preset="quick",
            options=OPTIONS,
        )
        adapter_id = adapter.id
    with serve(loop_app) as url:
        who = Owner(db, loop_settings, url, user, adapter_id)
        assert [j.kind for j in who.drain()] == ["train"]
        make_deployment(
            db, user, loop_settings, name="cafe", adapter_id=adapter_id, alias="champion"
        )
        try:
            yield who
        finally:
            who.close()


def test_drift_and_corrections_retrain_gate_and_promote_unattended(owner: Owner) -> None:
    # 100 requests like the training data: the first check sees no drift
    for i in range(100):
        owner.ask(f"How much is the {ITEMS[i % 8]} {200 + i}?")
    assert len(owner.tick().drift_checks) == 1
    assert [j.status for j in owner.drain()] == ["succeeded"]
    with owner.db.session() as session:
        first = session.scalars(select(DriftReport)).one()
        assert first.alarm is None, first.input
        assert first.requests == 100
    assert owner.tick().drift_checks == []  # nothing new to check

    # then users ask about catering, which the model never saw; the owner corrects 40 answers
    for n in range(100):
        completion, _ = owner.ask(_catering_question(n + 2))
        if n < 40:
            given = owner.http.post(
                "/v1/feedback",
                json={"trace_id": completion, "rating": -1, "correction": CATERING},
            )
            assert given.status_code == 201, given.text
    with owner.db.session() as session:
        statuses = {c.status for c in session.scalars(select(TrainingCandidate))}
    assert statuses == {"accepted"}  # the owner's own corrections are trusted by default

    assert len(owner.tick().drift_checks) == 1
    owner.drain()
    with owner.db.session() as session:
        alarm = session.scalars(select(DriftReport).order_by(DriftReport.id.desc())).first()
        assert alarm is not None
        assert alarm.alarm == "drift", alarm.input
        assert alarm.input["ood_share"] > 0.3
        new_needs = " ".join(t for c in alarm.input["clusters"] for t in c["examples"])
        assert "cater" in new_needs  # the owner sees *what* users now ask
        run = session.scalars(select(RetrainRun)).one()
        assert (run.trigger, run.status) == ("drift", "approved")

    started = owner.tick()
    assert started.started == [run.id]
    kinds = [j.kind for j in owner.drain()]
    assert kinds[:2] == ["train", "evaluate"], kinds
    with owner.db.session() as session:
        run = session.get(RetrainRun, run.id)
        assert run is not None
        decision = session.get(GateDecision, run.decision_id)
        assert decision is not None
        assert (run.status, decision.outcome) == ("promoted", "promote"), decision.reason
        pooled = decision.numbers["pooled"]
        assert pooled["delta"] >= 0.02
        assert pooled["low"] > 0
        assert run.detail["added_examples"] == 30  # 40 corrections, every 4th held out

    assert owner.champion() == 2
    completion, answer = owner.ask(_catering_question(77))
    assert owner.served_version(completion) == 2
    assert answer == CATERING


def test_a_worse_challenger_is_refused_and_never_serves(
    owner: Owner, tiny: dict[str, Path]
) -> None:
    with owner.db.session() as session:
        adapter = adapters.get_any(session, owner.adapter_id)
        base_id = adapter.base_model_id
    # an owner case suite: the champion answers prices in yen, a random adapter does not
    created = owner.http.post(
        f"/api/adapters/{owner.adapter_id}/suites", json={"name": "prices", "metric": "contains"}
    )
    assert created.status_code == 201, created.text
    cases = [
        {"prompt": f"How much is the {ITEMS[i % 8]} {i}?", "expected": "yen"} for i in range(30)
    ]
    added = owner.http.post(f"/api/suites/{created.json()['id']}/cases", json={"cases": cases})
    assert added.status_code == 201, added.text

    with owner.db.session() as session:
        base = session.get(BaseModel, base_id)
        row = session.get(Adapter, owner.adapter_id)
        assert base is not None
        assert row is not None
    worse = make_adapter_version(owner.db, owner.user, base, tiny["random"], adapter=row)
    challenged = owner.http.post(
        f"/api/adapters/{owner.adapter_id}/challenge", json={"version": worse.version}
    )
    assert challenged.status_code == 201, challenged.text
    # while it is evaluated, the deployment keeps answering with the champion
    completion, _ = owner.ask("How much is the tea 3?")
    assert owner.served_version(completion) == 1
    owner.drain()
    decisions = owner.http.get(f"/api/adapters/{owner.adapter_id}/decisions").json()
    assert decisions[0]["outcome"] == "refuse", decisions[0]
    assert "prices" in json.dumps(decisions[0]["numbers"])
    with owner.db.session() as session:
        named = aliases.aliases_of(session, owner.adapter_id)
    assert named == {"champion": 1}
    for i in range(5):
        completion, _ = owner.ask(f"How much is the cake {i}?")
        assert owner.served_version(completion) == 1


def test_rollback_returns_traffic_on_the_next_request(owner: Owner) -> None:
    with owner.db.session() as session:
        nothing = session.scalar(select(RetrainRun))
    assert nothing is None
    # a second version through the owner's retrain button (no drift needed)
    started = owner.http.post(f"/api/adapters/{owner.adapter_id}/retrain")
    assert started.status_code == 201, started.text
    owner.tick()
    owner.drain()
    runs = owner.http.get(f"/api/adapters/{owner.adapter_id}/retrain-runs").json()
    # the same data and seed again cannot beat the champion: refused, v1 keeps serving
    assert runs[0]["status"] == "refused", runs[0]
    assert owner.champion() == 1
    # the owner overrides the gate; the override is a decision of its own, with their name
    override = owner.http.post(
        f"/api/decisions/{runs[0]['decision_id']}/override",
        json={"promote": True, "reason": "I checked the answers by hand"},
    )
    assert override.status_code == 201, override.text
    assert override.json()["actor_id"] == owner.user.id
    assert override.json()["override_of"] == runs[0]["decision_id"]
    assert owner.champion() == 2
    completion, _ = owner.ask("How much is the latte 1?")
    assert owner.served_version(completion) == 2

    back = owner.http.post(f"/api/adapters/{owner.adapter_id}/rollback", json={})
    assert back.status_code == 200, back.text
    assert back.json() == {"champion": 1}
    completion, _ = owner.ask("How much is the latte 1?")
    assert owner.served_version(completion) == 1
    history = owner.http.get(f"/api/adapters/{owner.adapter_id}/quality").json()["history"]
    newest = {k: history[0][k] for k in ("alias", "from", "to", "cause")}
    assert newest == {"alias": "champion", "from": 2, "to": 1, "cause": "rollback"}
