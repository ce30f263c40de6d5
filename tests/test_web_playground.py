"""The playground page: renders in both languages, offers only what the viewer may talk to
(never another user's private adapter, not even by ``?adapter_id=``), preselects a target
from the query, reopens a conversation of one's own and answers 404 for anyone else's."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, BaseModel, User
from loraloop.gateway import conversations
from loraloop.web import i18n
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_user,
    sign_in,
)

HTML = {"accept": "text/html,application/xhtml+xml"}
_OPTION = re.compile(r'<option value="([^"]+)" data-base="(\d*)"( selected)?>([^<]*)</option>')


def _text(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def _options(page: str) -> dict[str, str]:
    """value -> label of column A's target list (the first ``<select>``)."""
    first = page.split('id="pg-target-0"', 1)[1].split("</select>", 1)[0]
    return {value: html.unescape(label) for value, _, _, label in _OPTION.findall(first)}


def _selected(page: str) -> list[str]:
    first = page.split('id="pg-target-0"', 1)[1].split("</select>", 1)[0]
    return [value for value, _, chosen, _ in _OPTION.findall(first) if chosen]


def _bases(page: str) -> dict[str, str]:
    """value -> the base model id an option runs on ("" for an external upstream)."""
    first = page.split('id="pg-target-0"', 1)[1].split("</select>", 1)[0]
    return {value: base for value, base, _, _ in _OPTION.findall(first)}


