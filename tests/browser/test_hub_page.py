"""The hub in a real browser, in Japanese: from the adapters page to the hub, a search with a
filter, a star (the count and the pressed state change), the card with its model card and
live quality, and a fork that lands on the forker's private copy with its lineage; the pages
are screenshotted (``hub.png`` is the search) and must not scroll sideways on a phone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from loraloop.db.engine import Database
from loraloop.db.tables import BaseModel
from loraloop.web import i18n
from tests.browser.test_journey import Watch
from tests.factories import PASSWORD, make_base_model, make_user
from tests.test_hub import give_stars, publish

pytestmark = pytest.mark.browser

JA = i18n.translator("ja")
CARD = """---
license: apache-2.0
language: ja
---
# 雲珈琲のメニュー案内

雲珈琲のメニュー、価格、営業時間に日本語で答えます。

- ブレンドの違いを説明します
- アレルギー表示を案内します
"""


@pytest.fixture
def page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    p = context.new_page()
    watch = Watch(p, live_server)
    yield p, watch
    assert not watch.problems, watch.problems


def _world(db: Database, tmp_path: Path) -> dict[str, int]:
    base: BaseModel = make_base_model(db, tmp_path / "base", name="SmolLM2-135M-Instruct")
    other = make_base_model(db, tmp_path / "other", name="llm-jp-3-150m-instruct3")
    owner = make_user(db, email="kumo@example.com")
    made = {
        "kumo": publish(
            db,
            owner,
            base,
            tmp_path,
            "kumo-coffee-guide",
            card=CARD,
            language="ja",
            task="chat",
            licence="apache-2.0",
            description="雲珈琲のメニュー・価格・営業時間に答えるアダプター",
        ),
        "ruling": publish(
            db,
            owner,
            other,
            tmp_path,
            "court-ruling-summary",
            language="ja",
            task="summarization",
            licence="cc-by-4.0",
            description="判決文を三行で要約します",
        ),
        "translate": publish(
            db,
            owner,
            base,
            tmp_path,
            "coffee-menu-en",
            language="en",
            task="translation",
            licence="mit",
            description="Translates coffee menus from Japanese to English",
        ),
        "sql": publish(
            db,
            owner,
            other,
            tmp_path,
            "sql-helper",
            language="multilingual",
            task="code",
            licence="openrail",
            description="Writes SQL for small shop databases",
        ),
    }
    give_stars(db, made["ruling"].adapter_id, 3)
    give_stars(db, made["kumo"].adapter_id, 1)
    return {name: version.adapter_id for name, version in made.items()}


def _sign_in(p: Page, email: str) -> None:
    p.goto("/signin")
    p.get_by_label(JA("field.email")).fill(email)
    p.get_by_label(JA("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=JA("signin.submit")).click()
    expect(p.get_by_role("heading", level=1)).to_be_visible()


def _fits(p: Page, width: int) -> None:
    wide = p.evaluate("document.documentElement.scrollWidth")
    assert wide <= width, f"{p.url} scrolls sideways at {width}px ({wide}px wide)"


def test_search_star_and_fork(
    page: tuple[Page, Watch], db: Database, tmp_path: Path, screenshots: Path, live_server: str
) -> None:
    p, _ = page
    ids = _world(db, tmp_path)
    me = make_user(db, email="hanako@example.com")
    _sign_in(p, me.email)

    # from the adapters page into the hub: everything public, most stars first
    p.goto("/adapters")
    p.locator("main").get_by_role("link", name=JA("hub.link")).first.click()
    expect(p).to_have_url(f"{live_server}/hub")
    results = p.locator(".hub-result")
    expect(results).to_have_count(4)
    expect(results.first).to_contain_text("court-ruling-summary")

    # a search with a filter
    p.get_by_label(JA("hub.search.q"), exact=True).fill("珈琲")
    p.get_by_label(JA("hub.filter.language"), exact=True).select_option("ja")
    p.get_by_role("button", name=JA("hub.search.submit")).click()
    expect(p.get_by_role("heading", name=JA("hub.results", count=1))).to_be_visible()
    expect(results).to_have_count(1)
    kumo = results.first
    expect(kumo).to_contain_text("kumo-coffee-guide")
    expect(kumo).to_contain_text(JA("hub.task.chat"))
    expect(kumo).to_contain_text("Apache License 2.0")

    # a star: the page comes back to the same search, counted and pressed
    star = kumo.get_by_role("button", name=JA("hub.star.star", name="kumo-coffee-guide"))
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    expect(p).to_have_url(
        f"{live_server}/hub?q=%E7%8F%88%E7%90%B2&base_model_id=&language=ja&task=&licence=&sort=stars"
    )
    pressed = results.first.get_by_role(
        "button", name=JA("hub.star.unstar", name="kumo-coffee-guide")
    )
    expect(pressed).to_have_attribute("aria-pressed", "true")
    expect(pressed.locator("[data-stars]")).to_have_text("2")
    p.screenshot(path=screenshots / "hub-search.png", full_page=True)

    # without the filters: every public adapter again, mine starred
    p.get_by_role("link", name=JA("hub.search.clear")).click()
    expect(results).to_have_count(4)
    kumo = results.filter(has_text="kumo-coffee-guide")
    expect(kumo.get_by_role("button", pressed=True)).to_have_count(1)
    expect(results.get_by_role("button", pressed=True)).to_have_count(1)
    p.screenshot(path=screenshots / "hub.png", full_page=True)

    # the card: model card rendered, quality and people sections, use and deploy links
    kumo.get_by_role("link", name="kumo-coffee-guide").click()
    expect(p).to_have_url(f"{live_server}/hub/{ids['kumo']}")
    expect(p.get_by_role("heading", level=1)).to_have_text("kumo-coffee-guide")
    expect(p.locator("[data-readme] h3")).to_have_text("雲珈琲のメニュー案内")
    expect(p.get_by_role("heading", name=JA("hub.quality.heading"))).to_be_visible()
    expect(p.get_by_role("link", name=JA("hub.card.use"))).to_have_attribute(
        "href", f"/playground?adapter_id={ids['kumo']}&version=1"
    )
    expect(p.get_by_role("link", name=JA("hub.card.deploy"))).to_have_attribute(
        "href", f"/deploy?adapter_id={ids['kumo']}&version=1"
    )
    p.screenshot(path=screenshots / "hub-card.png", full_page=True)

    # the fork: a private copy of mine, its lineage on its card
    p.get_by_label(JA("hub.fork.name")).fill("my-kumo")
    p.get_by_role("button", name=JA("hub.fork.submit")).click()
    expect(p.get_by_role("status").filter(has_text=JA("hub.fork.done"))).to_be_visible()
    expect(p.get_by_role("heading", level=1)).to_have_text("my-kumo")
    lineage = p.locator("[data-lineage]")
    expect(lineage).to_contain_text(JA("hub.forked_from"))
    expect(lineage.get_by_role("link")).to_have_attribute("href", f"/hub/{ids['kumo']}")
    expect(p.get_by_text(JA("hub.card.private"))).to_be_visible()
    expect(p.locator("[data-readme] h3")).to_have_text("雲珈琲のメニュー案内")  # same files
    p.screenshot(path=screenshots / "hub-fork.png", full_page=True)

    # on a phone nothing scrolls sideways
    p.set_viewport_size({"width": 375, "height": 800})
    for path in ("/hub", f"/hub/{ids['kumo']}"):
        p.goto(path)
        _fits(p, 375)
    p.screenshot(path=screenshots / "hub-375.png", full_page=True)
