"""Compute providers without processes: what a node may reach (only its own jobs, only the
worker API), what it is given (inputs by hash, never the held-out split or a server path),
how uploads refuse mistakes, and the replay check catching a forged checkpoint. Evaluation
work: offered only with the owner's consent and without a judge, rescored at once (an
inflated score is caught), spot-checked by regeneration (made-up answers are caught), and an
honest node's evaluation recorded like a local one and credited."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    EvalRun,
    Job,
    PointsEntry,
    ProviderNode,
    ProviderWork,
    RetrainRun,
    User,
)
from loraloop.errors import InvalidRequest
from loraloop.identity import accounts, api_keys
from loraloop.jobs import queue
from loraloop.ml import evaluation
from loraloop.ml.lora import LoraSettings
from loraloop.ml.training import TrainSpec, train
from loraloop.mlops import evaluate_job, policy
from loraloop.providers import eval_work, verify_eval_job, verify_job
from loraloop.providers import work as provider_work
from loraloop.storage import sha256_file
from loraloop.testing import make_tiny_adapter, make_tiny_model
from loraloop.web import i18n
from loraloop.worker.agent import local_payload
from tests.factories import (
    make_key,
    make_user,
    sign_in,
)
from tests.test_providers_integration import (
    OPTIONS,
    PRICES,
    WORDS,
    _adapter_with_suites,
    _conversations,
    _training_jobs,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


def _node(client: TestClient, token: str, name: str) -> tuple[dict[str, str], int]:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"name": name, "capabilities": {"cpu_count": 2, "memory_gb": 8, "gpus": []}}
    registered = client.post("/api/worker/register", headers=auth, json=body)
    assert registered.status_code == 200, registered.text
    assert registered.json()["trusted"] is False
    return auth, registered.json()["node_id"]


def test_a_node_reaches_only_its_own_job_and_only_the_worker_api(
    client: TestClient, db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    (job_id,) = _training_jobs(db, settings, tiny_base, owner, 1)
    alice, bob = make_user(db), make_user(db)
    a_auth, a_node = _node(
        client, make_key(db, alice, scopes=["provider"], rate_limit_per_minute=1000), "alice-box"
    )
    b_auth, b_node = _node(
        client, make_key(db, bob, scopes=["provider"], rate_limit_per_minute=1000), "bob-box"
    )
    claimed = client.post("/api/worker/claim", headers=a_auth, json={"node_id": a_node})
    assert claimed.status_code == 200, claimed.text
    job = claimed.json()
    assert job["id"] == job_id
    payload = job["payload"]
    assert "validation_file" not in payload  # the held-out split stays on the server
    assert str(settings.home) not in json.dumps(payload)  # no server paths at all
    assert payload["spec"]["keep_checkpoints"] is True
    assert set(payload["files"]) >= {"train_file", "base/config.json"}
    token = job["lease_token"]
    # the file is what its hash says
    got = client.get(
        f"/api/worker/jobs/{job_id}/inputs/train_file", headers={**a_auth, "X-Lease-Token": token}
    )
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == payload["files"]["train_file"]["sha256"]
    # Bob, even holding Alice's token, can do nothing with her job
    lease = {"lease_token": token}
    attempts = [
        ("POST", f"/api/worker/jobs/{job_id}/start", {"json": lease}),
        ("POST", f"/api/worker/jobs/{job_id}/heartbeat", {"json": lease}),
        ("POST", f"/api/worker/jobs/{job_id}/events", {"json": {**lease, "data": {"s": 1}}}),
        (
            "POST",
            f"/api/worker/jobs/{job_id}/complete",
            {"json": {**lease, "result": {"files": {}}}},
        ),
        ("POST", f"/api/worker/jobs/{job_id}/fail", {"json": {**lease, "error": "x"}}),
        (
            "GET",
            f"/api/worker/jobs/{job_id}/inputs/train_file",
            {"headers": {"X-Lease-Token": token}},
        ),
        (
            "GET",
            f"/api/worker/uploads/{job_id}/adapter_config.json",
            {"headers": {"X-Lease-Token": token}},
        ),
        (
            "PUT",
            f"/api/worker/uploads/{job_id}/adapter_config.json?offset=0",
            {"headers": {"X-Lease-Token": token}, "content": b"{}"},
        ),
    ]
    for method, path, kwargs in attempts:
        headers = {**b_auth, **kwargs.pop("headers", {})}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 409, f"{method} {path}: {response.status_code}"
        assert "not leased to any of your nodes" in response.json()["error"]["message"]
    # and Bob's node cannot take it over either: it is leased
    assert (
        client.post("/api/worker/claim", headers=b_auth, json={"node_id": b_node}).status_code
        == 204
    )
    assert (
        client.post("/api/worker/claim", headers=b_auth, json={"node_id": a_node}).status_code
        == 404
    )  # not his node
    # a provider key reaches nothing but the worker API
    for path in ("/api/adapters", "/api/jobs", "/api/keys", "/api/providers", "/v1/models"):
        refused = client.get(path, headers=a_auth)
        assert refused.status_code == 401, f"{path}: {refused.status_code}"
    assert (
        client.post(
            "/api/worker/claim", headers=a_auth, json={"worker_id": "pretend-trusted"}
        ).status_code
        == 400
    )
    manage = {"Authorization": f"Bearer {make_key(db, alice, scopes=['manage'])}"}
    assert (
        client.post("/api/worker/claim", headers=manage, json={"node_id": a_node}).status_code
        == 401
    )
    assert client.get("/api/providers", headers=manage).json()["nodes"][0]["id"] == a_node


def test_uploads_refuse_mistakes_and_resume(
    client: TestClient, db: Database, settings: Settings, tiny_base: Path
) -> None:
    owner = make_user(db)
    (job_id,) = _training_jobs(db, settings, tiny_base, owner, 1)
    auth, node = _node(
        client, make_key(db, make_user(db), scopes=["provider"], rate_limit_per_minute=1000), "box"
    )
    token = client.post("/api/worker/claim", headers=auth, json={"node_id": node}).json()[
        "lease_token"
    ]
    client.post(f"/api/worker/jobs/{job_id}/start", headers=auth, json={"lease_token": token})
    put = {**auth, "X-Lease-Token": token}
    url = f"/api/worker/uploads/{job_id}/adapter_config.json"
    assert client.put(f"{url}?offset=0", headers=put, content=b'{"r": ').json() == {"size": 6}
    behind = client.put(f"{url}?offset=0", headers=put, content=b"again")
    assert behind.status_code == 409
    assert "starts at 6" in behind.json()["error"]["message"]
    assert client.get(url, headers=put).json() == {"size": 6}  # resume from here
    assert client.put(f"{url}?offset=6", headers=put, content=b"4}").json() == {"size": 8}
    bad_name = client.put(
        f"/api/worker/uploads/{job_id}/model.bin?offset=0", headers=put, content=b"x"
    )
    assert bad_name.status_code == 400
    assert "adapter_model.safetensors" in bad_name.json()["error"]["message"]
    wrong = client.post(
        f"/api/worker/jobs/{job_id}/complete",
        headers=auth,
        json={
            "lease_token": token,
            "result": {
                "files": {"adapter_config.json": "0" * 64, "adapter_model.safetensors": "1" * 64}
            },
        },
    )
    assert wrong.status_code == 400
    message = wrong.json()["error"]["message"]
    assert "adapter_model.safetensors was not uploaded" in message
    assert "adapter_config.json: the upload's sha256 is not" in message


def test_provider_keys_have_that_scope_alone(db: Database) -> None:
    user = make_user(db)
    with db.session() as session, pytest.raises(InvalidRequest, match="'provider' scope only"):
        api_keys.create(session, user, name="mixed", scopes=["provider", "manage"])


def _run_with_trail(base: Path, folder: Path) -> tuple[Path, dict[str, Any]]:
    (folder / "train.jsonl").write_bytes(_conversations(32))
    (folder / "held.jsonl").write_bytes(_conversations(8, 100))
    options = {k: v for k, v in OPTIONS.items() if k != "lora"}
    spec = {**options, "keep_checkpoints": True}
    train(
        TrainSpec(
            base_path=base,
            train_file=folder / "train.jsonl",
            output_dir=folder / "run",
            lora=LoraSettings(**OPTIONS["lora"]),
            **spec,
        )
    )
    return folder / "run", {**spec, "lora": OPTIONS["lora"]}


def _verify(
    base: Path, folder: Path, run: Path, spec: dict[str, Any], start: int, end: int | None
) -> dict[str, Any]:
    return verify_job.run(
        {
            "base_path": str(base),
            "adapter_dir": str(run / "adapter"),
            "validation_file": str(folder / "held.jsonl"),
            "train_file": str(folder / "train.jsonl"),
            "spec": spec,
            "min_gain": 0.01,
            "replay": {
                "from": start,
                "to": end,
                "checkpoints": str(run / "checkpoints"),
                "tolerance": 0.01,
            },
        },
        lambda _e: None,
    )


def test_the_replay_catches_a_checkpoint_that_training_did_not_make(
    tiny_base: Path, tmp_path: Path
) -> None:
    run, spec = _run_with_trail(tiny_base, tmp_path)
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run / "checkpoints").iterdir())
    assert len(steps) >= 2
    honest = _verify(tiny_base, tmp_path, run, spec, steps[0], steps[1])
    assert honest["passed"], honest["reason"]
    assert honest["replay"]["distance"] < 1e-3
    to_end = _verify(tiny_base, tmp_path, run, spec, steps[-1], None)
    assert to_end["passed"], to_end["reason"]
    # forge the second checkpoint: weights a little off what the segment produces
    forged = run / "checkpoints" / f"step-{steps[1]:06d}" / "adapter.safetensors"
    weights = load_file(str(forged))
    save_file({k: v * 1.05 for k, v in weights.items()}, str(forged))
    caught = _verify(tiny_base, tmp_path, run, spec, steps[0], steps[1])
    assert not caught["passed"]
    assert "does not reproduce" in caught["reason"]
    assert caught["replay"]["distance"] > 0.01
    # and a segment replayed from the forged checkpoint does not reach the next one
    if len(steps) >= 3:
        onward = _verify(tiny_base, tmp_path, run, spec, steps[1], steps[2])
        assert not onward["passed"]
    shutil.rmtree(run)


# evaluation work -----------------------------------------------------------------------------


def _answer(
    client: TestClient, auth: dict[str, str], node: int, folder: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Claim as ``node``, download every input by hash and run the evaluation as the agent
    does (its payload rewritten to the downloads); the claimed job and the honest result."""
    claimed = client.post("/api/worker/claim", headers=auth, json={"node_id": node})
    assert claimed.status_code == 200, claimed.text
    job = claimed.json()
    token = job["lease_token"]
    for name, meta in job["payload"]["files"].items():
        got = client.get(
            f"/api/worker/jobs/{job['id']}/inputs/{name}",
            headers={**auth, "X-Lease-Token": token},
        )
        assert got.status_code == 200, f"{name}: {got.text}"
        assert hashlib.sha256(got.content).hexdigest() == meta["sha256"]
        (folder / "inputs" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "inputs" / name).write_bytes(got.content)
    local = local_payload("evaluate", job["payload"], folder, folder / "models")
    result = evaluate_job.run(local, lambda _e: None)
    started = client.post(
        f"/api/worker/jobs/{job['id']}/start", headers=auth, json={"lease_token": token}
    )
    assert started.status_code == 200
    return job, result