def _folder(tmp_path: Path, name: str) -> Path:
    """An adapter folder that is only recorded, never loaded: the page reads no weights."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(name.encode())
    return folder


class World:
    def __init__(self, db: Database, settings: Settings, tmp_path: Path) -> None:
        self.me = make_user(db)
        self.other = make_user(db)
        self.base = make_base_model(db, tmp_path / "base", name="tiny-base")
        self.mine = make_adapter_version(
            db, self.me, self.base, _folder(tmp_path, "m1"), name="kumo"
        )
        with db.session() as session:
            kumo = session.get(Adapter, self.mine.adapter_id)
        make_adapter_version(db, self.me, self.base, _folder(tmp_path, "m2"), adapter=kumo)
        self.shared = make_adapter_version(
            db,
            self.other,
            self.base,
            _folder(tmp_path, "s"),
            name="shared-one",
            visibility="public",
        )
        self.secret = make_adapter_version(
            db, self.other, self.base, _folder(tmp_path, "x"), name="secret-sauce"
        )
        make_deployment(
            db,
            self.me,
            settings,
            name="kumo-live",
            adapter_id=self.mine.adapter_id,
            alias="champion",
        )
        make_deployment(db, self.other, settings, name="their-live", base_model_id=self.base.id)


@pytest.fixture
def world(db: Database, settings: Settings, tmp_path: Path) -> World:
    return World(db, settings, tmp_path)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_page_renders_in_both_languages(client: TestClient, world: World, lang: str) -> None:
    sign_in(client, world.me)
    assert client.patch("/api/me", json={"locale": lang}).status_code == 200
    page = client.get("/playground", headers=HTML)
    assert page.status_code == 200
    assert f'<html lang="{lang}"' in page.text
    other = "en" if lang == "ja" else "ja"
    for key in ("playground.lead", "playground.compare", "playground.settings.system"):
        assert _text(lang, key) in page.text
        assert _text(other, key) not in page.text
    assert '<script src="/static/playground.js' in page.text
    assert 'aria-live="polite"' in page.text
    texts = page.text.split('<script type="application/json" id="texts">', 1)[1]
    catalog = json.loads(texts.split("</script>", 1)[0])
    assert catalog["playground.stop"] == i18n.translator(lang)("playground.stop")


def test_anonymous_visitors_are_sent_to_sign_in(client: TestClient) -> None:
    response = client.get("/playground", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


def test_targets_are_only_what_the_viewer_may_use(client: TestClient, world: World) -> None:
    sign_in(client, world.me)
    page = client.get("/playground", headers=HTML).text
    options = _options(page)
    mine, shared = world.mine.adapter_id, world.shared.adapter_id
    assert list(options) == [
        "deployment:kumo-live",
        f"adapter:{mine}:2",
        f"adapter:{mine}:1",
        f"adapter:{shared}:1",
        f"base:{world.base.id}",
    ]
    t = i18n.translator("ja")
    assert options[f"adapter:{mine}:1"] == t(
        "playground.target.champion", label=t("playground.target.version", name="kumo", version=1)
    )
    assert "kumo@champion" in options["deployment:kumo-live"]
    assert (
        _text(
            "ja", "playground.group.adapter_of", name="shared-one", owner=world.other.display_name
        )
        in page
    )
    assert "secret-sauce" not in page
    assert "their-live" not in page
    assert f"adapter:{world.secret.adapter_id}:" not in page
    base = str(world.base.id)
    assert set(_bases(page).values()) == {base}  # one engine: they may stream side by side
    # column B offers the same list
    assert page.count('value="deployment:kumo-live"') == 2


def test_a_paused_deployment_says_so(client: TestClient, world: World) -> None:
    sign_in(client, world.me)
    listed = client.get("/api/deployments").json()
    kumo = next(d for d in listed if d["name"] == "kumo-live")
    assert client.post(f"/api/deployments/{kumo['id']}/pause").status_code == 200
    options = _options(client.get("/playground", headers=HTML).text)
    assert options["deployment:kumo-live"].endswith(
        i18n.translator("ja")("playground.target.paused", label="")
    )


PRESELECT = [
    # name, query, expected selected value (with {mine} / {shared} / {secret} / {base})
    ("nothing asked", "", None),
    ("adapter's champion", "?adapter_id={mine}", "adapter:{mine}:1"),
    ("adapter version", "?adapter_id={mine}&version=2", "adapter:{mine}:2"),
    ("someone's public adapter", "?adapter_id={shared}", "adapter:{shared}:1"),
    ("deployment", "?deployment=kumo-live", "deployment:kumo-live"),
    ("no such version", "?adapter_id={mine}&version=9", None),
    ("another user's private adapter", "?adapter_id={secret}", None),
    ("another user's private version", "?adapter_id={secret}&version=1", None),
    ("another user's deployment", "?deployment=their-live", None),
]


@pytest.mark.parametrize(("name", "query", "expected"), PRESELECT, ids=[p[0] for p in PRESELECT])
def test_the_query_preselects_a_target_the_viewer_may_use(
    client: TestClient, world: World, name: str, query: str, expected: str | None
) -> None:
    ids = {
        "mine": world.mine.adapter_id,
        "shared": world.shared.adapter_id,
        "secret": world.secret.adapter_id,
    }
    sign_in(client, world.me)
    page = client.get("/playground" + query.format(**ids), headers=HTML)
    assert page.status_code == 200
    assert _selected(page.text) == ([expected.format(**ids)] if expected else [])
    assert "secret-sauce" not in page.text


def test_a_bad_query_value_is_a_page_with_the_problem(client: TestClient, world: World) -> None:
    sign_in(client, world.me)
    page = client.get("/playground?adapter_id=kumo", headers=HTML)
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "adapter_id" in page.text


def test_no_models_yet_says_where_to_get_one(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    page = client.get("/playground", headers=HTML).text
    assert _text("ja", "playground.none.title") in page
    assert 'href="/train"' in page
    assert _options(page) == {}


def _conversation(db: Database, user: User, base: BaseModel, title: str) -> int:
    with db.session() as session:
        row = conversations.create(
            session,
            user,
            title=title,
            target={"base_model_id": base.id},
            settings={"temperature": 0.3, "system": "Be brief."},
            messages=[
                {"role": "user", "content": "こんにちは"},
                {"role": "assistant", "content": "</script><b>hi</b>", "trace_id": "chatcmpl-x"},
            ],
        )
        return row.id


def test_the_sidebar_lists_only_your_conversations(
    client: TestClient, world: World, db: Database
) -> None:
    _conversation(db, world.me, world.base, "コーヒーの質問")
    _conversation(db, world.other, world.base, "their private chat")
    sign_in(client, world.me)
    page = client.get("/playground", headers=HTML).text
    assert "コーヒーの質問" in page
    assert "their private chat" not in page
    assert 'id="pg-history-empty" hidden' in page


def test_a_conversation_reopens_from_its_address(
    client: TestClient, world: World, db: Database
) -> None:
    mine = _conversation(db, world.me, world.base, "mine")
    sign_in(client, world.me)
    page = client.get(f"/playground?conversation={mine}", headers=HTML).text
    embedded = page.split('<script type="application/json" id="pg-conversation">', 1)[1]
    raw = embedded.split("</script>", 1)[0]
    assert "</script><b>" not in raw  # the answer's text cannot end the script element
    saved = json.loads(raw)
    assert saved["id"] == mine
    assert saved["target"] == {"base_model_id": world.base.id}
    assert saved["settings"]["system"] == "Be brief."
    assert saved["messages"][1]["trace_id"] == "chatcmpl-x"
    assert f'href="/playground?conversation={mine}" aria-current="page"' in page
    assert "<title>mine | " in page


def test_another_users_conversation_is_not_found(
    client: TestClient, world: World, db: Database
) -> None:
    theirs = _conversation(db, world.other, world.base, "their secret plans")
    sign_in(client, world.me)
    page = client.get(f"/playground?conversation={theirs}", headers=HTML)
    assert page.status_code == 404
    assert "their secret plans" not in page.text
    assert client.get("/playground?conversation=999999", headers=HTML).status_code == 404


def test_the_static_files_are_served(client: TestClient) -> None:
    script = client.get("/static/playground.js")
    assert script.status_code == 200
    assert "AbortController" in script.text
    assert client.get("/static/playground.css").status_code == 200


def test_each_choice_names_the_base_it_runs_on(
    client: TestClient, world: World, db: Database, settings: Settings, tmp_path: Path
) -> None:
    other = make_base_model(db, tmp_path / "other", name="other-base")
    make_deployment(db, world.me, settings, name="on-other", base_model_id=other.id)
    make_deployment(
        db, world.me, settings, name="gpu", upstream_url="http://gpu:8000/v1", upstream_model="m"
    )
    sign_in(client, world.me)
    bases = _bases(client.get("/playground", headers=HTML).text)
    assert bases["deployment:kumo-live"] == str(world.base.id)
    assert bases["deployment:on-other"] == bases[f"base:{other.id}"] == str(other.id)
    assert bases["deployment:gpu"] == ""  # an upstream holds no engine here
