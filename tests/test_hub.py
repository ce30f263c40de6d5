"""The adapter hub (service and REST API): search filters and sorting, bad filters as one 400
naming the allowed values, private adapters invisible to others (404 exactly like a missing
id, in search, by id, star and fork), idempotent stars, forks that keep their lineage and
share the source's weights byte for byte, and a card that shows quality numbers but never a
user's request text. Runs on SQLite, and on PostgreSQL when configured."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from loraloop.catalog import adapters, facets, hub
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.migrate import alembic_config
from loraloop.db.tables import (
    Adapter,
    AdapterStar,
    AdapterVersion,
    BaseModel,
    DriftReport,
    EvalRun,
    EvalSuite,
    Feedback,
    Trace,
    User,
)
from loraloop.errors import InvalidRequest, NotFound
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_user,
    sign_in,
)

_fans = itertools.count(1)
SECRET_REQUEST = "my card number is 4111-1111"
#: Rows as revision 0010 stores them: an account, a base model, an adapter and its version.
OLD_ROWS = (
    "INSERT INTO users (id, email, display_name, password_hash, role, locale, is_active, "
    "created_at) VALUES (1, 'a@example.com', 'a', 'x', 'member', 'ja', 1, '2025-01-01')",
    "INSERT INTO base_models (id, name, source, path, architecture, model_type, "
    "parameters, context_length, sha256, is_default, created_at) "
    "VALUES (1, 'b', 'local', '/x', 'L', 'llama', 1, 1, '0', 0, '2025-01-01')",
    "INSERT INTO adapters (id, owner_id, name, base_model_id, visibility, licence, "
    "description, created_at) VALUES (1, 1, 'old', 1, 'public', 'mit', '', '2025-01-01')",
    "INSERT INTO adapter_versions (id, adapter_id, version, path, sha256, spec, metrics, "
    "created_at) VALUES (1, 1, 1, '/p', 's', '{}', '{}', '2025-01-01')",
)


def fake_adapter_folder(root: Path, name: str, card: str | None = None) -> Path:
    """A version folder the hub can describe (nothing loads the weights)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"not really weights " + name.encode())
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def publish(
    db: Database,
    user: User,
    base: BaseModel,
    root: Path,
    name: str,
    *,
    visibility: str = "public",
    card: str | None = None,
    **fields: Any,
) -> AdapterVersion:
    """A version of a new adapter of ``user`` with the given hub fields."""
    version = make_adapter_version(
        db, user, base, fake_adapter_folder(root, name, card), name=name, visibility=visibility
    )
    with db.session() as session:
        row = session.get(Adapter, version.adapter_id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)
    return version


def give_stars(db: Database, adapter_id: int, count: int) -> None:
    """``count`` stars from new accounts (that never sign in, so no password is hashed)."""
    with db.session() as session:
        for _ in range(count):
            fan = User(email=f"fan{next(_fans)}@example.com", display_name="fan", password_hash="-")
            session.add(fan)
            session.flush()
            hub.star(session, fan, adapter_id)


@pytest.fixture
def bases(db: Database, tmp_path: Path) -> tuple[BaseModel, BaseModel]:
    return (
        make_base_model(db, tmp_path / "a", name="base-a"),
        make_base_model(db, tmp_path / "b", name="base-b"),
    )


