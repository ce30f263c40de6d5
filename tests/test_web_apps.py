"""The apps pages (``/apps``, ``/apps/new``, ``/apps/{id}``): both languages, sign-in required,
another user's app the same 404 as a missing one, the builder filled from a real spec (made by
``gateway.deployments.create``), user text escaped, and the traffic and quality table showing
the numbers of the traces an app's members wrote."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import BaseModel, Deployment, Feedback, Trace, User
from loraloop.identity import accounts
from loraloop.web import i18n
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_user,
    sign_in,
)

HTML = {"accept": "text/html,application/xhtml+xml"}
EVIL = '<script>alert("x")</script> & "quotes"'


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def page(client: TestClient, path: str) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == 200, response.text[:500]
    return response.text


def fake_adapter_folder(root: Path, name: str) -> Path:
    """A version folder the pages can describe (they never load the weights)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"not really weights " + name.encode())
    return folder


@dataclass
class Desk:
    user: User
    app: Deployment
    ids: dict[str, int]


@pytest.fixture
def base(db: Database, tmp_path: Path) -> BaseModel:
    return make_base_model(db, tmp_path / "base", name="tiny-base")


def make_desk(db: Database, settings: Settings, base: BaseModel, root: Path) -> Desk:
    """A router app ``desk`` over an adapter (``support``), two bases and a fallback app."""
    user = make_user(db)
    version = make_adapter_version(db, user, base, fake_adapter_folder(root, "s"), name="kumo")
    made = {
        "support": make_deployment(
            db, user, settings, name="support", adapter_id=version.adapter_id, alias="champion"
        ),
        "legal": make_deployment(db, user, settings, name="legal", base_model_id=base.id),
        "local": make_deployment(db, user, settings, name="local", base_model_id=base.id),
    }
    made["general"] = make_deployment(
        db,
        user,
        settings,
        name="general",
        app={"type": "fallback", "members": [{"deployment": "legal"}, {"deployment": "local"}]},
    )
    app = make_deployment(
        db,
        user,
        settings,
        name="desk",
        app={
            "type": "router",
            "members": [
                {"deployment": "support", "description": EVIL},
                {"deployment": "legal", "name": "law", "description": "Contracts."},
                {"deployment": "general"},
            ],
            "rules": [
                {"member": "support", "keywords": ["返品", "refund"]},
                {"member": "law", "metadata": {"dept": "legal"}, "regex": "第[0-9]+条"},
            ],
            "semantic": {"threshold": 0.4},
            "default": "general",
            "system_prompt": "</textarea><b>bold</b>",
            "defaults": {"temperature": 0.3, "max_tokens": 256},
        },
    )
    return Desk(user, app, {name: row.id for name, row in made.items()})


@pytest.fixture
def desk(db: Database, settings: Settings, base: BaseModel, tmp_path: Path) -> Desk:
    return make_desk(db, settings, base, tmp_path)


# every page, both languages -------------------------------------------------------------

PAGES = [
    # path ({app} is the desk's id), catalog key whose text the page shows
    ("/apps", "apps.mine"),
    ("/apps/new", "apps.builder.create"),
    ("/apps/{app}", "apps.builder.save"),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(("path", "key"), PAGES, ids=[p[0] for p in PAGES])
def test_pages_render_in_both_languages(
    client: TestClient, db: Database, desk: Desk, path: str, key: str, lang: str
) -> None:
    with db.session() as session:
        accounts.update_profile(session, desk.user, locale=lang)
    sign_in(client, desk.user)
    text = page(client, path.format(app=desk.app.id))
    assert f'<html lang="{lang}"' in text
    assert text_of(lang, key) in text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, key) not in text
    assert f'aria-current="page" href="/apps">{text_of(lang, "nav.apps")}</a>' in text


@pytest.mark.parametrize("path", ["/apps", "/apps/new", "/apps/1"])
def test_signed_out_visitors_go_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


# the list ----------------------------------------------------------------------------------


def test_the_list_shows_apps_with_type_members_and_status(
    client: TestClient, db: Database, desk: Desk
) -> None:
    sign_in(client, desk.user)
    text = page(client, "/apps")
    assert f'href="/apps/{desk.app.id}"><code>desk</code>' in text
    assert f'href="/apps/{desk.ids["general"]}"><code>general</code>' in text
    assert 'data-app="{}"'.format(desk.ids["support"]) not in text  # a plain deployment
    row = re.search(rf'<tr role="row" data-app="{desk.app.id}">(.*?)</tr>', text, re.DOTALL)
    assert row
    cells = row.group(1)
    assert text_of("ja", "apps.type.router") in cells
    for member in ("support", "law", "general"):
        assert f'<code class="apps-member-name">{member}</code>' in cells
    assert text_of("ja", "apps.status.active") in cells
    assert "/playground?deployment=desk" in cells
    assert 'href="/apps/new"' in text


