"""Compute providers without processes: what a node may reach (only its own jobs, only the
worker API), what it is given (inputs by hash, never the held-out split or a server path),
how uploads refuse mistakes, and the replay check catching a forged checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.errors import InvalidRequest
from loraloop.identity import api_keys
from loraloop.ml.lora import LoraSettings
from loraloop.ml.training import TrainSpec, train
from loraloop.providers import verify_job
from loraloop.testing import make_tiny_model
from tests.factories import make_key, make_user
from tests.test_providers_integration import OPTIONS, _conversations, _training_jobs

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
    import hashlib

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