@pytest.fixture
def world(db: Database, tmp_path: Path, bases: tuple[BaseModel, BaseModel]) -> dict[str, Any]:
    """Four public adapters with different facets and stars, and one private one."""
    a, b = bases
    alice, bob = make_user(db), make_user(db)
    made = {
        "kumo-coffee": publish(
            db,
            alice,
            a,
            tmp_path,
            "kumo-coffee",
            language="ja",
            task="chat",
            licence="mit",
            description="Answers about the Kumo coffee menu",
        ),
        "law-summary": publish(
            db,
            alice,
            b,
            tmp_path,
            "law-summary",
            language="ja",
            task="summarization",
            licence="apache-2.0",
            description="Summaries of court rulings",
        ),
        "en-translate": publish(
            db,
            bob,
            a,
            tmp_path,
            "en-translate",
            language="en",
            task="translation",
            licence="cc-by-4.0",
            description="JA to EN, coffee vocabulary too",
        ),
        "sql-helper": publish(
            db,
            bob,
            b,
            tmp_path,
            "sql-helper",
            language="multilingual",
            task="code",
            licence="openrail",
        ),
        "secret-plan": publish(
            db,
            bob,
            a,
            tmp_path,
            "secret-plan",
            visibility="private",
            language="ja",
            task="chat",
            licence="mit",
            description="coffee plans",
        ),
    }
    for name, count in (("kumo-coffee", 1), ("law-summary", 3), ("en-translate", 2)):
        give_stars(db, made[name].adapter_id, count)
    return {"alice": alice, "bob": bob, "versions": made, "bases": bases}


def names(response_json: dict[str, Any]) -> list[str]:
    return [item["name"] for item in response_json["items"]]


# search ------------------------------------------------------------------------------------

SEARCHES: list[tuple[str, dict[str, str], list[str]]] = [
    # name, query, expected names in order (stars first by default; private never)
    (
        "all public, most stars first",
        {},
        ["law-summary", "en-translate", "kumo-coffee", "sql-helper"],
    ),
    ("text in the description", {"q": "coffee"}, ["en-translate", "kumo-coffee"]),
    ("text is case-insensitive", {"q": "KUMO"}, ["kumo-coffee"]),
    ("a % is a character, not a wildcard", {"q": "%"}, []),
    ("language", {"language": "ja"}, ["law-summary", "kumo-coffee"]),
    ("task", {"task": "code"}, ["sql-helper"]),
    ("licence", {"licence": "cc-by-4.0"}, ["en-translate"]),
    ("every filter at once", {"language": "ja", "task": "chat", "licence": "mit"}, ["kumo-coffee"]),
    (
        "empty values mean any",
        {"language": "", "task": "", "licence": "", "sort": ""},
        ["law-summary", "en-translate", "kumo-coffee", "sql-helper"],
    ),
    ("by name", {"sort": "name"}, ["en-translate", "kumo-coffee", "law-summary", "sql-helper"]),
    (
        "newest first",
        {"sort": "recent"},
        ["sql-helper", "en-translate", "law-summary", "kumo-coffee"],
    ),
]