def test_the_list_without_deployments_says_to_deploy_first(
    client: TestClient, db: Database
) -> None:
    sign_in(client, make_user(db))
    text = page(client, "/apps")
    assert text_of("ja", "apps.deploy_first") in text
    assert 'href="/deploy"' in text
    builder = page(client, "/apps/new")
    assert 'id="app-form"' not in builder  # nothing to build from
    assert text_of("ja", "apps.deploy_first") in builder


# who may see an app ------------------------------------------------------------------------


def main_of(text: str) -> str:
    found = re.search(r"<main.*</main>", text, re.DOTALL)
    assert found
    return found.group(0)


def test_another_users_app_is_the_same_404_as_a_missing_one(
    client: TestClient, other_client: TestClient, db: Database, desk: Desk
) -> None:
    sign_in(client, desk.user)
    stranger = make_user(db)
    sign_in(other_client, stranger)
    theirs = other_client.get(f"/apps/{desk.app.id}", headers=HTML)
    missing = other_client.get("/apps/999999", headers=HTML)
    assert theirs.status_code == missing.status_code == 404
    assert text_of("ja", "error.title.404") in theirs.text
    shown = main_of(theirs.text)
    assert shown == main_of(missing.text)
    for private in ("desk", "support", "返品", "Contracts."):
        assert private not in shown
    assert "desk" not in page(other_client, "/apps")
    new = page(other_client, "/apps/new")
    assert "support" not in new  # the member choices are the viewer's own deployments only


