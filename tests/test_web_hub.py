"""The hub pages (``/hub``, ``/hub/{id}``): both languages, sign-in required, another user's
private adapter a 404, a malicious model card shown as text, star and fork forms (CSRF
checked), a bad filter shown on the page, and the links in from the adapters page, the
dashboard and the adapter page (whose settings choose language, task and a named licence)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from loraloop.catalog import facets, hub
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, AdapterStar, BaseModel, User
from loraloop.identity import accounts
from loraloop.web import i18n, pages_hub
from tests.factories import make_base_model, make_user, sign_in
from tests.test_hub import publish

HTML = {"accept": "text/html,application/xhtml+xml"}

EVIL_CARD = """---
license: mit
language: <img src=x onerror=alert(1)>
---
# Kumo <script>alert("card")</script>

<iframe src="https://evil.example"></iframe>
[click](javascript:alert(1)) ![x](https://evil.example/pixel.png)
"""


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def page(client: TestClient, path: str, status: int = 200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.text[:500]
    return response.text


@pytest.fixture
def base(db: Database, tmp_path: Path) -> BaseModel:
    return make_base_model(db, tmp_path / "base", name="tiny-base")


@pytest.fixture
def shared(db: Database, tmp_path: Path, base: BaseModel) -> dict[str, Any]:
    owner = make_user(db)
    public = publish(
        db,
        owner,
        base,
        tmp_path,
        "kumo-coffee",
        card=EVIL_CARD,
        language="ja",
        task="chat",
        licence="cc-by-sa-4.0",
        description="Answers about the Kumo menu",
    )
    private = publish(db, owner, base, tmp_path, "secret-plan", visibility="private")
    return {"owner": owner, "public": public.adapter_id, "private": private.adapter_id}


def signed_in(client: TestClient, db: Database, lang: str = "en") -> tuple[User, str]:
    user = make_user(db)
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)
    return user, sign_in(client, user)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(
    ("path", "key"), [("/hub", "hub.heading"), ("card", "hub.card.model_card")], ids=["hub", "card"]
)
def test_pages_render_in_both_languages(
    client: TestClient, db: Database, shared: dict[str, Any], lang: str, path: str, key: str
) -> None:
    signed_in(client, db, lang)
    text = page(client, f"/hub/{shared['public']}" if path == "card" else path)
    assert f'<html lang="{lang}"' in text
    assert text_of(lang, key) in text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, key) not in text
    assert 'aria-current="page"' in text
    assert text_of(lang, "hub.language.ja") in text
    assert "Creative Commons Attribution-ShareAlike 4.0" in text  # the licence's name


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_facet_has_a_label_in_both_languages(lang: str) -> None:
    texts = i18n.catalog(lang)
    keys = [f"hub.language.{c}" for c in facets.LANGUAGES] + [f"hub.task.{c}" for c in facets.TASKS]
    keys += [f"hub.sort.{s}" for s in hub.SORTS]
    assert not [k for k in keys if k not in texts]


@pytest.mark.parametrize("path", ["/hub", "/hub/1"])
def test_signed_out_visitors_go_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/signin")


def test_a_malicious_model_card_is_text(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    signed_in(client, db)
    text = page(client, f"/hub/{shared['public']}")
    for tag in ("<script>alert", "<iframe", "<img", 'href="javascript', 'src="https://evil'):
        assert tag not in text
    readme = text[text.index("data-readme") :].split("</div>")[0]
    assert "<h3>Kumo &lt;script&gt;alert(&quot;card&quot;)&lt;/script&gt;</h3>" in readme
    assert "&lt;iframe src=&quot;https://evil.example&quot;&gt;" in readme
    assert "[click](javascript:alert(1))" in readme  # a link stays its text, never a link
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the front matter field, escaped


def test_another_users_private_card_is_missing(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    _, token = signed_in(client, db)
    theirs = client.get(f"/hub/{shared['private']}", headers=HTML)
    missing = client.get("/hub/999999", headers=HTML)
    assert theirs.status_code == missing.status_code == 404
    assert "secret-plan" not in theirs.text
    assert "secret-plan" not in page(client, "/hub?q=secret")
    for form in ("star", "fork"):
        refused = client.post(
            f"/hub/{shared['private']}/{form}", data={"csrf_token": token}, headers=HTML
        )
        assert refused.status_code == 404


def test_search_page_filters_and_shows_a_bad_filter(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    signed_in(client, db)
    assert "kumo-coffee" in page(client, "/hub?language=ja&task=chat")
    assert "kumo-coffee" not in page(client, "/hub?language=en")
    bad = page(client, "/hub?language=klingon&sort=random", status=400)
    assert "language &#39;klingon&#39; must be one of ja, en" in bad
    assert "sort &#39;random&#39; must be one of stars, recent, name" in bad
    assert 'role="alert"' in bad


def test_star_form_toggles_and_goes_back(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    user, token = signed_in(client, db)
    adapter_id = shared["public"]
    for _ in range(2):  # a second star is the same star
        done = client.post(
            f"/hub/{adapter_id}/star",
            data={"csrf_token": token, "starred": "true", "next": "/hub?q=kumo"},
            headers=HTML,
            follow_redirects=False,
        )
        assert (done.status_code, done.headers["location"]) == (303, "/hub?q=kumo")
    with db.session() as session:
        stars = list(
            session.scalars(select(AdapterStar).where(AdapterStar.adapter_id == adapter_id))
        )
    assert [s.user_id for s in stars] == [user.id]
    assert 'aria-pressed="true"' in page(client, f"/hub/{adapter_id}")
    client.post(f"/hub/{adapter_id}/star", data={"csrf_token": token, "starred": "false"})
    assert 'aria-pressed="false"' in page(client, f"/hub/{adapter_id}")
    evil = client.post(
        f"/hub/{adapter_id}/star",
        data={"starred": "true", "next": "//evil.example"},
        headers=HTML,
        follow_redirects=False,
    )
    assert evil.status_code == 403  # no CSRF token


def test_fork_form_makes_a_private_copy_and_shows_its_lineage(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    user, token = signed_in(client, db)
    made = client.post(
        f"/hub/{shared['public']}/fork",
        data={"csrf_token": token, "version": "1", "name": ""},
        headers=HTML,
        follow_redirects=False,
    )
    assert made.status_code == 303
    location = made.headers["location"]
    assert location.endswith("?forked=1")
    with db.session() as session:
        copy = session.scalar(select(Adapter).where(Adapter.owner_id == user.id))
    assert copy is not None
    assert (copy.visibility, copy.name, copy.licence) == ("private", "kumo-coffee", "cc-by-sa-4.0")
    text = page(client, location)
    assert text_of("en", "hub.fork.done") in text
    assert f'href="/hub/{shared["public"]}"' in text  # the lineage links its source
    assert text_of("en", "hub.card.private") in text
    managed = page(client, f"/adapters/{copy.id}")  # the catalog's page shows it too
    assert "data-lineage" in managed
    assert f'href="/hub/{shared["public"]}"' in managed
    again = client.post(
        f"/hub/{shared['public']}/fork",
        data={"csrf_token": token, "version": "1", "name": "kumo-coffee"},
        headers=HTML,
    )
    assert again.status_code == 409
    assert "already have an adapter named kumo-coffee" in again.text  # beside the form


def test_links_into_the_hub_and_the_settings_form(
    client: TestClient, db: Database, shared: dict[str, Any]
) -> None:
    sign_in(client, shared["owner"])
    link = 'href="/hub"'
    assert link in page(client, "/adapters")
    assert link in page(client, "/")
    adapter = page(client, f"/adapters/{shared['public']}")
    assert f'href="/hub/{shared["public"]}"' in adapter
    assert '<select class="input" id="language" name="language">' in adapter
    assert '<option value="ja" selected>' in adapter
    assert '<option value="chat" selected>' in adapter
    assert (
        '<option value="cc-by-sa-4.0" selected>Creative Commons Attribution-ShareAlike 4.0'
        in adapter
    )
    assert '<option value="openrail">OpenRAIL</option>' in adapter


def test_results_come_a_page_at_a_time(
    client: TestClient, db: Database, shared: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_hub, "PAGE_SIZE", 1)
    signed_in(client, db)
    with db.session() as session:
        row = session.get(Adapter, shared["private"])
        assert row is not None
        row.visibility = "public"  # two public adapters: two pages of one
    first = page(client, "/hub?sort=name")
    assert "kumo-coffee" in first
    assert "secret-plan" not in first
    query = "q=&amp;base_model_id=&amp;language=&amp;task=&amp;licence=&amp;sort=name"
    assert f'rel="next" href="/hub?{query}&amp;page=2"' in first
    second = page(client, "/hub?sort=name&page=2")
    assert "secret-plan" in second
    assert 'rel="prev"' in second
    assert 'rel="next"' not in second