@pytest.mark.parametrize(("name", "query", "expected"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_search_filters_and_sorts(
    client: TestClient,
    db: Database,
    world: dict[str, Any],
    name: str,
    query: dict[str, str],
    expected: list[str],
) -> None:
    sign_in(client, make_user(db))
    found = client.get("/api/hub/adapters", params=query)
    assert found.status_code == 200, found.text
    assert names(found.json()) == expected
    assert found.json()["total"] == len(expected)


def test_search_by_base_model(client: TestClient, db: Database, world: dict[str, Any]) -> None:
    sign_in(client, make_user(db))
    a, _ = world["bases"]
    on_a = client.get("/api/hub/adapters", params={"base_model_id": a.id, "sort": "name"})
    assert names(on_a.json()) == ["en-translate", "kumo-coffee"]
    assert {i["base_model"] for i in on_a.json()["items"]} == {"base-a"}


def test_search_pages_and_counts(client: TestClient, db: Database, world: dict[str, Any]) -> None:
    sign_in(client, make_user(db))
    first = client.get("/api/hub/adapters", params={"sort": "name", "limit": 2}).json()
    second = client.get("/api/hub/adapters", params={"sort": "name", "limit": 2, "offset": 2})
    assert first["total"] == second.json()["total"] == 4
    assert names(first) + names(second.json()) == [
        "en-translate",
        "kumo-coffee",
        "law-summary",
        "sql-helper",
    ]


def test_an_entry_says_everything_a_list_shows(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    viewer = make_user(db)
    sign_in(client, viewer)
    with db.session() as session:
        hub.star(session, viewer, world["versions"]["kumo-coffee"].adapter_id)
    item = next(
        i for i in client.get("/api/hub/adapters").json()["items"] if i["name"] == "kumo-coffee"
    )
    assert item["licence"] == {"id": "mit", "name": "MIT License"}
    assert (item["language"], item["task"], item["stars"], item["starred"]) == (
        "ja",
        "chat",
        2,
        True,
    )
    assert (item["version_count"], item["champion"], item["forked_from"]) == (1, 1, None)
    assert item["owner_name"] == world["alice"].display_name


def test_bad_filters_are_one_400_naming_the_allowed_values(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    sign_in(client, make_user(db))
    a, b = world["bases"]
    bad = client.get(
        "/api/hub/adapters",
        params={
            "language": "klingon",
            "task": "poetry",
            "licence": "wtfpl",
            "sort": "random",
            "base_model_id": "999999",
        },
    )
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_filter"
    message = error["message"]
    for value, allowed in (
        ("klingon", facets.LANGUAGES),
        ("poetry", facets.TASKS),
        ("wtfpl", facets.LICENCE_IDS),
        ("random", hub.SORTS),
    ):
        assert f"{value!r} must be one of {', '.join(allowed)}" in message
    assert f"{a.id} (base-a), {b.id} (base-b)" in message
    not_a_number = client.get("/api/hub/adapters", params={"base_model_id": "abc"})
    assert not_a_number.status_code == 400
    assert "base_model_id 'abc' must be one of" in not_a_number.json()["error"]["message"]


def test_facets_list_the_allowed_values(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    body = client.get("/api/hub/facets").json()
    assert [item["id"] for item in body["licences"]] == list(facets.LICENCE_IDS)
    assert {
        "apache-2.0",
        "mit",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "llama3",
        "openrail",
        "other",
    } <= set(facets.LICENCE_IDS)
    assert body["languages"] == list(facets.LANGUAGES)
    assert body["tasks"] == list(facets.TASKS)
    assert body["sorts"] == list(hub.SORTS)


# privacy -----------------------------------------------------------------------------------


def test_a_private_adapter_is_missing_for_everyone_else(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    secret = world["versions"]["secret-plan"].adapter_id
    sign_in(client, world["alice"])
    assert "secret-plan" not in names(client.get("/api/hub/adapters", params={"q": "plan"}).json())
    for method, path, body in (
        ("GET", "/api/hub/adapters/{}", None),
        ("PUT", "/api/hub/adapters/{}/star", None),
        ("DELETE", "/api/hub/adapters/{}/star", None),
        ("POST", "/api/hub/adapters/{}/fork", {"version": 1}),
    ):
        theirs = client.request(method, path.format(secret), json=body)
        missing = client.request(method, path.format(999_999), json=body)
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["error"]["type"] == missing.json()["error"]["type"]
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    with db.session() as session:
        assert session.scalar(select(AdapterStar).where(AdapterStar.adapter_id == secret)) is None
        assert (
            session.scalar(select(Adapter).where(Adapter.forked_from_version_id.is_not(None)))
            is None
        )


def test_the_owner_sees_their_private_card_but_search_lists_only_public(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    sign_in(client, world["bob"])
    secret = world["versions"]["secret-plan"].adapter_id
    assert client.get(f"/api/hub/adapters/{secret}").json()["visibility"] == "private"
    assert "secret-plan" not in names(client.get("/api/hub/adapters").json())


def test_the_card_shows_quality_numbers_but_never_request_text(
    client: TestClient, db: Database, world: dict[str, Any], settings: Settings
) -> None:
    version = world["versions"]["kumo-coffee"]
    alice = world["alice"]
    deployment = make_deployment(db, alice, settings, adapter_id=version.adapter_id, version=1)
    with db.session() as session:
        suite = EvalSuite(
            adapter_id=version.adapter_id, name="menu", kind="owner", metric="contains"
        )
        session.add(suite)
        session.flush()
        session.add(
            EvalRun(
                adapter_id=version.adapter_id,
                version_id=version.id,
                suite_id=suite.id,
                metric="contains",
                score=0.75,
                summary={"cases": 8},
                cases=[],
            )
        )
        trace = Trace(
            id="chatcmpl-hubtest",
            owner_id=alice.id,
            adapter_version_id=version.id,
            source="api",
            endpoint="chat",
            model="kumo",
            status="ok",
            request={"messages": [{"role": "user", "content": SECRET_REQUEST}]},
        )
        session.add(trace)
        session.flush()
        session.add(Feedback(trace_id=trace.id, owner_id=alice.id, rating=-1, tags=[]))
        session.add(
            DriftReport(
                deployment_id=deployment.id,
                adapter_id=version.adapter_id,
                version_id=version.id,
                requests=40,
                alarm="input",
                quality={"recent_rate": 0.1},
                input={
                    "p_value": 0.001,
                    "ood_share": 0.4,
                    "clusters": [{"label": SECRET_REQUEST, "examples": [SECRET_REQUEST]}],
                },
            )
        )
    sign_in(client, make_user(db))
    response = client.get(f"/api/hub/adapters/{version.adapter_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert SECRET_REQUEST not in response.text
    assert [(s["suite"], s["score"], s["cases"]) for s in body["quality"]["scores"]] == [
        ("menu", 0.75, 8)
    ]
    assert [(v["version"], v["rated"], v["bad"]) for v in body["quality"]["live"]] == [(1, 1, 1)]
    assert [(d["alarm"], d["ood_share"]) for d in body["quality"]["drift"]] == [("input", 0.4)]
    assert body["maintainers"] == [alice.display_name]
    assert (body["champion"], [v["version"] for v in body["versions"]]) == (1, [1])


def test_the_card_carries_the_readme_of_the_version_asked_for(
    client: TestClient, db: Database, world: dict[str, Any], tmp_path: Path
) -> None:
    alice = world["alice"]
    a, _ = world["bases"]
    first = publish(db, alice, a, tmp_path, "carded", card="# v1 card\n")
    with db.session() as session:
        adapter = session.get(Adapter, first.adapter_id)
    make_adapter_version(
        db, alice, a, fake_adapter_folder(tmp_path, "carded-2", "# v2 card\n"), adapter=adapter
    )
    sign_in(client, make_user(db))
    shown = client.get(f"/api/hub/adapters/{first.adapter_id}").json()
    assert (shown["card_version"], shown["model_card"]) == (1, "# v1 card\n")  # the champion's
    asked = client.get(f"/api/hub/adapters/{first.adapter_id}", params={"version": 2}).json()
    assert (asked["card_version"], asked["model_card"]) == (2, "# v2 card\n")
    assert (
        client.get(f"/api/hub/adapters/{first.adapter_id}", params={"version": 9}).status_code
        == 404
    )


# stars -------------------------------------------------------------------------------------


def test_stars_are_idempotent_and_counted(
    client: TestClient, other_client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    adapter_id = world["versions"]["sql-helper"].adapter_id
    me, you = make_user(db), make_user(db)
    sign_in(client, me)
    sign_in(other_client, you)
    url = f"/api/hub/adapters/{adapter_id}/star"
    for _ in range(2):
        starred = client.put(url)
        assert starred.status_code == 200
        assert (starred.json()["stars"], starred.json()["starred"]) == (1, True)
    assert (
        other_client.put(url).json()["stars"],
        other_client.get(f"/api/hub/adapters/{adapter_id}").json()["starred"],
    ) == (2, True)
    for _ in range(2):
        unstarred = client.delete(url)
        assert (unstarred.json()["stars"], unstarred.json()["starred"]) == (1, False)
    with db.session() as session:
        assert (
            session.scalar(select(AdapterStar.user_id).where(AdapterStar.adapter_id == adapter_id))
            == you.id
        )


def test_most_starred_sort_follows_new_stars(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    sign_in(client, make_user(db))
    give_stars(db, world["versions"]["sql-helper"].adapter_id, 4)
    assert names(client.get("/api/hub/adapters").json())[0] == "sql-helper"


# forks -------------------------------------------------------------------------------------


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_fork_is_private_keeps_lineage_and_copies_no_bytes(
    client: TestClient, db: Database, world: dict[str, Any], tmp_path: Path, settings: Settings
) -> None:
    source = world["versions"]["law-summary"]
    forker = make_user(db)
    sign_in(client, forker)
    before = _files_under(tmp_path)
    made = client.post(f"/api/hub/adapters/{source.adapter_id}/fork", json={"version": 1})
    assert made.status_code == 201, made.text
    fork = made.json()
    assert (fork["owner_id"], fork["visibility"], fork["name"]) == (
        forker.id,
        "private",
        "law-summary",
    )
    assert fork["forked_from_version_id"] == source.id
    assert (fork["language"], fork["task"], fork["licence"]) == (
        "ja",
        "summarization",
        "apache-2.0",
    )
    assert _files_under(tmp_path) == before  # no byte copied anywhere
    with db.session() as session:
        original = session.get(Adapter, source.adapter_id)
        copy = session.get(Adapter, fork["id"])
        assert copy is not None
        assert original is not None
        assert copy.base_model_id == original.base_model_id
        first = session.scalar(select(AdapterVersion).where(AdapterVersion.adapter_id == copy.id))
        assert first is not None
        assert (first.version, first.sha256, first.path) == (1, source.sha256, source.path)
        assert (first.dataset_version_id, first.job_id) == (None, None)
    card = client.get(f"/api/hub/adapters/{fork['id']}").json()
    assert card["forked_from"] == {
        "version_id": source.id,
        "adapter_id": source.adapter_id,
        "adapter_name": "law-summary",
        "owner_name": world["alice"].display_name,
        "version": 1,
    }
    assert card["champion"] == 1
    assert client.get(f"/api/hub/adapters/{source.adapter_id}").json()["forks"] == 1
    # the fork is not in the hub until its owner makes it public
    assert names(client.get("/api/hub/adapters", params={"q": "law"}).json()) == ["law-summary"]


def test_forking_twice_picks_a_free_name_and_the_champion(
    client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    source = world["versions"]["kumo-coffee"]
    sign_in(client, make_user(db))
    url = f"/api/hub/adapters/{source.adapter_id}/fork"
    first, second = client.post(url, json={}), client.post(url, json={})
    assert [first.json()["name"], second.json()["name"]] == ["kumo-coffee", "kumo-coffee-fork"]
    assert second.json()["forked_from_version_id"] == source.id  # the champion
    named = client.post(url, json={"name": "my-kumo"})
    assert named.json()["name"] == "my-kumo"
    assert client.post(url, json={"name": "my-kumo"}).status_code == 409


def test_a_fork_of_a_fork_keeps_its_own_source(
    client: TestClient, other_client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    source = world["versions"]["en-translate"]
    first_forker, second_forker = make_user(db), make_user(db)
    sign_in(client, first_forker)
    fork = client.post(f"/api/hub/adapters/{source.adapter_id}/fork", json={}).json()
    client.patch(f"/api/adapters/{fork['id']}", json={"visibility": "public"})
    sign_in(other_client, second_forker)
    again = other_client.post(f"/api/hub/adapters/{fork['id']}/fork", json={}).json()
    with db.session() as session:
        fork_v1 = session.scalar(
            select(AdapterVersion).where(AdapterVersion.adapter_id == fork["id"])
        )
    assert fork_v1 is not None
    assert again["forked_from_version_id"] == fork_v1.id
    card = other_client.get(f"/api/hub/adapters/{again['id']}").json()
    assert card["forked_from"]["adapter_name"] == "en-translate"
    assert card["forked_from"]["owner_name"] == first_forker.display_name


def test_lineage_hides_a_source_made_private(
    client: TestClient, other_client: TestClient, db: Database, world: dict[str, Any]
) -> None:
    source = world["versions"]["kumo-coffee"]
    sign_in(client, make_user(db))
    fork = client.post(f"/api/hub/adapters/{source.adapter_id}/fork", json={}).json()
    sign_in(other_client, world["alice"])
    other_client.patch(f"/api/adapters/{source.adapter_id}", json={"visibility": "private"})
    lineage = client.get(f"/api/hub/adapters/{fork['id']}").json()["forked_from"]
    assert lineage == {
        "version_id": source.id,
        "adapter_id": None,
        "adapter_name": None,
        "owner_name": None,
        "version": None,
    }


def test_fork_refusals(
    client: TestClient, db: Database, world: dict[str, Any], bases: tuple[BaseModel, BaseModel]
) -> None:
    owner = make_user(db)
    with db.session() as session:
        empty = adapters.create(
            session, owner, name="empty", base_model_id=bases[0].id, visibility="public"
        )
    sign_in(client, make_user(db))
    nothing = client.post(f"/api/hub/adapters/{empty.id}/fork", json={})
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (400, "nothing_to_fork")
    source = world["versions"]["kumo-coffee"].adapter_id
    assert client.post(f"/api/hub/adapters/{source}/fork", json={"version": 7}).status_code == 404
    assert (
        client.post(f"/api/hub/adapters/{source}/fork", json={"name": "bad name!"}).status_code
        == 400
    )


# the service directly, and the adapter fields ----------------------------------------------


def test_service_refuses_another_users_private_adapter(db: Database, world: dict[str, Any]) -> None:
    secret = world["versions"]["secret-plan"].adapter_id
    with db.session() as session:
        for call in (
            lambda: hub.entry(session, world["alice"], secret),
            lambda: hub.card(session, world["alice"], secret),
            lambda: hub.star(session, world["alice"], secret),
            lambda: hub.fork(session, world["alice"], secret),
        ):
            with pytest.raises(NotFound):
                call()
        found = hub.search(session, world["alice"], q="secret")
        assert found.total == 0


def test_adapter_fields_are_validated_together(
    client: TestClient, db: Database, bases: tuple[BaseModel, BaseModel]
) -> None:
    sign_in(client, make_user(db))
    bad = client.post(
        "/api/adapters",
        json={
            "name": "x",
            "base_model_id": bases[0].id,
            "licence": "wtfpl",
            "language": "xx",
            "task": "yy",
        },
    )
    assert bad.status_code == 400
    message = bad.json()["error"]["message"]
    for named in ("licence 'wtfpl'", "language 'xx'", "task 'yy'"):
        assert named in message
    made = client.post(
        "/api/adapters",
        json={
            "name": "x",
            "base_model_id": bases[0].id,
            "licence": "openrail",
            "language": "en",
            "task": "qa",
        },
    )
    assert made.status_code == 201, made.text
    assert (made.json()["language"], made.json()["task"], made.json()["licence"]) == (
        "en",
        "qa",
        "openrail",
    )
    changed = client.patch(
        f"/api/adapters/{made.json()['id']}", json={"language": "ja", "task": "chat"}
    )
    assert (changed.json()["language"], changed.json()["task"]) == ("ja", "chat")
    assert (
        client.patch(f"/api/adapters/{made.json()['id']}", json={"task": "poetry"}).status_code
        == 400
    )


def test_defaults_of_a_new_adapter(db: Database, bases: tuple[BaseModel, BaseModel]) -> None:
    owner = make_user(db)
    with db.session() as session:
        row = adapters.create(session, owner, name="plain", base_model_id=bases[0].id)
        assert (row.language, row.task, row.forked_from_version_id) == ("other", "other", None)
        with pytest.raises(InvalidRequest, match="language 'xx' must be one of"):
            adapters.create(session, owner, name="p2", base_model_id=bases[0].id, language="xx")


def test_migration_0011_gives_existing_adapters_defaults(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")  # foreign keys on, as in use
    engine = database.engine
    config = alembic_config(engine)

    command.upgrade(config, "0010")
    with engine.begin() as conn:
        for statement in OLD_ROWS:
            conn.execute(text(statement))
    command.upgrade(config, "head")
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT language, task, forked_from_version_id FROM adapters")
        ).one()
        assert tuple(row) == ("other", "other", None)
    command.downgrade(config, "0010")  # in place: the versions survive the way back
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapter_versions")).scalar() == 1
    database.dispose()