def test_a_plain_deployment_or_an_impossible_id_is_a_404(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    for path in (f"/apps/{desk.ids['support']}", "/apps/0", "/apps/99999999999999999999"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert text_of("ja", "error.title.404") in response.text


# the builder -------------------------------------------------------------------------------


def _rows(text: str, kind: str) -> list[str]:
    return re.findall(rf'<li class="apps-row" data-{kind}>(.*?)</li>', text, re.DOTALL)


def test_the_builder_shows_the_spec_as_saved(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    text = page(client, f"/apps/{desk.app.id}")
    form, templates = text.split('<template id="member-template">', 1)
    assert f'data-app="{desk.app.id}"' in form
    assert 'name="name"' not in form  # the model id does not change once made
    assert '<input type="radio" name="type" value="router" checked>' in form

    members = _rows(form, "member")
    assert len(members) == 3
    assert '<option value="support" selected>support — kumo@champion</option>' in members[0]
    assert '<option value="legal" selected>legal — base:tiny-base</option>' in members[1]
    assert 'value="law"' in members[1]  # the name given in the app
    assert (
        'data-field="name" maxlength="64" autocomplete="off" spellcheck="false" value=""'
        in (members[2])
    )  # the default name (the deployment's) leaves the field empty
    assert "app (fallback): legal, local" in members[2]
    assert '<option value="desk"' not in form  # an app cannot be its own member
    assert "Contracts.</textarea>" in members[1]

    rules = _rows(form, "rule")
    assert len(rules) == 2
    assert '<option value="support" selected>' in rules[0]
    assert 'value="返品, refund"' in rules[0]
    assert '<option value="law" selected>' in rules[1]
    assert 'value="第[0-9]+条"' in rules[1]
    assert 'value="dept=legal"' in rules[1]

    assert 'id="semantic" name="semantic" checked' in form
    assert 'name="threshold" inputmode="decimal" autocomplete="off" value="0.4"' in form
    default = re.search(r'<select class="input" id="default-member".*?</select>', form, re.DOTALL)
    assert default
    assert '<option value="general" selected>general</option>' in default.group(0)
    assert 'name="temperature" inputmode="decimal" autocomplete="off" value="0.3"' in form
    assert 'name="top_p" inputmode="decimal" autocomplete="off" value=""' in form
    assert 'name="max_tokens" inputmode="numeric" autocomplete="off" value="256"' in form
    assert 'href="/playground?deployment=desk"' in text
    assert '"apps.js.not_saved"' in text  # the script's texts are on the page
    assert 'id="rule-template"' in templates


def test_user_text_is_escaped(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    text = page(client, f"/apps/{desk.app.id}")
    assert "<script>alert" not in text
    assert str(escape(EVIL)) in text  # the description, as Jinja escapes it
    assert "</textarea><b>bold</b>" not in text
    assert "&lt;/textarea&gt;&lt;b&gt;bold&lt;/b&gt;</textarea>" in text


def test_a_member_whose_deployment_was_deleted_stays_visible(
    client: TestClient, db: Database, desk: Desk
) -> None:
    with db.session() as session:
        row = session.get(Deployment, desk.ids["local"])
        session.delete(row)
    sign_in(client, desk.user)
    text = page(client, f"/apps/{desk.ids['general']}")
    missing = text_of("ja", "apps.member.missing", name="local")
    assert f'<option value="local" selected>{missing}</option>' in text


def test_the_new_app_builder_starts_with_one_member_row(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    text = page(client, "/apps/new")
    form = text.split('<template id="member-template">', 1)[0]
    assert 'id="app-name" name="name"' in form
    assert 'data-app=""' in form
    assert len(_rows(form, "member")) == 1
    assert "selected" not in _rows(form, "member")[0]
    assert '<input type="radio" name="type" value="router" checked>' in form
    for name in ("support", "legal", "local", "general", "desk"):
        assert f'<option value="{name}">' in form  # any deployment, apps too, may be a member


# traffic and quality ---------------------------------------------------------------------


def _trace(
    db: Database,
    desk: Desk,
    number: int,
    member: str,
    *,
    status: str = "ok",
    tokens: tuple[int, int] = (10, 20),
    latency: int = 100,
    rating: int | None = None,
) -> None:
    with db.session() as session:
        trace = Trace(
            id=f"chatcmpl-apps{number:06d}",
            owner_id=desk.user.id,
            deployment_id=desk.ids[member],
            app_id=desk.app.id,
            route={"member": member, "by": "rule"},
            source="api",
            endpoint="chat",
            model="desk",
            request={"messages": [{"role": "user", "content": "返品したい"}]},
            response="",
            status=status,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            latency_ms=latency,
        )
        session.add(trace)
        session.flush()
        if rating is not None:
            session.add(Feedback(trace_id=trace.id, owner_id=desk.user.id, rating=rating, tags=[]))


def test_the_members_table_shows_the_traces_numbers(
    client: TestClient, db: Database, desk: Desk
) -> None:
    _trace(db, desk, 1, "support", tokens=(1000, 234), latency=100, rating=1)
    _trace(db, desk, 2, "support", latency=300, rating=-1)
    _trace(db, desk, 3, "support", latency=200)
    _trace(db, desk, 4, "support", status="error", tokens=(5, 0), latency=9000)
    _trace(db, desk, 5, "local", tokens=(7, 8), latency=1500)  # through the fallback app
    sign_in(client, desk.user)
    text = page(client, f"/apps/{desk.app.id}")
    table = text.split('id="stats-heading"', 1)[1]
    support = re.search(r'<tr role="row" data-stats="support">(.*?)</tr>', table, re.DOTALL)
    local = re.search(r'<tr role="row" data-stats="local">(.*?)</tr>', table, re.DOTALL)
    assert support
    assert local
    cells = re.findall(r"<td[^>]*>(.*?)</td>", support.group(1), re.DOTALL)
    assert cells[:4] == ["3", "1", "1,299", text_of("ja", "apps.stats.ms", ms="200")]
    assert cells[4].startswith("<span>50% ")  # one of the two rated answers was bad
    assert text_of("ja", "apps.stats.rated", count=2) in cells[4]
    local_cells = re.findall(r"<td[^>]*>(.*?)</td>", local.group(1), re.DOTALL)
    assert local_cells == [
        "1",
        "0",
        "15",
        text_of("ja", "apps.stats.ms", ms="1,500"),
        "<span>—</span>",
    ]
    assert text_of("ja", "apps.stats.nested") in local.group(1)  # not a direct member
    assert text_of("ja", "apps.stats.nested") not in support.group(1)
    assert table.index('data-stats="support"') < table.index('data-stats="local"')


def test_an_app_without_traffic_says_so(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    text = page(client, f"/apps/{desk.app.id}")
    assert text_of("ja", "apps.stats.none", days=7) in text
    assert "data-stats=" not in text


def test_saved_says_so_once(client: TestClient, desk: Desk) -> None:
    sign_in(client, desk.user)
    assert text_of("ja", "apps.builder.saved") in page(client, f"/apps/{desk.app.id}?saved=1")
    assert text_of("ja", "apps.builder.saved") not in page(client, f"/apps/{desk.app.id}")
