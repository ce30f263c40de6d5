"""Deployments over REST, external upstreams (a real fake OpenAI server), the playground's
chat, and the promise that no key or upstream credential ever shows up anywhere."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Deployment, Trace
from loraloop.identity.tokens import digest
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.conftest import serve
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_key,
    make_user,
    sign_in,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

UPSTREAM_KEY = "up-secret-4f1d2c9b"


def _fake_upstream() -> FastAPI:
    """An OpenAI-compatible server that insists on its key and streams three words."""
    fake = FastAPI()
    seen: list[dict[str, Any]] = []
    fake.state.seen = seen

    @fake.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @fake.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        if request.headers.get("authorization") != f"Bearer {UPSTREAM_KEY}":
            return JSONResponse({"error": {"message": "bad upstream key"}}, status_code=401)
        body = await request.json()
        seen.append(body)

        async def events() -> AsyncIterator[str]:
            for word in ("Upstream ", "says ", "hi"):
                chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(last)}\n\n"
            usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return fake


@pytest.fixture
def upstream() -> Iterator[tuple[str, FastAPI]]:
    fake = _fake_upstream()
    with serve(fake) as url:
        yield url, fake


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy-models")
    base = make_tiny_model(root / "base", hidden=32)
    return {"base": base, "v1": make_tiny_adapter(base, root / "v1")}


def test_create_list_pause_resume_delete(
    client: TestClient, db: Database, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    sign_in(client, user)

    pinned = client.post(
        "/api/deployments", json={"name": "kumo-v1", "adapter_id": version.adapter_id, "version": 1}
    )
    assert pinned.status_code == 201, pinned.text
    assert pinned.json()["target"] == "kumo@v1"
    follows = client.post(
        "/api/deployments",
        json={"name": "kumo", "adapter_id": version.adapter_id, "alias": "champion"},
    ).json()
    assert follows["target"] == "kumo@champion"
    bare = client.post("/api/deployments", json={"name": "bare", "base_model_id": base.id}).json()
    assert bare["kind"] == "base"
    assert [d["name"] for d in client.get("/api/deployments").json()] == ["kumo-v1", "kumo", "bare"]

    assert client.post(f"/api/deployments/{bare['id']}/pause").json()["status"] == "paused"
    assert client.post(f"/api/deployments/{bare['id']}/resume").json()["status"] == "active"
    assert client.delete(f"/api/deployments/{bare['id']}").status_code == 204
    assert client.get(f"/api/deployments/{bare['id']}").status_code == 404
    again = client.post("/api/deployments", json={"name": "kumo", "base_model_id": base.id})
    assert again.status_code == 409


BAD_DEPLOYMENTS = [
    ({"name": "Kumo Coffee", "base_model_id": 1}, "lowercase letters"),
    ({"name": "x"}, "exactly one target"),
    ({"name": "x", "base_model_id": 1, "upstream_url": "http://h/v1"}, "exactly one target"),
    ({"name": "x", "adapter_id": 1}, "either version or alias"),
    ({"name": "x", "upstream_url": "ftp://host/v1", "upstream_model": "m"}, "http(s) URL"),
    ({"name": "x", "upstream_url": "http://host/v1"}, "upstream_model is required"),
    ({"name": "x", "base_model_id": 1, "alias": "champion"}, "need adapter_id"),
]


@pytest.mark.parametrize(("body", "says"), BAD_DEPLOYMENTS)
def test_bad_deployments_say_what_is_wrong(
    client: TestClient, db: Database, body: dict[str, Any], says: str
) -> None:
    sign_in(client, make_user(db))
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The fake upstreams listen on 127.0.0.1: this operator allows private upstreams."""
    return settings.model_copy(update={"egress_allow_private": True})


