"""``/metrics``: scraped from the real app after real requests and parsed with the Prometheus
parser: route templates (never raw paths), latency, tokens per model kind, queue depth, job
durations, engine stats, and who may scrape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.jobs import queue
from loraloop.testing import StubEngine
from tests.factories import make_base_model, make_deployment, make_job, make_key, make_user

METRICS_TOKEN = "scrape-me-" + "x" * 24


@pytest.fixture
def stub_app(settings: Settings, db: Database) -> FastAPI:
    settings = settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    return create_app(settings, db, engine_factory=lambda path: StubEngine())


@pytest.fixture
def client(stub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(stub_app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


@pytest.fixture
def admin_key(db: Database) -> str:
    return make_key(db, make_user(db, role="admin"), scopes=["manage"])


def _scrape(client: TestClient, secret: str = METRICS_TOKEN) -> list[Sample]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``; it must exist."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0].value


def _absent(samples: list[Sample], name: str, **labels: str) -> bool:
    return not [s for s in samples if s.name == name and labels.items() <= s.labels.items()]


def test_requests_are_counted_by_route_template_and_status(
    client: TestClient, db: Database
) -> None:
    user = make_user(db)
    job = make_job(db, user, steps=1)
    missing = job.id + 1000
    for job_id in (job.id, missing):
        client.get(f"/api/jobs/{job_id}")  # 401 either way: no credentials
    client.get("/healthz")
    client.get("/no/such/page")
    client.get("/static/app.css")
    samples = _scrape(client)

    template = "/api/jobs/{job_id}"
    count = "loraloop_http_requests_total"
    assert _value(samples, count, method="GET", route=template, status="401") == 2
    assert _value(samples, count, method="GET", route="/healthz", status="200") == 1
    assert _value(samples, count, method="GET", route="unmatched", status="404") == 1
    assert _value(samples, count, method="GET", route="/static/{path}", status="200") == 1
    routes = {s.labels["route"] for s in samples if "route" in s.labels}
    assert not [r for r in routes if str(job.id) in r or str(missing) in r], routes
    latency = "loraloop_http_request_duration_seconds_count"
    assert _value(samples, latency, route=template) == 2
    assert _value(samples, "loraloop_http_request_duration_seconds_sum", route="/healthz") > 0
    assert _value(samples, "loraloop_build_info") == 1


def test_queue_depth_reflects_jobs_and_a_finished_job_is_timed(
    client: TestClient, db: Database
) -> None:
    user = make_user(db)
    for _ in range(3):
        make_job(db, user, steps=1)
    samples = _scrape(client)
    assert _value(samples, "loraloop_database_up") == 1
    assert _value(samples, "loraloop_jobs", kind="selftest", status="queued") == 3
    assert _value(samples, "loraloop_jobs", kind="selftest", status="running") == 0
    assert _value(samples, "loraloop_jobs", kind="train", status="queued") == 0  # zero-filled

    with db.session() as session:
        claimed = queue.claim(session, "w1", lease_seconds=30)
        assert claimed is not None
        assert claimed.lease_token is not None
        job_id, token = claimed.id, claimed.lease_token
    with db.session() as session:
        queue.start(session, job_id, token)
    samples = _scrape(client)
    assert _value(samples, "loraloop_jobs", kind="selftest", status="queued") == 2
    assert _value(samples, "loraloop_jobs", kind="selftest", status="running") == 1

    with db.session() as session:
        queue.complete(session, job_id, token, {"ok": True})
    with db.session() as session:  # a repeated completion is idempotent: counted once
        queue.complete(session, job_id, token, {"ok": True})
    samples = _scrape(client)
    labels = {"kind": "selftest", "outcome": "succeeded"}
    assert _value(samples, "loraloop_jobs_finished_total", **labels) == 1
    assert _value(samples, "loraloop_job_duration_seconds_count", **labels) == 1
    assert _value(samples, "loraloop_jobs", kind="selftest", status="running") == 0


def test_a_rolled_back_job_end_is_not_counted(client: TestClient, db: Database) -> None:
    user = make_user(db)
    job = make_job(db, user, steps=1)

    def cancel_then_fail() -> None:
        with db.session() as session:
            queue.cancel(session, user, job.id)
            raise RuntimeError("the transaction fails after the cancel")

    with pytest.raises(RuntimeError):
        cancel_then_fail()
    with db.session() as session:
        queue.cancel(session, user, job.id)
    samples = _scrape(client)
    labels = {"kind": "selftest", "outcome": "cancelled"}
    assert _value(samples, "loraloop_jobs_finished_total", **labels) == 1
    assert _absent(samples, "loraloop_job_duration_seconds_count", **labels)  # never ran


@pytest.mark.parametrize("stream", [False, True])
def test_completions_count_tokens_and_latency_by_model_kind(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path, stream: bool
) -> None:
    user = make_user(db)
    base = make_base_model(db, tmp_path / "stub-base")
    make_deployment(db, user, settings, name="plain", base_model_id=base.id)
    response = client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {make_key(db, user)}"},
        json={
            "model": "plain",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5,
            "stream": stream,
        },
    )
    assert response.status_code == 200, response.text
    samples = _scrape(client)
    answer = StubEngine().answer[:5]
    prompt = len("Hi") + 4  # the stub's prompt: a token per character, four per message
    assert _value(samples, "loraloop_prompt_tokens_total", kind="base") == prompt
    assert _value(samples, "loraloop_completion_tokens_total", kind="base") == len(answer)
    assert _absent(samples, "loraloop_completion_tokens_total", kind="adapter")
    done = {"kind": "base", "endpoint": "chat", "status": "ok"}
    assert _value(samples, "loraloop_completions_total", **done) == 1
    assert _value(samples, "loraloop_generation_duration_seconds_count", kind="base") == 1
    assert _value(samples, "loraloop_time_to_first_token_seconds_count", kind="base") == 1
    route = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    assert _value(samples, "loraloop_http_requests_total", **route) == 1
    # the engine is loaded now: its stats are read at scrape time
    assert _value(samples, "loraloop_engine_running", base="stub-base") == 0
    assert not [s for s in samples if "user" in s.labels or "key" in s.labels]


class _BusyEngine(StubEngine):
    def stats(self) -> dict[str, Any]:
        return {"running": 3, "waiting": 1, "steps": 10, "generated_tokens": 25, "device": "cpu"}


def test_engine_stats_are_read_at_scrape_time(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    app = create_app(
        settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)}),
        db,
        engine_factory=lambda path: _BusyEngine(),
    )
    with TestClient(app) as client:
        assert _absent(_scrape(client), "loraloop_engine_running")  # nothing loaded yet
        app.state.gateway.engines.get(tmp_path / "smol")
        samples = _scrape(client)
    assert _value(samples, "loraloop_engine_running", base="smol") == 3
    assert _value(samples, "loraloop_engine_waiting", base="smol") == 1
    assert _value(samples, "loraloop_engine_steps_total", base="smol") == 10
    assert _value(samples, "loraloop_engine_generated_tokens_total", base="smol") == 25
    assert _absent(samples, "loraloop_engine_device")


def test_an_admin_key_may_scrape(client: TestClient, admin_key: str) -> None:
    assert _value(_scrape(client, admin_key), "loraloop_database_up") == 1


# (who, how they ask, status)
REFUSED = [
    ("anonymous", None, 401),
    ("a wrong token", "Bearer not-the-metrics-token", 401),
    ("a member's key", "member", 404),
]


@pytest.mark.parametrize(("who", "credential", "status"), REFUSED, ids=[r[0] for r in REFUSED])
def test_others_may_not_scrape(
    client: TestClient, db: Database, who: str, credential: str | None, status: int
) -> None:
    if credential == "member":
        credential = "Bearer " + make_key(db, make_user(db), scopes=["manage"])
    headers = {"Authorization": credential} if credential else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status, (who, response.text)
    assert "loraloop_http_requests" not in response.text


def test_without_a_metrics_token_no_bearer_matches_it(
    settings: Settings, db: Database, admin_key: str
) -> None:
    """An empty ``metrics_token`` is no token: an empty bearer never reads the metrics."""
    with TestClient(create_app(settings, db)) as client:
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
        assert _value(_scrape(client, admin_key), "loraloop_database_up") == 1


def test_each_app_has_its_own_registry(settings: Settings, db: Database) -> None:
    first, second = create_app(settings, db), create_app(settings, db)
    assert first.state.metrics.registry is not second.state.metrics.registry
