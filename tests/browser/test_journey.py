"""A person's first visit, in a real browser: sign-in page in Japanese, sign up, dashboard,
switch to English, sign out, sign in again — still English. Screenshots land in
``.artifacts/screenshots/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Request, Response, expect
from sqlalchemy import select

from loraloop.db.engine import Database
from loraloop.db.tables import User
from loraloop.web import i18n
from tests.factories import make_job

pytestmark = pytest.mark.browser

JA, EN = i18n.translator("ja"), i18n.translator("en")
EMAIL = "hanako@example.com"
NAME = "山田 花子"
PASSWORD = "correct horse battery staple"


class Watch:
    """What a page did that a person would notice: script errors, failed loads, requests
    that left the test server."""

    def __init__(self, page: Page, base: str):
        self.base = base
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("request", self._request)

    def _console(self, message: object) -> None:
        kind = getattr(message, "type", "")
        if kind == "error":
            self.problems.append(f"console error: {getattr(message, 'text', '')}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} for {response.url}")

    def _request(self, request: Request) -> None:
        if not request.url.startswith((self.base + "/", "data:")):
            self.problems.append(f"request off the test server: {request.url}")


@pytest.fixture
def page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    page = context.new_page()
    watch = Watch(page, live_server)
    yield page, watch
    assert not watch.problems, watch.problems


def _in(page: Page, lang: str) -> None:
    expect(page.locator("html")).to_have_attribute("lang", lang)


def test_first_visit_sign_up_switch_language_sign_in_again(
    page: tuple[Page, Watch], live_server: str, screenshots: Path
) -> None:
    p, _ = page
    p.goto("/")
    expect(p).to_have_url(f"{live_server}/signin")
    _in(p, "ja")
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("signin.title"))
    p.screenshot(path=screenshots / "signin-ja.png", full_page=True)

    p.get_by_role("link", name=JA("signin.to_signup")).click()
    expect(p).to_have_url(f"{live_server}/signup")
    p.get_by_label(JA("field.email")).fill(EMAIL)
    p.get_by_label(JA("field.display_name")).fill(NAME)
    p.get_by_label(JA("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=JA("signup.submit")).click()

    expect(p).to_have_url(f"{live_server}/")
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("dashboard.welcome", name=NAME))
    p.screenshot(path=screenshots / "dashboard-ja.png", full_page=True)

    p.get_by_role("button", name="English").click()
    expect(p).to_have_url(f"{live_server}/")
    _in(p, "en")
    expect(p.get_by_role("heading", level=1)).to_have_text(EN("dashboard.welcome", name=NAME))
    expect(p.get_by_role("heading", name=EN("dashboard.jobs.heading"))).to_be_visible()
    p.screenshot(path=screenshots / "dashboard-en.png", full_page=True)

    p.get_by_role("button", name=EN("nav.sign_out")).click()
    expect(p).to_have_url(f"{live_server}/signin")
    _in(p, "en")
    p.get_by_label(EN("field.email")).fill(EMAIL)
    p.get_by_label(EN("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=EN("signin.submit")).click()

    expect(p).to_have_url(f"{live_server}/")
    _in(p, "en")
    expect(p.get_by_role("heading", level=1)).to_have_text(EN("dashboard.welcome", name=NAME))


def test_wrong_password_shows_the_message_in_japanese(
    page: tuple[Page, Watch], live_server: str
) -> None:
    p, watch = page
    p.goto("/signin")
    p.get_by_label(JA("field.email")).fill(EMAIL)
    p.get_by_label(JA("field.password")).fill("not the password")
    p.get_by_role("button", name=JA("signin.submit")).click()
    expect(p.get_by_role("alert")).to_have_text(JA("error.wrong_credentials"))
    expect(p.get_by_label(JA("field.email"))).to_have_value(EMAIL)
    assert f"401 for {live_server}/signin" in watch.problems
    assert all("401" in problem for problem in watch.problems), watch.problems
    watch.problems.clear()  # the 401 is the point of this test


@pytest.mark.parametrize("path", ["/signin", "/signup", "/no/such/page"])
def test_pages_fit_a_small_phone(
    context: BrowserContext, live_server: str, screenshots: Path, path: str
) -> None:
    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 720})
    phone.goto(path)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} scrolls sideways at 375px ({width}px wide)"
    name = path.strip("/").replace("/", "-")
    phone.screenshot(path=screenshots / f"{name}-ja-375.png", full_page=True)


def test_dashboard_fits_a_small_phone(
    page: tuple[Page, Watch], live_server: str, screenshots: Path, db: Database
) -> None:
    p, _ = page
    p.set_viewport_size({"width": 375, "height": 720})
    p.goto("/signup")
    p.get_by_label(JA("field.email")).fill(EMAIL)
    p.get_by_label(JA("field.display_name")).fill(NAME)
    p.get_by_label(JA("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=JA("signup.submit")).click()
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("dashboard.welcome", name=NAME))
    with db.session() as session:
        me = session.scalars(select(User).where(User.email == EMAIL)).one()
    for _ in range(3):
        make_job(db, me)
    p.reload()
    expect(p.get_by_role("row")).to_have_count(4)
    expect(p.get_by_role("cell", name=JA("job.status.queued"))).to_have_count(3)
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the dashboard scrolls sideways at 375px ({width}px wide)"
    p.screenshot(path=screenshots / "dashboard-ja-375.png", full_page=True)