def _complete(
    client: TestClient, auth: dict[str, str], job: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    done = client.post(
        f"/api/worker/jobs/{job['id']}/complete",
        headers=auth,
        json={"lease_token": job["lease_token"], "result": result},
    )
    assert done.status_code == 200, done.text
    state: dict[str, Any] = done.json()
    return state


def _verify_queued(db: Database) -> list[dict[str, Any]]:
    """Run every queued ``verify_evaluate`` job as a trusted worker would; their verdicts."""
    verdicts: list[dict[str, Any]] = []
    while True:
        with db.session() as session:
            job = queue.claim(session, "verifier", lease_seconds=120, kinds_=["verify_evaluate"])
            if job is None:
                return verdicts
            assert job.lease_token is not None
            queue.start(session, job.id, job.lease_token)
            job_id, token, payload = job.id, job.lease_token, dict(job.payload)
        verdict = verify_eval_job.run(payload, lambda _e: None)
        with db.session() as session:
            queue.complete(session, job_id, token, verdict)
        verdicts.append(verdict)


def _forged(honest: dict[str, Any], payload: dict[str, Any], how: str) -> dict[str, Any]:
    """``inflate``: the honest answers with every score raised to 1; ``copy``: each case's
    expected answer as the answer, with the scores and means it truly earns (and the honest
    losses), so only regenerating the answers can tell."""
    forged = copy.deepcopy(honest)
    expected = {c["id"]: c for s in payload["suites"] for c in s["cases"]}
    for per_suite in forged["versions"].values():
        for scored in per_suite.values():
            for case in scored["cases"]:
                if how == "inflate":
                    case["score"] = 1.0
                else:
                    wanted = expected[case["id"]]
                    said = wanted["expected"]
                    case["answer"] = said if isinstance(said, str) else " ".join(said)
                    case["score"] = evaluation.score(wanted["metric"], case["answer"], said)
            scored["score"] = sum(c["score"] for c in scored["cases"]) / len(scored["cases"])
    return forged


def _work_of(db: Database, user: User) -> list[ProviderWork]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ProviderWork)
                .join(ProviderNode)
                .where(ProviderNode.owner_id == user.id)
                .order_by(ProviderWork.id)
            )
        )