def test_an_upstream_deployment_proxies_and_never_shows_its_key(
    client: TestClient,
    db: Database,
    live_server: str,
    upstream: tuple[str, FastAPI],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    url, fake = upstream
    user = make_user(db)
    sign_in(client, user)
    created = client.post(
        "/api/deployments",
        json={
            "name": "gpu",
            "upstream_url": f"{url}/v1",
            "upstream_model": "kumo-lora",
            "upstream_key": UPSTREAM_KEY,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["has_upstream_key"] is True
    secret = make_key(db, user)
    api = openai.OpenAI(base_url=f"{live_server}/v1", api_key=secret, max_retries=0)
    request.addfinalizer(api.close)

    whole = api.chat.completions.create(model="gpu", messages=[{"role": "user", "content": "hi"}])
    assert whole.choices[0].message.content == "Upstream says hi"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == 11
    assert whole.model == "gpu"
    streamed = api.chat.completions.create(
        model="gpu", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "Upstream says hi"
    )
    assert fake.state.seen[0]["model"] == "kumo-lora"
    wrong = openai.OpenAI(base_url=f"{live_server}/v1", api_key=secret + "x", max_retries=0)
    request.addfinalizer(wrong.close)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()

    # the credential is stored sealed and appears nowhere: bodies, traces, logs, output
    with db.session() as session:
        stored = session.scalar(select(Deployment.upstream_key))
        traces = [json.dumps(t.request) + t.response for t in session.scalars(select(Trace))]
    assert stored is not None
    assert UPSTREAM_KEY not in stored
    listed = client.get("/api/deployments").text
    out, err = capfd.readouterr()
    everything = [listed, created.text, *traces, caplog.text, out, err]
    for needle in (UPSTREAM_KEY, secret, digest(secret)):
        assert not any(needle in haystack for haystack in everything)


def test_a_failing_upstream_is_a_502_that_names_the_upstream(
    client: TestClient,
    db: Database,
    live_server: str,
    upstream: tuple[str, FastAPI],
    request: pytest.FixtureRequest,
) -> None:
    url, _fake = upstream
    user = make_user(db)
    sign_in(client, user)
    client.post(
        "/api/deployments",
        json={
            "name": "gpu",
            "upstream_url": f"{url}/v1",
            "upstream_model": "m",
            "upstream_key": "wrong",
        },
    )
    api = openai.OpenAI(base_url=f"{live_server}/v1", api_key=make_key(db, user), max_retries=0)
    request.addfinalizer(api.close)
    with pytest.raises(openai.APIStatusError) as raised:
        api.chat.completions.create(model="gpu", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert "answered 401: bad upstream key" in raised.value.message
    assert "wrong" not in raised.value.message


def test_playground_streams_from_any_visible_version(
    client: TestClient, db: Database, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    sign_in(client, user)
    body = {
        "adapter_id": version.adapter_id,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "temperature": 0,
    }
    with client.stream("POST", "/api/playground/chat", json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["model"] == "kumo@v1"
    with db.session() as session:
        trace = session.scalar(select(Trace))
        assert trace is not None
        assert trace.source == "playground"
        assert trace.key_id is None

    stranger = TestClient(client.app, base_url="http://127.0.0.1:8000")
    sign_in(stranger, make_user(db))
    assert stranger.post("/api/playground/chat", json=body).status_code == 404
    assert (
        client.post(
            "/api/playground/chat", json=body, headers={"X-CSRF-Token": "forged"}
        ).status_code
        == 403
    )


def test_keys_carry_token_limits(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    created = client.post(
        "/api/keys", json={"name": "metered", "tokens_per_minute": 1000, "token_budget": 50_000}
    ).json()
    assert (created["tokens_per_minute"], created["token_budget"], created["tokens_spent"]) == (
        1000,
        50_000,
        0,
    )
    refused = client.post("/api/keys", json={"name": "bad", "token_budget": 0})
    assert refused.status_code == 400
    assert "token_budget" in refused.json()["error"]["message"]


def test_aliases_move_only_on_your_own_adapters(
    client: TestClient, db: Database, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    first = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    sign_in(client, user)
    assert client.get(f"/api/adapters/{first.adapter_id}/aliases").json() == [
        {"adapter_id": first.adapter_id, "alias": "champion", "version": 1}
    ]
    moved = client.put(f"/api/adapters/{first.adapter_id}/aliases/challenger", json={"version": 1})
    assert moved.status_code == 200
    wrong = client.put(f"/api/adapters/{first.adapter_id}/aliases/king", json={"version": 1})
    assert wrong.status_code == 400
    missing = client.put(f"/api/adapters/{first.adapter_id}/aliases/champion", json={"version": 9})
    assert missing.status_code == 404
    with db.session() as session:
        count = session.execute(text("SELECT count(*) FROM adapter_aliases")).scalar()
    assert count == 2


def test_a_version_downloads_as_a_peft_zip(
    client: TestClient, db: Database, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    sign_in(client, user)
    response = client.get(f"/api/adapters/{version.adapter_id}/versions/1/download")
    assert response.status_code == 200
    assert 'filename="kumo-v1.zip"' in response.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert "kumo-v1/adapter_model.safetensors" in names
    assert "kumo-v1/adapter_config.json" in names
