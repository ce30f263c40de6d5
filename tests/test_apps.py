"""Apps: one model id in front of several members, driven by the official ``openai`` client
over real HTTP. Two adapters, a keyword rule, a metadata rule, a semantic route (MiniLM) and a
default member that is a fallback chain whose first member is a second loraloop instance on
127.0.0.1; killing that instance makes the fallback answer, and the trace says why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from loraloop.api.app import create_app
from loraloop.catalog import adapters, aliases
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.db.tables import AdapterVersion, Deployment, Job, Trace, TrainingCandidate, User
from loraloop.errors import InvalidRequest
from loraloop.gateway import apps, deployments
from loraloop.gateway.credentials import Vault
from loraloop.storage import sha256_file
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.conftest import serve
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_key,
    make_user,
    sign_in,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

SUPPORT = "Returns, refunds, exchanges, shipping and problems with an order."
LEGAL = "Contracts, agreements, clauses, terms and conditions, legal questions."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("apps-models")
    base = make_tiny_model(root / "base", hidden=32)
    return {
        "base": base,
        "support": make_tiny_adapter(base, root / "support", seed=1),
        "legal": make_tiny_adapter(base, root / "legal", seed=2),
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """This operator lets app members call 127.0.0.1 (the second instance lives there)."""
    return settings.model_copy(update={"egress_allow_private": True})


@dataclass
class Desk:
    db: Database
    user: User
    sdk: openai.OpenAI
    ids: dict[str, int]

    def ask(self, text: str, **options: Any) -> Trace:
        reply = self.sdk.chat.completions.create(
            model="desk",
            messages=[{"role": "user", "content": text}],
            temperature=0,
            **options,
        )
        if options.get("stream"):
            reply_id = next(iter(reply)).id  # type: ignore[call-overload]
            for _chunk in reply:  # type: ignore[attr-defined]
                pass
        else:
            reply_id = reply.id
        deadline = time.monotonic() + 10  # a stream's trace is written just after [DONE]
        while True:
            with self.db.session() as session:
                trace = session.get(Trace, reply_id)
            if trace is not None or time.monotonic() > deadline:
                assert trace is not None
                return trace
            time.sleep(0.05)


@pytest.fixture
def second_instance(tmp_path: Path, tiny: dict[str, Path]) -> Iterator[tuple[str, str, Any]]:
    """Another loraloop on 127.0.0.1 with a base deployment ``general``: (url, key, stop)."""
    home = tmp_path / "second"
    other = Settings(
        env="development",
        home=home,
        database_url=f"sqlite:///{home}/loraloop.db",
        secret_key="second-instance-secret",
    )
    home.mkdir()
    db = Database(other.resolved_database_url)
    upgrade(db.engine)
    user = make_user(db)
    base = make_base_model(db, tiny["base"], name="tiny")
    make_deployment(db, user, other, name="general", base_model_id=base.id)
    secret = make_key(db, user, rate_limit_per_minute=10_000)
    server = serve(create_app(other, db))
    url = server.__enter__()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.__exit__(None, None, None)

    try:
        yield url, secret, stop
    finally:
        stop()
        db.dispose()


@pytest.fixture
def desk(
    db: Database,
    settings: Settings,
    app: FastAPI,
    tiny: dict[str, Path],
    second_instance: tuple[str, str, Any],
) -> Iterator[Desk]:
    url, secret, _stop = second_instance
    user = make_user(db)
    base = make_base_model(db, tiny["base"], name="tiny")
    support = make_adapter_version(db, user, base, tiny["support"], name="support")
    legal = make_adapter_version(db, user, base, tiny["legal"], name="legal")
    made = {
        "support": make_deployment(
            db, user, settings, name="support", adapter_id=support.adapter_id, alias="champion"
        ),
        "legal": make_deployment(
            db, user, settings, name="legal", adapter_id=legal.adapter_id, alias="champion"
        ),
        "backup": make_deployment(
            db,
            user,
            settings,
            name="backup",
            upstream_url=f"{url}/v1",
            upstream_model="general",
            upstream_key=secret,
            allow_private=True,
        ),
        "local": make_deployment(db, user, settings, name="local", base_model_id=base.id),
        "general": make_deployment(
            db,
            user,
            settings,
            name="general",
            app={
                "type": "fallback",
                "members": [
                    {"deployment": "backup", "timeout_seconds": 20},
                    {"deployment": "local"},
                ],
            },
        ),
        "desk": make_deployment(
            db,
            user,
            settings,
            name="desk",
            app={
                "type": "router",
                "members": [
                    {"deployment": "support", "description": SUPPORT},
                    {"deployment": "legal", "description": LEGAL},
                    {"deployment": "general"},
                ],
                "rules": [
                    {"member": "support", "keywords": ["返品"]},
                    {"member": "legal", "metadata": {"dept": "legal"}},
                ],
                "semantic": {"threshold": 0.3},
                "default": "general",
                "defaults": {"max_tokens": 6},
            },
        ),
    }
    with serve(app) as base_url:
        sdk = openai.OpenAI(
            base_url=f"{base_url}/v1",
            api_key=make_key(db, user, rate_limit_per_minute=10_000, scopes=["inference:desk"]),
            max_retries=0,
        )
        try:
            yield Desk(db, user, sdk, {name: row.id for name, row in made.items()})
        finally:
            sdk.close()


def test_each_request_lands_on_the_intended_member_and_the_trace_says_why(desk: Desk) -> None:
    assert [m.id for m in desk.sdk.models.list().data] == ["desk"]  # the key sees only the app
    with pytest.raises(openai.NotFoundError):  # and cannot call a member directly
        desk.sdk.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}]
        )

    by_keyword = desk.ask("注文した品を返品したいです")
    assert by_keyword.deployment_id == desk.ids["support"]
    assert by_keyword.app_id == desk.ids["desk"]
    assert by_keyword.model == "desk"
    assert by_keyword.route == {
        "member": "support",
        "by": "rule",
        "rule": 1,
        "matched": "keyword 返品",
    }

    by_metadata = desk.ask("Please look at this.", metadata={"dept": "legal"})
    assert by_metadata.deployment_id == desk.ids["legal"]
    assert by_metadata.route is not None
    assert by_metadata.route["matched"] == "metadata dept=legal"

    by_meaning = desk.ask("Can you check clause 4 of the agreement we signed with our supplier?")
    assert by_meaning.deployment_id == desk.ids["legal"]
    assert by_meaning.route is not None
    assert by_meaning.route["by"] == "meaning"
    assert by_meaning.route["similarity"] >= 0.3
    # members with only a description: the n-grams are never sure, the embeddings decide
    assert by_meaning.route["strategy"] == "ngrams+encoder"
    assert by_meaning.route["cosine"] > 0
    refund = desk.ask("My parcel arrived broken, how do I get my money back?")
    assert refund.deployment_id == desk.ids["support"]

    # the rest goes to the default member: a fallback chain whose first member is the
    # second instance, which answers while it runs
    other = desk.ask("What is the capital of France?")
    assert other.deployment_id == desk.ids["backup"], other.route["fallbacks"]
    assert other.route is not None
    assert other.route["by"] == "default"
    assert other.route["member"] == "general"
    assert other.route["reason"] == "general request"
    assert other.route["best"] in ("support", "legal")
    assert other.route["inner"] == {"member": "backup", "by": "fallback"}
    assert other.status == "ok"
    assert other.completion_tokens == 6  # the app's default max_tokens (the request set none)

    with desk.db.session() as session:
        per_member = {
            m["deployment"]: m for m in apps.members(session, desk.user, desk.ids["desk"])
        }
    assert per_member["support"]["requests"] == 2
    assert per_member["legal"]["requests"] == 2
    assert per_member["backup"]["requests"] == 1
    assert per_member["backup"]["tokens"] > 0


def test_the_playground_says_which_member_answered(
    desk: Desk, client: TestClient, db: Database
) -> None:
    sign_in(client, desk.user)
    with client.stream(
        "POST",
        "/api/playground/chat",
        json={"deployment": "desk", "messages": [{"role": "user", "content": "返品したい"}]},
    ) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
    route = json.loads(first.removeprefix("data: "))["loraloop"]["route"]
    assert (route["member"], route["by"]) == ("support", "rule")


def test_killing_the_first_member_makes_the_fallback_answer(
    desk: Desk, second_instance: tuple[str, str, Any]
) -> None:
    first = desk.ask("What is the capital of France?")
    assert first.deployment_id == desk.ids["backup"]
    _url, _key, stop = second_instance
    stop()
    for stream in (False, True):
        answered = desk.ask("What is the capital of France?", stream=stream)
        assert answered.deployment_id == desk.ids["local"], answered.route
        assert answered.status == "ok"
        assert answered.route is not None
        assert answered.route["inner"]["member"] == "local"
        tried = answered.route["fallbacks"]
        assert [t["member"] for t in tried] == ["backup"]  # the chain member that failed
        assert tried[0]["reason"]
        with desk.db.session() as session:
            failed = session.scalars(
                select(Trace)
                .where(Trace.deployment_id == desk.ids["backup"], Trace.status == "error")
                .order_by(Trace.created_at.desc())
            ).first()
        assert failed is not None  # the failed attempt is traced too, with its reason
        assert failed.app_id == desk.ids["desk"]
        assert failed.error


def test_feedback_on_an_app_answer_reaches_the_member_that_produced_it(
    desk: Desk, db: Database
) -> None:
    from loraloop.mlops import feedback

    answered = desk.ask("注文した品を返品したいです")
    with db.session() as session:
        feedback.give(session, desk.user, answered.id, rating=-1, correction="返品は7日以内です。")
    with db.session() as session:
        candidate = session.scalars(select(TrainingCandidate)).one()
        support = session.get(Deployment, desk.ids["support"])
        assert support is not None
        assert candidate.adapter_id == support.adapter_id


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000/v1",
        "http://169.254.169.254/latest",
        "http://localhost:11434/v1",
        "http://127.0.0.1:8000/v1",
        "http://[::1]:8000/v1",
        "http://192.168.1.10/v1",
    ],
)
def test_a_member_on_a_private_address_is_refused_unless_an_admin_allows_it(
    db: Database, settings: Settings, url: str
) -> None:
    user = make_user(db)
    with db.session() as session, pytest.raises(InvalidRequest, match="EGRESS_ALLOW_PRIVATE"):
        deployments.create(
            session,
            user,
            Vault(settings.secret()),
            name="inner",
            upstream_url=url,
            upstream_model="m",
        )
    with db.session() as session:
        row = deployments.create(
            session,
            user,
            Vault(settings.secret()),
            name="inner",
            upstream_url=url,
            upstream_model="m",
            allow_private=True,
        )
        assert row.kind == "external"


def test_an_app_spec_is_checked_whole(
    db: Database, settings: Settings, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    with db.session() as session, pytest.raises(InvalidRequest) as refused:
        deployments.create(
            session,
            user,
            Vault(settings.secret()),
            name="bad",
            app={
                "type": "router",
                "members": [{"deployment": "missing"}],
                "rules": [{"member": "nobody", "keywords": ["x"]}, {"member": "missing"}],
                "default": "elsewhere",
                "defaults": {"temperature": 9},
            },
        )
    message = refused.value.message
    for part in (
        "member 1: you have no deployment named 'missing'",
        "rule 1 needs 'member'",
        "rule 2 matches nothing",
        "default must name a member",
        "defaults.temperature must be between",
    ):
        assert part in message


def test_an_app_cannot_contain_itself(
    db: Database, settings: Settings, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"], name="tiny")
    make_deployment(db, user, settings, name="x", base_model_id=base.id)
    outer = make_deployment(
        db, user, settings, name="a", app={"type": "single", "members": [{"deployment": "x"}]}
    )
    make_deployment(
        db, user, settings, name="b", app={"type": "single", "members": [{"deployment": "a"}]}
    )
    with db.session() as session, pytest.raises(InvalidRequest, match="leads back to 'a'"):
        deployments.update_app(
            session, user, outer.id, {"type": "single", "members": [{"deployment": "b"}]}
        )


SUPPORT_QUESTIONS = [
    "注文した商品を返品したいです。",
    "返金はいつ頃になりますか？",
    "荷物がまだ届きません。",
    "サイズ違いの商品に交換できますか？",
    "How do I return an item I bought online?",
    "I want a refund for my order.",
    "My package hasn't arrived yet.",
    "Can I exchange this shirt for a different size?",
] * 3
LEGAL_QUESTIONS = [
    "この契約書を確認してもらえますか？",
    "損害賠償条項の意味を教えてください。",
    "秘密保持契約の有効期間はどのくらいですか？",
    "契約を途中で解除するにはどうすればいいですか？",
    "Can you review this contract before I sign it?",
    "What does an indemnification clause mean?",
    "Is this non-disclosure agreement enforceable?",
    "How do I terminate the agreement early?",
] * 3
CAFE_QUESTIONS = [
    "桜ラテはいくらですか？",
    "出町柳店は何時まで営業していますか？",
    "抹茶ティラミスのアレルゲンを教えてください。",
    "雲ブレンドのLサイズはありますか？",
    "How much is the Sakura Latte?",
    "When does the Demachiyanagi store close?",
    "Does the Matcha Tiramisu contain allergens?",
    "Is there a large Kumo Blend?",
] * 3


def _trained_version(
    db: Database, user: User, folder: Path, adapter_id: int, number: int, questions: list[str]
) -> AdapterVersion:
    """Version ``number`` of the adapter, made by a finished training job on ``questions``."""
    train_file = folder.parent / f"train-{adapter_id}-{number}.jsonl"
    train_file.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": "…"},
                    ]
                },
                ensure_ascii=False,
            )
            + "\n"
            for q in questions
        ),
        encoding="utf-8",
    )
    with db.session() as session:
        job = Job(
            owner_id=user.id,
            kind="train",
            status="succeeded",
            payload={"train_file": str(train_file)},
        )
        session.add(job)
        session.flush()
        version = AdapterVersion(
            adapter_id=adapter_id,
            version=number,
            job_id=job.id,
            path=str(folder),
            sha256=sha256_file(folder / "adapter_model.safetensors"),
            spec={},
            metrics={},
        )
        session.add(version)
        session.flush()
        aliases.ensure_champion(session, version)
        return version


def test_the_semantic_router_learns_each_members_training_data_and_follows_the_champion(
    db: Database, settings: Settings, tiny: dict[str, Path], tmp_path: Path
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"], name="tiny")
    ids = {}
    for name in ("support", "legal"):
        with db.session() as session:
            ids[name] = adapters.create(session, user, name=name, base_model_id=base.id).id
    _trained_version(db, user, tiny["support"], ids["support"], 1, SUPPORT_QUESTIONS)
    _trained_version(db, user, tiny["legal"], ids["legal"], 1, LEGAL_QUESTIONS)
    for name in ("support", "legal"):
        make_deployment(db, user, settings, name=name, adapter_id=ids[name], alias="champion")
    make_deployment(db, user, settings, name="general", base_model_id=base.id)
    members = [{"deployment": d} for d in ("support", "legal", "general")]
    spec = {"type": "router", "members": members, "semantic": {}, "default": "general"}
    make_deployment(db, user, settings, name="desk", app=spec)

    def route(text: str) -> dict[str, Any]:
        with db.session() as session:
            owner = session.get(User, user.id)
            row = session.scalar(select(Deployment).where(Deployment.name == "desk"))
            assert owner is not None
            assert row is not None
            vault = Vault(settings.secret())
            steps = apps.plan(session, settings, vault, owner, row, apps.Request(text, {}))
            assert steps[0].route is not None
            return steps[0].route

    japanese = route("注文した商品を返品して、返金してほしいです。")
    assert (japanese["member"], japanese["by"], japanese["strategy"]) == (
        "support",
        "meaning",
        "ngrams",
    )
    assert japanese["threshold"] == 0.35  # the spec's default
    assert route("契約書の解除条項を確認してください。")["member"] == "legal"
    poem = route("Write a haiku about the autumn moon.")
    assert (poem["member"], poem["by"], poem["reason"]) == ("general", "default", "general request")

    # the support adapter's new champion was trained on café questions: the router refits
    assert route("桜ラテと抹茶ティラミスはいくらですか？")["member"] != "support"
    version = _trained_version(db, user, tiny["support"], ids["support"], 2, CAFE_QUESTIONS)
    with db.session() as session:
        aliases.move(session, ids["support"], "champion", version.id, cause="manual")
    cafe = route("桜ラテと抹茶ティラミスはいくらですか？")
    assert (cafe["member"], cafe["by"]) == ("support", "meaning")
