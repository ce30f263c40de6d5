"""The OpenAI-compatible gateway, driven by the official ``openai`` client over real HTTP
(uvicorn) against the real engine on a tiny model: chat, streams, completions, errors,
champion moves, budgets, abandoned streams, traces."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from loraloop.catalog import aliases
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, ApiKey, BaseModel, Trace, UsageDaily, UsageEvent, User
from loraloop.gateway import deployments
from loraloop.testing import make_tiny_adapter, make_tiny_model
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

HELLO = [{"role": "user", "content": "Hello, Kumo Coffee!"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gateway-models")
    base = make_tiny_model(root / "base", hidden=32)
    return {
        "base": base,
        "v1": make_tiny_adapter(base, root / "v1", seed=1),
        "v2": make_tiny_adapter(base, root / "v2", seed=2, targets="all-linear"),
    }


@dataclass
class World:
    url: str
    user: User
    secret: str
    deployment: str
    adapter_id: int
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, secret: str | None = None, **options: object) -> openai.OpenAI:
        """An SDK client, closed when the test ends (open sockets would warn)."""
        made = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=secret or self.secret, max_retries=0, **options
        )
        self.clients.append(made)
        return made


@pytest.fixture
def world(
    db: Database, settings: Settings, live_server: str, tiny: dict[str, Path]
) -> Iterator[World]:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    make_deployment(
        db, user, settings, name="kumo", adapter_id=version.adapter_id, alias="champion"
    )
    return World(live_server, user, make_key(db, user), "kumo", version.adapter_id)


def test_models_list_shows_the_deployments_the_key_may_use(world: World) -> None:
    models = world.client().models.list()
    assert [m.id for m in models.data] == ["kumo"]
    assert world.client().models.retrieve("kumo").id == "kumo"


def test_chat_non_streaming_and_streaming_agree(world: World) -> None:
    client = world.client()
    whole = client.chat.completions.create(
        model="kumo", messages=HELLO, max_tokens=12, temperature=0
    )
    assert whole.object == "chat.completion"
    assert whole.id.startswith("chatcmpl-")
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 12
    assert whole.choices[0].finish_reason == "length"

    chunks = list(
        client.chat.completions.create(
            model="kumo",
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert {c.id for c in chunks} == {chunks[0].id}


def test_completions_and_stop_sequences(world: World) -> None:
    client = world.client()
    plain = client.completions.create(model="kumo", prompt="Kumo", max_tokens=10, temperature=0)
    assert plain.object == "text_completion"
    text = plain.choices[0].text
    assert len(text) > 2
    stop = text[2:4]
    stopped = client.completions.create(
        model="kumo", prompt="Kumo", max_tokens=10, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(stop)]


def test_seeded_sampling_is_reproducible(world: World) -> None:
    client = world.client()

    def sample(seed: int) -> str:
        answer = client.chat.completions.create(
            model="kumo", messages=HELLO, max_tokens=16, temperature=1.0, seed=seed
        )
        return answer.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


ERRORS = [
    (
        "bad key",
        {"secret": "ll_nothere_xxxxxxxx"},
        {},
        openai.AuthenticationError,
        "invalid_api_key",
    ),
    ("unknown model", {}, {"model": "nope"}, openai.NotFoundError, "model_not_found"),
    ("bad temperature", {}, {"temperature": 5}, openai.BadRequestError, "invalid_request"),
    ("too many stops", {}, {"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, None),
    ("n > 1", {}, {"n": 2}, openai.BadRequestError, None),
    (
        "context",
        {},
        {"max_tokens": 30_000},
        openai.BadRequestError,
        "context_length_exceeded",
    ),
]


@pytest.mark.parametrize(
    ("case", "client_options", "call", "error", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_errors_use_the_sdks_exception_types(
    world: World,
    case: str,
    client_options: dict[str, str],
    call: dict[str, object],
    error: type[Exception],
    code: str | None,
) -> None:
    request = {"model": "kumo", "messages": HELLO, "max_tokens": 4, **call}
    with pytest.raises(error) as raised:
        world.client(client_options.get("secret")).chat.completions.create(**request)  # type: ignore[call-overload]
    assert isinstance(raised.value, openai.APIStatusError)
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"]
    if code:
        assert body["code"] == code


def test_rate_limit_is_a_429_with_retry_after(world: World, db: Database) -> None:
    secret = make_key(db, world.user, rate_limit_per_minute=1)
    client = world.client(secret)
    client.chat.completions.create(model="kumo", messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="kumo", messages=HELLO, max_tokens=2)
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_a_key_scoped_to_one_deployment_sees_only_that_one(
    world: World, db: Database, settings: Settings
) -> None:
    make_deployment(db, world.user, settings, name="other", adapter_id=world.adapter_id, version=1)
    scoped = world.client(make_key(db, world.user, scopes=["inference:other"]))
    assert [m.id for m in scoped.models.list().data] == ["other"]
    with pytest.raises(openai.NotFoundError):
        scoped.chat.completions.create(model="kumo", messages=HELLO, max_tokens=2)
    assert scoped.chat.completions.create(model="other", messages=HELLO, max_tokens=2).choices


def test_another_users_key_cannot_reach_my_deployment(world: World, db: Database) -> None:
    stranger = world.client(make_key(db, make_user(db)))
    assert stranger.models.list().data == []
    with pytest.raises(openai.NotFoundError):
        stranger.chat.completions.create(model="kumo", messages=HELLO, max_tokens=2)


def test_promoting_a_version_moves_traffic_but_not_running_streams(
    world: World, db: Database, tiny: dict[str, Path]
) -> None:
    with db.session() as session:
        base = session.scalar(select(BaseModel))
        adapter = session.get(Adapter, world.adapter_id)
    assert base is not None
    v2 = make_adapter_version(db, world.user, base, tiny["v2"], adapter=adapter)
    client = world.client()
    before = client.chat.completions.create(model="kumo", messages=HELLO, max_tokens=4)
    running = iter(
        client.chat.completions.create(model="kumo", messages=HELLO, max_tokens=40, stream=True)
    )
    first = next(running)
    with db.session() as session:
        aliases.set_alias(session, world.user, world.adapter_id, "champion", v2.version)
    after = client.chat.completions.create(model="kumo", messages=HELLO, max_tokens=4)
    rest = list(running)

    assert before.system_fingerprint != after.system_fingerprint
    assert after.system_fingerprint == f"lora-{v2.sha256[:12]}"
    assert {c.system_fingerprint for c in [first, *rest]} == {before.system_fingerprint}
    with db.session() as session:
        versions = [
            t.adapter_version_id for t in session.scalars(select(Trace).order_by(Trace.created_at))
        ]
    assert v2.id in versions
    assert versions[0] != v2.id


def test_a_budget_is_never_overshot_by_concurrent_requests(world: World, db: Database) -> None:
    max_tokens = 8
    probe = world.client().chat.completions.create(
        model="kumo", messages=HELLO, max_tokens=max_tokens
    )
    assert probe.usage is not None
    per_request = probe.usage.prompt_tokens + max_tokens
    secret = make_key(db, world.user, token_budget=5 * per_request, rate_limit_per_minute=1000)
    outcomes: list[str] = []

    def call() -> None:
        try:
            world.client(secret).chat.completions.create(
                model="kumo", messages=HELLO, max_tokens=max_tokens
            )
            outcomes.append("ok")
        except openai.RateLimitError as exc:
            outcomes.append(exc.body["code"] if isinstance(exc.body, dict) else "?")

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 20
    assert 1 <= outcomes.count("ok") <= 5
    assert set(outcomes) <= {"ok", "insufficient_quota"}
    with db.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.token_budget.is_not(None)))
        assert key is not None
        assert key.tokens_reserved == 0
        assert 0 < key.tokens_spent <= key.token_budget


def test_an_abandoned_stream_is_still_metered_and_frees_its_slot(
    world: World, db: Database, app: FastAPI
) -> None:
    secret = make_key(db, world.user, name="budgeted", token_budget=100_000)
    stream = world.client(secret).chat.completions.create(
        model="kumo", messages=HELLO, max_tokens=200, temperature=0, stream=True
    )
    for index, _chunk in enumerate(stream):
        if index == 3:
            break
    stream.close()
    event = _wait_for(db, select(UsageEvent).where(UsageEvent.status == "abandoned"))
    assert 0 < event.completion_tokens < 200
    with db.session() as session:
        trace = session.scalar(select(Trace).where(Trace.status == "abandoned"))
        assert trace is not None
        assert trace.completion_tokens == event.completion_tokens
        key = session.scalar(select(ApiKey).where(ApiKey.name == "budgeted"))
        assert key is not None
        assert key.tokens_reserved == 0
        assert key.tokens_spent == event.prompt_tokens + event.completion_tokens
    (engine,) = [app.state.gateway.engines.get(p) for p in app.state.gateway.engines.loaded()]
    assert engine.stats()["running"] == 0


def _wait_for(db: Database, query: Any, seconds: float = 10) -> Any:
    """The first row of ``query`` once it exists (the server writes after the client left)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.session() as session:
            row = session.scalar(query)
        if row is not None:
            return row
        time.sleep(0.05)
    pytest.fail(f"no row for {query} within {seconds} s")


def test_traces_and_daily_usage_record_each_call(world: World, db: Database) -> None:
    answer = world.client().chat.completions.create(model="kumo", messages=HELLO, max_tokens=5)
    with db.session() as session:
        trace = session.get(Trace, answer.id)
        assert trace is not None
        assert trace.model == "kumo"
        assert trace.request["messages"] == HELLO
        assert trace.response == answer.choices[0].message.content
        assert trace.completion_tokens == 5
        assert trace.adapter_version_id is not None
        assert trace.latency_ms >= 0
        day = session.scalar(select(func.sum(UsageDaily.completion_tokens)))
        assert day == 5


def test_paused_deployment_answers_409_until_resumed(world: World, db: Database) -> None:
    with db.session() as session:
        row = deployments.by_name(session, world.user, "kumo")
        assert row is not None
        deployments.set_status(session, world.user, row.id, "paused")
    with pytest.raises(openai.ConflictError, match="paused"):
        world.client().chat.completions.create(model="kumo", messages=HELLO, max_tokens=2)