def test_evaluation_work_is_rescored_spot_checked_recorded_and_credited(
    client: TestClient, db: Database, settings: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    owner = make_user(db)
    adapter_id = _adapter_with_suites(db, tiny_base, tmp_path, owner)
    manage = {"Authorization": f"Bearer {make_key(db, owner, scopes=['manage'])}"}
    started = client.post(
        f"/api/adapters/{adapter_id}/evaluations",
        headers=manage,
        json={"versions": [1, 2], "community_compute": True},
    )
    assert started.status_code == 201, started.text
    eval_id = started.json()["id"]
    inflater, copier, honest, outsider = (make_user(db) for _ in range(4))
    keys = {
        u.id: make_key(db, u, scopes=["provider"], rate_limit_per_minute=10_000)
        for u in (inflater, copier, honest, outsider)
    }
    nodes_of = {
        u.id: _node(client, keys[u.id], f"box-{u.id}") for u in (inflater, copier, honest, outsider)
    }

    # 1. a node that inflates its scores is caught at once by the server's rescoring
    auth, node = nodes_of[inflater.id]
    job, result = _answer(client, auth, node, tmp_path / "inflater")
    payload = job["payload"]
    assert job["id"] == eval_id
    assert job["kind"] == "evaluate"
    shown = json.dumps(payload)
    assert str(tmp_path) not in shown
    assert str(tiny_base) not in shown
    assert {"version/1/adapter_model.safetensors", "base/config.json"} <= set(payload["files"])
    assert {s["name"] for s in payload["suites"]} == {"prices", "words"}
    state = _complete(client, auth, job, _forged(result, payload, "inflate"))
    assert state["status"] == "queued"  # back in the queue, for another node
    (inflated,) = _work_of(db, inflater)
    assert inflated.status == "rejected"
    assert inflated.verification is not None
    assert "rescored" in inflated.verification["reason"]
    assert inflated.verification["rescore"]["disagreements"] > 0
    assert inflated.verify_job_id is None  # no trusted worker's time spent on it

    # 2. one that copies the expected answers (its scores true to them) fails the spot check
    auth, node = nodes_of[copier.id]
    claimed = client.post("/api/worker/claim", headers=auth, json={"node_id": node}).json()
    assert claimed["id"] == eval_id
    assert claimed["attempt"] == 2
    client.post(
        f"/api/worker/jobs/{eval_id}/start",
        headers=auth,
        json={"lease_token": claimed["lease_token"]},
    )
    _complete(client, auth, claimed, _forged(result, payload, "copy"))
    (caught,) = _verify_queued(db)
    assert not caught["passed"]
    assert "sampled answers differ" in caught["reason"]
    assert caught["agreed"] <= caught["sampled"] - caught["mismatches_allowed"] - 1
    (copied,) = _work_of(db, copier)
    assert copied.status == "rejected"
    print("copier:", caught["reason"])

    # 3. the honest node: nobody else can touch the job it holds; its work is accepted
    auth, node = nodes_of[honest.id]
    job, result = _answer(client, auth, node, tmp_path / "honest")
    assert job["attempt"] == 3
    other_auth, other_node = nodes_of[outsider.id]
    for path, body in (
        ("complete", {"lease_token": job["lease_token"], "result": result}),
        ("heartbeat", {"lease_token": job["lease_token"]}),
        ("fail", {"lease_token": job["lease_token"], "error": "x"}),
    ):
        refused = client.post(f"/api/worker/jobs/{eval_id}/{path}", headers=other_auth, json=body)
        assert refused.status_code == 409, path
    assert (
        client.get(
            f"/api/worker/jobs/{eval_id}/inputs/version/1/adapter_config.json",
            headers={**other_auth, "X-Lease-Token": job["lease_token"]},
        ).status_code
        == 409
    )
    _complete(client, auth, job, result)
    with db.session() as session:
        held = session.get(Job, eval_id)
        assert held is not None
        assert held.status == "running"
    assert (
        client.post(
            "/api/worker/claim", headers=other_auth, json={"node_id": other_node}
        ).status_code
        == 204
    )
    stale = client.post(
        f"/api/worker/jobs/{eval_id}/heartbeat",
        headers=auth,
        json={"lease_token": job["lease_token"]},
    )
    assert stale.status_code == 409  # the server holds the lease now
    (passed,) = _verify_queued(db)
    assert passed["passed"], passed["reason"]
    print("honest:", passed["reason"], {k: passed[k] for k in ("largest_loss_gap", "tokens")})
    assert passed["agreement"] == 1.0
    assert passed["sampled"] == 12  # 3 per version and suite
    assert passed["losses_checked"] == 6
    assert passed["losses_agreed"] == 6
    assert passed["largest_loss_gap"] < 1e-4

    with db.session() as session:
        done = session.get(Job, eval_id)
        assert done is not None
        assert done.status == "succeeded"
        runs = session.scalars(select(EvalRun).where(EvalRun.job_id == eval_id)).all()
        points = session.scalars(select(PointsEntry).where(PointsEntry.kind == "compute")).all()
        node_row = session.get(ProviderNode, nodes_of[honest.id][1])
        assert node_row is not None
        assert node_row.verified_ok == 1
        assert provider_work.on_probation(session, node_row)  # evaluations do not end it
    # recorded as a local evaluation is: one run per version and suite, the node's answers
    assert len(runs) == 4
    for run in runs:
        scored = result["versions"][str(run.version_id)][str(run.suite_id)]
        assert run.score == pytest.approx(scored["score"])
        assert [c["answer"] for c in run.cases] == [c["answer"] for c in scored["cases"]]
    (credit,) = points
    assert credit.user_id == honest.id
    assert credit.breakdown["work"] == "evaluation"
    assert credit.breakdown["measured_by"] == "verify_evaluate"
    assert credit.breakdown["tokens"] == passed["tokens"] > 2 * (len(PRICES) + len(WORDS))
    assert credit.breakdown["parameters"] == passed["params"]
    assert [w.status for w in _work_of(db, honest)] == ["accepted"]

    # the compute page shows the evaluation work and its numbers, in both languages
    sign_in(client, honest)
    for lang in ("en", "ja"):
        t = i18n.translator(lang)
        with db.session() as session:
            accounts.update_profile(session, honest, locale=lang)
        page = client.get("/providers", headers={"accept": "text/html"})
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert t("job.kind.evaluate") in text
        assert t("providers.work.agreement", agreed=12, sampled=12, share="100%") in text
        assert t("providers.credits.tokens_evaluated") in text


def _eval_payload(base: Path, adapter: Path, **changes: Any) -> dict[str, Any]:
    case = {"id": 1, "messages": [{"role": "user", "content": "hi"}], "expected": "yo"}
    payload = {
        "adapter_id": 1,
        "base_path": str(base),
        "base_default": False,
        "versions": [{"id": 1, "version": 1, "path": str(adapter)}],
        "suites": [
            {
                "id": 1,
                "name": "s",
                "kind": "owner",
                "metric": "rouge_l",
                "cases": [{**case, "metric": changes.pop("metric", "rouge_l")}],
            }
        ],
        "max_new_tokens": 4,
        "judge": None,
        "remote_ok": True,
    }
    return {**payload, **changes}


NOT_OFFERED = [
    ("the owner did not opt in", {"remote_ok": False}),
    ("a judge is configured", {"judge": {"base_url": "http://judge", "model": "m"}}),
    ("a plugin's metric", {"metric": "shouty"}),
]


@pytest.mark.parametrize(("name", "changes"), NOT_OFFERED, ids=[c[0] for c in NOT_OFFERED])
def test_an_evaluation_goes_to_providers_only_with_consent_and_without_a_judge(
    name: str,
    changes: dict[str, Any],
    client: TestClient,
    db: Database,
    tiny_base: Path,
    tmp_path: Path,
) -> None:
    adapter = make_tiny_adapter(tiny_base, tmp_path / "adapter")
    owner = make_user(db)
    with db.session() as session:
        job = queue.enqueue(
            session,
            owner,
            "evaluate",
            _eval_payload(tiny_base, adapter, **changes),
            submitted=False,
        )
        job_id = job.id
    auth, node = _node(
        client, make_key(db, make_user(db), scopes=["provider"], rate_limit_per_minute=1000), "n"
    )
    assert client.post("/api/worker/claim", headers=auth, json={"node_id": node}).status_code == 204
    with db.session() as session:  # a trusted worker still takes it
        taken = queue.claim(session, "trusted", lease_seconds=30)
        assert taken is not None
        assert taken.id == job_id
    # and the same job with consent and no judge is offered
    with db.session() as session:
        queue.enqueue(
            session, owner, "evaluate", _eval_payload(tiny_base, adapter), submitted=False
        )
    offered = client.post("/api/worker/claim", headers=auth, json={"node_id": node})
    assert offered.status_code == 200
    assert offered.json()["kind"] == "evaluate"


@pytest.mark.parametrize("remote_ok", [True, False])
def test_a_retrain_runs_evaluation_carries_its_training_runs_consent(
    remote_ok: bool, db: Database, tmp_path: Path
) -> None:
    from safetensors.numpy import save_file

    from tests.mlops_world import make_job, make_suite, make_world

    world = make_world(db, tmp_path)
    make_suite(db, world.adapter_id, cases=3)
    with db.session() as session:
        run = RetrainRun(
            adapter_id=world.adapter_id, trigger="manual", detail={}, status="training"
        )
        session.add(run)
        session.flush()
        run_id = run.id
    folder = tmp_path / "trained"
    folder.mkdir()
    save_file({"lora_A": np.zeros((2, 2), dtype=np.float32)}, folder / "adapter_model.safetensors")
    payload = {
        "adapter_id": world.adapter_id,
        "dataset": {"id": None},
        "spec": {},
        "base_path": str(tmp_path / "base"),
        "base_default": False,
        "models_dir": str(tmp_path / "models"),
        "maintenance": {"retrain_run_id": run_id, "judge": None, "max_new_tokens": 16},
        **({"remote_ok": True} if remote_ok else {}),
    }
    result = {
        "adapter_dir": str(folder),
        "sha256": sha256_file(folder / "adapter_model.safetensors"),
    }
    train_job = make_job(db, world.owner, "train", payload, result=result)
    with db.session() as session:
        found = session.get(Job, train_job.id)
        assert found is not None
        policy.train_succeeded(session, found)
        gated = session.get(RetrainRun, run_id)
        assert gated is not None
        assert gated.eval_job_id is not None
        evaluation_job = session.get(Job, gated.eval_job_id)
        assert evaluation_job is not None
        assert bool(evaluation_job.payload.get("remote_ok")) is remote_ok


QUOTAS = [
    ("small suites: three each", [12, 6], [3, 3]),
    ("a suite under three: all of it", [2, 40], [2, 4]),
    ("ten percent of a big suite", [100], [10]),
    ("capped at twenty in all, shared out", [500, 500, 6, 6], [7, 7, 3, 3]),
]


@pytest.mark.parametrize(("name", "sizes", "expected"), QUOTAS, ids=[q[0] for q in QUOTAS])
def test_the_sample_per_version_and_suite(name: str, sizes: list[int], expected: list[int]) -> None:
    assert eval_work._quotas(sizes) == expected
    assert sum(eval_work._quotas(sizes)) <= eval_work.SAMPLE_MAX


def _said(answer: str, expected: str, **changes: Any) -> dict[str, Any]:
    """A one-version, one-case result as ``evaluate_job`` reports it, then ``changes``."""
    score = evaluation.score("rouge_l", answer, expected)
    case = {"id": 1, "answer": answer, "score": score, "loss": 0.5}
    suite = {"cases": [case], "score": score, "loss": 0.5, "perplexity": math.exp(0.5)}
    result: dict[str, Any] = {"versions": {"1": {"1": suite}}}
    for path, value in changes.items():
        *where, key = path.split(".")
        target: Any = result
        for step in where:
            target = target[int(step)] if isinstance(target, list) else target[step]
        target[key] = value
    return result


RESCORED = [
    # name, the node's result, a phrase of the problem (None: agrees)
    ("an honest result", _said("Cup 1 costs 10 yen.", "Cup 1 costs 10 yen."), None),
    (
        "an inflated case score",
        _said("Tea.", "Cup 1 costs 10 yen.", **{"versions.1.1.cases.0.score": 1.0}),
        "the answer earns 0.0000",
    ),
    (
        "an inflated suite mean",
        _said("Tea.", "Cup 1 costs 10 yen.", **{"versions.1.1.score": 0.9}),
        "reported score 0.9",
    ),
    (
        "a perplexity its losses do not give",
        _said("Tea.", "Cup 1 costs 10 yen.", **{"versions.1.1.perplexity": 1.0}),
        "reported perplexity 1.0",
    ),
    (
        "a negative loss",
        _said("Tea.", "Cup 1 costs 10 yen.", **{"versions.1.1.cases.0.loss": -1.0}),
        "is not a loss",
    ),
    (
        "a case that is not the suite's",
        _said("Tea.", "Cup 1 costs 10 yen.", **{"versions.1.1.cases.0.id": 99}),
        "not the suite's 1, in order",
    ),
    ("a version missing", {"versions": {}}, "covers versions [], not ['1']"),
    (
        "a judge nobody asked",
        {**_said("Tea.", "Tea."), "judge": {"1": [1.0]}},
        "no judge was asked",
    ),
]


@pytest.mark.parametrize(("name", "result", "problem"), RESCORED, ids=[c[0] for c in RESCORED])
def test_the_server_rescores_every_reported_number(
    name: str, result: dict[str, Any], problem: str | None
) -> None:
    expected = "Tea." if name == "a judge nobody asked" else "Cup 1 costs 10 yen."
    payload = {
        "versions": [{"id": 1, "version": 1, "path": "/nowhere"}],
        "suites": [
            {
                "id": 1,
                "name": "prices",
                "cases": [
                    {
                        "id": 1,
                        "messages": [{"role": "user", "content": "Cup 1?"}],
                        "expected": expected,
                        "metric": "rouge_l",
                    }
                ],
            }
        ],
    }
    checked = eval_work.rescore(payload, result)
    if problem is None:
        assert checked.problems == []
        assert checked.cases == 1
        assert checked.result["versions"]["1"]["1"]["score"] == 1.0
    else:
        assert any(problem in p for p in checked.problems), checked.problems
