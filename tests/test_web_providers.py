"""The compute page (``/providers``) and provider keys on the keys page: without a node, the
three steps with this server's URL; with nodes and work (rows written directly), the nodes
with their reliability and reported hardware, the work with the verifier's reason and
numbers, and each compute credit with its breakdown; another user's nodes never appear;
sign-in required; both languages. A provider key is made from the keys page's form (the REST
call its script makes), and a mixed-scope request shows the service's refusal."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select

from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import ApiKey, Job, PointsEntry, ProviderNode, ProviderWork, User
from loraloop.errors import InvalidRequest
from loraloop.identity import accounts, api_keys
from loraloop.providers import nodes
from loraloop.web import i18n, pages_providers
from tests.factories import make_user, sign_in

HTML = {"accept": "text/html,application/xhtml+xml"}
SERVER = "http://127.0.0.1:8000"  # the test client's base_url
PARAMS = 134_515_008
TOKENS = 1_843_200
ACCEPTED = "held-out loss 1.8734 against the base's 2.6120 (+28.3%)"
REJECTED = "on held-out data the adapter's loss is 2.6158 against the base's 2.6120 (gain -0.1%)"
FOREIGN = "someone-elses-box"
FOREIGN_REASON = "the adapter does not load: not safetensors (foreign)"


def text_of(lang: str, key: str, **params: object) -> str:
    return str(escape(i18n.translator(lang)(key, **params)))


def page(client: TestClient, path: str) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == 200, response.text[:500]
    return response.text


def signed_in(client: TestClient, db: Database, lang: str = "ja") -> User:
    user = make_user(db)
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)
    sign_in(client, user)
    return user


# rows, written directly ----------------------------------------------------------------------

GPU_BOX: dict[str, Any] = {
    "cpu_count": 16,
    "memory_gb": 62.7,
    "gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_gb": 23.6}],
    "torch": "2.13.0+cu128",
    "cuda": "12.8",
}
LAPTOP: dict[str, Any] = {"cpu_count": 8, "memory_gb": 16, "gpus": [], "torch": "2.13.0"}


def _node(
    session: Any, owner: User, name: str, caps: dict[str, Any], **counts: int
) -> ProviderNode:
    node = ProviderNode(owner_id=owner.id, name=name, capabilities=caps, **counts)
    session.add(node)
    session.flush()
    return node


def _work(
    session: Any,
    node: ProviderNode,
    job_owner: User,
    status: str,
    verification: dict[str, Any] | None = None,
) -> ProviderWork:
    job = Job(owner_id=job_owner.id, kind="train", payload={}, attempts=1)
    session.add(job)
    session.flush()
    row = ProviderWork(
        node_id=node.id, job_id=job.id, attempt=1, status=status, verification=verification
    )
    if status in ("accepted", "rejected", "lost"):
        row.finished_at = utcnow() + timedelta(minutes=5)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class Providers:
    user: User
    other: User
    gpu: ProviderNode
    laptop: ProviderNode
    accepted: ProviderWork
    rejected: ProviderWork


def provider_world(db: Database, user: User) -> Providers:
    """``user`` has a GPU box (5 verified, 1 lost: 75%) and a laptop (1 verified, 1 rejected:
    50%) with accepted, rejected, lost and verifying work and one compute credit; someone else
    has a node and work of their own."""
    other, job_owner = make_user(db), make_user(db)
    with db.session() as session:
        gpu = _node(session, user, "gpu-box", GPU_BOX, verified_ok=5, lost=1)
        laptop = _node(session, user, "<b>laptop</b>", LAPTOP, verified_ok=1, verified_bad=1)
        verdict = {"base_loss": 2.612, "tokens": TOKENS, "params": PARAMS}
        accepted = _work(
            session,
            gpu,
            job_owner,
            "accepted",
            {**verdict, "passed": True, "reason": ACCEPTED, "adapter_loss": 1.8734},
        )
        rejected = _work(
            session,
            laptop,
            job_owner,
            "rejected",
            {**verdict, "passed": False, "reason": REJECTED, "adapter_loss": 2.6158},
        )
        _work(session, gpu, job_owner, "lost")
        _work(session, gpu, job_owner, "verifying")
        session.add(
            PointsEntry(
                user_id=user.id,
                adapter_id=None,
                millipoints=247_938,
                kind="compute",
                source_type="provider_work",
                source_id=accepted.id,
                idempotency_key=f"compute:work:{accepted.id}",
                breakdown={
                    "formula": "tokens × parameters / 10^12",
                    "tokens": TOKENS,
                    "parameters": PARAMS,
                    "job_id": accepted.job_id,
                    "node_id": gpu.id,
                    "points": 247.938,
                },
            )
        )
        theirs = _node(session, other, FOREIGN, GPU_BOX, verified_bad=3)
        _work(session, theirs, job_owner, "rejected", {"passed": False, "reason": FOREIGN_REASON})
    return Providers(user, other, gpu, laptop, accepted, rejected)


# the page ------------------------------------------------------------------------------------


def test_signed_out_visitors_go_to_sign_in(client: TestClient) -> None:
    response = client.get("/providers", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_without_a_node_the_page_shows_the_three_steps_for_this_server(
    client: TestClient, db: Database, lang: str
) -> None:
    signed_in(client, db, lang)
    text = page(client, "/providers")
    assert f'<html lang="{lang}"' in text
    assert f'aria-current="page" href="/providers">{text_of(lang, "nav.providers")}</a>' in text
    assert text_of(lang, "providers.start.heading") in text
    assert text.count('class="pv-step"') == 3
    assert 'href="/keys?scope=provider"' in text
    assert f">{html.escape(pages_providers.INSTALL)}</code>" in text
    command = f"loraloop worker --server {SERVER} --token {pages_providers.KEY_PLACEHOLDER}"
    assert f">{command}</code>" in text
    assert 'id="nodes"' not in text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, "providers.start.heading") not in text


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_nodes_work_and_credits_are_listed(client: TestClient, db: Database, lang: str) -> None:
    world = provider_world(db, signed_in(client, db, lang))
    text = page(client, "/providers")
    t = i18n.translator(lang)

    assert text.count("data-node=") == 2
    assert "gpu-box" in text
    assert "&lt;b&gt;laptop&lt;/b&gt;" in text  # a node's name is escaped
    assert "<b>laptop</b>" not in text
    assert nodes.reliability(world.gpu) == 0.75
    assert "<span data-reliability>75%</span>" in text
    assert "<span data-reliability>50%</span>" in text
    for shown in pages_providers.hardware(t, GPU_BOX) + pages_providers.hardware(t, LAPTOP):
        assert f"<li>{escape(shown)}</li>" in text
    assert text_of(lang, "providers.nodes.ok", n=5) in text
    assert text_of(lang, "providers.nodes.lost", n=1) in text
    assert text_of(lang, "providers.nodes.bad", n=1) in text

    assert text.count("data-work=") == 4
    for status in ("accepted", "rejected", "lost", "verifying"):
        assert f'data-status="{status}"' in text
        assert text_of(lang, f"providers.status.{status}") in text
    assert escape(ACCEPTED) in text
    assert escape(REJECTED) in text
    assert text_of(lang, "providers.work.losses", adapter="1.8734", base="2.6120") in text
    assert text_of(lang, "providers.work.losses", adapter="2.6158", base="2.6120") in text
    assert text_of(lang, "providers.work.note.lost") in text
    assert text_of(lang, "providers.work.note.verifying") in text

    assert text.count("data-credit=") == 1
    assert "<strong>247.938</strong>" in text  # on the accepted work's row
    assert text_of(lang, "providers.credits.earned", points="247.938") in text
    assert f'<span class="equation__value">{TOKENS:,}</span>' in text
    assert f'<span class="equation__value">{PARAMS:,}</span>' in text
    assert "<code>tokens × parameters / 10^12</code>" in text
    assert '<span class="stat__value num" data-total>247.938</span>' in text


def test_another_users_nodes_and_work_never_appear(client: TestClient, db: Database) -> None:
    world = provider_world(db, make_user(db))
    text = page_of(client, world.user)
    assert FOREIGN not in text
    assert escape(FOREIGN_REASON) not in text

    client.cookies.clear()
    mine = page_of(client, world.other)
    assert FOREIGN in mine
    for theirs in ("gpu-box", "laptop", escape(ACCEPTED), "247.938"):
        assert theirs not in mine, f"{theirs!r} leaked to another user"


def page_of(client: TestClient, user: User) -> str:
    sign_in(client, user)
    return page(client, "/providers")


HARDWARE: list[tuple[str, dict[str, Any], list[str]]] = [
    # name, capabilities as reported, what the page shows (English)
    (
        "one GPU",
        GPU_BOX,
        [
            "16 CPU cores",
            "62.7 GB memory",
            "NVIDIA GeForce RTX 4090 (23.6 GB)",
            "torch 2.13.0+cu128",
            "CUDA 12.8",
        ],
    ),
    (
        "identical GPUs are counted",
        {"cpu_count": 4, "memory_gb": 8, "gpus": [{"name": "A100", "memory_gb": 80}] * 2},
        ["4 CPU cores", "8 GB memory", "2× A100 (80 GB)", "No CUDA"],
    ),
    ("nothing usable reported", {"gpus": "many"}, ["No GPU", "No CUDA"]),
    (
        "a long GPU name is cut",
        {"gpus": [{"name": "G" * 200, "memory_gb": 1}], "cuda": "12.1"},
        [f"{'G' * 59}… (1 GB)", "CUDA 12.1"],
    ),
]


@pytest.mark.parametrize(("name", "caps", "shown"), HARDWARE, ids=[h[0] for h in HARDWARE])
def test_reported_hardware_in_short(name: str, caps: dict[str, Any], shown: list[str]) -> None:
    assert pages_providers.hardware(i18n.translator("en"), caps) == shown


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_keys_built_at_run_time_exist(lang: str) -> None:
    keys = [f"providers.status.{s}" for s in pages_providers.STATUSES]
    keys += [f"providers.work.note.{s}" for s in pages_providers.NOTES]
    missing = sorted(set(keys) - set(i18n.catalog(lang)))
    assert not missing, f"add these to locales/{lang}/providers.json: {missing}"


# provider keys on the keys page -----------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_keys_page_offers_a_provider_key_and_says_what_it_can_do(
    client: TestClient, db: Database, lang: str
) -> None:
    signed_in(client, db, lang)  # a member: no admin needed
    text = page(client, "/keys")
    assert 'value="provider" aria-describedby="provider-scope-note">' in text
    assert text_of(lang, "catalog.keys.scope.provider") in text
    assert text_of(lang, "catalog.keys.provider_note") in text
    assert 'value="inference:*" checked>' in text

    chosen = page(client, "/keys?scope=provider")  # the compute page's link
    assert 'value="provider" aria-describedby="provider-scope-note" checked>' in chosen
    assert 'value="inference:*">' in chosen


def test_a_provider_key_is_made_from_the_keys_page(client: TestClient, db: Database) -> None:
    user = signed_in(client, db)
    created = client.post("/api/keys", json={"name": "gpu-box", "scopes": ["provider"]})
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["provider"]
    text = page(client, "/keys")
    assert '<code class="catalog-scope">provider</code>' in text
    assert created.json()["secret"] not in text

    mixed = ["provider", "manage"]
    refused = client.post("/api/keys", json={"name": "both", "scopes": mixed})
    assert refused.status_code == 400
    with db.session() as session, pytest.raises(InvalidRequest) as service:
        api_keys.create(session, user, name="both", scopes=mixed)
    assert refused.json()["error"]["message"] == service.value.message  # what the form shows
    with db.session() as session:
        names = session.scalars(select(ApiKey.name).where(ApiKey.user_id == user.id)).all()
    assert names == ["gpu-box"]
