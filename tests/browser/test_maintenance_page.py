"""The maintenance page in a real browser: reached from the adapter page, its charts and the
users' questions (escaped) are on the page; a pending correction is accepted and another
rejected with a reason; the policy is saved (a bad value first shows the server's error) and
kept after a reload; a refused gate decision is overridden with a reason and the champion
changes. Screenshots in both themes at 1280 and 375 px; a phone never scrolls sideways."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, expect
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import RetrainPolicy, TrainingCandidate
from loraloop.web import i18n
from tests.browser.test_catalog_pages import sign_in
from tests.browser.test_journey import Watch
from tests.test_web_maintenance import SCRIPT, maintenance_world, tiny  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

JA = i18n.translator("ja")
GOOD = '{"prompt": "おすすめは？", "expected": "月見"}'


@pytest.fixture
def watched(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    p = context.new_page()
    watch = Watch(p, live_server)
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:  # alert(), confirm(): the page must never need them
        dialogs.append(dialog.message)
        dialog.dismiss()

    p.on("dialog", refuse)
    yield p, watch
    assert not dialogs, f"the page opened a browser dialog: {dialogs}"
    assert not watch.problems, watch.problems


def test_the_owner_reviews_saves_and_overrides(
    watched: tuple[Page, Watch],
    live_server: str,
    db: Database,
    settings: Settings,
    tiny: dict[str, Path],  # noqa: F811 - the fixture imported above
    screenshots: Path,
) -> None:
    p, watch = watched
    world = maintenance_world(db, settings, tiny)
    sign_in(p, world.user)
    p.goto(f"/adapters/{world.adapter_id}")
    p.get_by_role("link", name=JA("maintenance.link")).click()
    expect(p).to_have_url(f"{live_server}/adapters/{world.adapter_id}/maintenance")
    expect(p.get_by_role("heading", level=1)).to_have_text(
        JA("maintenance.heading", name="kumo-coffee")
    )

    # the charts and what users ask, as text (the <script> is shown, never run)
    expect(p.locator("#score-chart .mnt-series__line")).to_have_count(2)
    expect(p.locator("#drift-chart .mnt-alarm")).to_have_count(1)
    expect(p.get_by_role("img", name=JA("maintenance.scores.title"))).to_be_visible()
    clusters = p.locator("[data-cluster]")
    expect(clusters).to_have_count(2)
    expect(clusters.first).to_contain_text(SCRIPT)
    champion = p.locator('[data-alias="champion"]')
    expect(champion).to_have_text("v2")
    p.screenshot(path=screenshots / "maintenance-ja-light-1280.png", full_page=True)

    # corrections: accept one, reject the other (a reason is required)
    first, second = world.candidates
    items = p.locator("li[data-candidate]")
    expect(items).to_have_count(2)
    p.locator(f'li[data-candidate="{first}"]').get_by_role(
        "button", name=JA("maintenance.candidates.accept"), exact=True
    ).click()
    expect(items).to_have_count(1)
    expect(p.locator("#candidates-count")).to_have_text("1")
    p.locator(f'li[data-candidate="{second}"]').get_by_role(
        "button", name=JA("maintenance.candidates.reject")
    ).click()
    dialog = p.get_by_role("dialog")
    dialog.get_by_role("button", name=JA("maintenance.js.reject_ok")).click()
    expect(dialog.get_by_role("alert")).to_have_text(JA("maintenance.dialog.reason_required"))
    dialog.get_by_label(JA("maintenance.dialog.reason")).fill("価格が古い")
    dialog.get_by_role("button", name=JA("maintenance.js.reject_ok")).click()
    expect(items).to_have_count(0)
    expect(p.locator("#candidates-empty")).to_be_visible()
    with db.session() as session:
        decided = {
            c.id: (c.status, c.reason)
            for c in session.scalars(select(TrainingCandidate).order_by(TrainingCandidate.id))
        }
    assert decided == {first: ("accepted", None), second: ("rejected", "価格が古い")}

    # the policy: a bad value shows the server's error, a good one is kept after a reload
    form = p.locator("#policy-form")
    form.get_by_label(JA("maintenance.mode.auto"), exact=True).check()
    form.get_by_label(JA("maintenance.policy.on_quality")).uncheck()
    form.get_by_label(JA("maintenance.policy.min_new_examples")).fill("50")
    form.get_by_label(JA("maintenance.policy.margin"), exact=True).fill("2")
    form.get_by_role("button", name=JA("catalog.common.save")).click()
    expect(form.get_by_role("alert")).to_contain_text("margin")
    expect(form.get_by_label(JA("maintenance.policy.margin"), exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    assert any("400" in problem for problem in watch.problems), watch.problems
    watch.problems.clear()  # the refused value is the point here
    form.get_by_label(JA("maintenance.policy.margin"), exact=True).fill("0.05")
    form.get_by_role("button", name=JA("catalog.common.save")).click()
    expect(form.locator("[data-progress]")).to_have_text(JA("maintenance.js.saved"))
    expect(form.get_by_role("alert")).to_be_hidden()
    p.reload()
    expect(form.get_by_label(JA("maintenance.mode.auto"), exact=True)).to_be_checked()
    expect(form.get_by_label(JA("maintenance.policy.on_quality"))).not_to_be_checked()
    expect(form.get_by_label(JA("maintenance.policy.on_drift"))).to_be_checked()
    expect(form.get_by_label(JA("maintenance.policy.min_new_examples"))).to_have_value("50")
    expect(form.get_by_label(JA("maintenance.policy.margin"), exact=True)).to_have_value("0.05")
    with db.session() as session:
        stored = session.get(RetrainPolicy, world.adapter_id)
        assert stored is not None
        assert (stored.mode, stored.margin, stored.min_new_examples) == ("auto", 0.05, 50)

    # override the refused decision: v3 becomes the champion, the reason is on the page
    decision = p.locator(f"#decision-{world.refused_decision}")
    decision.get_by_role("button", name=JA("maintenance.decisions.promote", version=3)).click()
    dialog.get_by_label(JA("maintenance.dialog.reason")).fill("敬語の評価ケースが古い")
    dialog.get_by_role("button", name=JA("maintenance.js.override_ok")).click()
    expect(champion).to_have_text("v3")
    expect(p.locator("#decisions")).to_contain_text("敬語の評価ケースが古い")
    expect(p.locator("#alias-history tbody tr").first).to_contain_text(
        JA("maintenance.cause.override")
    )


def test_suites_runs_and_rollback(
    watched: tuple[Page, Watch],
    db: Database,
    settings: Settings,
    tiny: dict[str, Path],  # noqa: F811 - the fixture imported above
) -> None:
    p, watch = watched
    world = maintenance_world(db, settings, tiny)
    sign_in(p, world.user)
    p.goto(f"/adapters/{world.adapter_id}/maintenance")

    # cases as JSON Lines: a line that is not JSON is caught here, a bad case by the server
    form = p.locator("#suite-form")
    form.get_by_label(JA("maintenance.suites.form.name")).fill("メニュー")
    cases = form.get_by_label(JA("maintenance.suites.form.cases"))
    cases.fill(GOOD + '\n{"prompt": ')
    form.get_by_role("button", name=JA("maintenance.suites.form.submit")).click()
    expect(form.get_by_role("alert")).to_have_text(JA("maintenance.js.cases_bad_json", line=2))
    cases.fill(GOOD + '\n\n{"prompt": "ケーキは？"}')
    form.get_by_role("button", name=JA("maintenance.suites.form.submit")).click()
    expect(form.get_by_role("alert")).to_contain_text("case 2")
    assert any("400" in problem for problem in watch.problems), watch.problems
    watch.problems.clear()  # the refused case is the point here
    expect(form.get_by_label(JA("maintenance.suites.form.target"))).to_have_value(
        re.compile(r"\d+")
    )
    cases.fill(GOOD + '\n{"prompt": "ケーキは？", "expected": "チーズ"}')
    form.get_by_role("button", name=JA("maintenance.suites.form.submit")).click()
    expect(p.locator("#suite-table tr", has_text="メニュー")).to_contain_text("2")

    # evaluate the champion: a job to follow
    p.get_by_role("button", name=JA("maintenance.suites.evaluate", version=2)).click()
    status = p.locator("#mnt-status")
    expect(status).to_contain_text(JA("maintenance.js.view_job"))
    expect(status.get_by_role("link")).to_have_attribute("href", re.compile(r"^/jobs/\d+$"))

    # approve the proposed run; a second retraining is refused while it is open
    run = p.locator("#retrain-runs tr", has_text=JA("maintenance.status.proposed"))
    run.get_by_role("button", name=JA("maintenance.runs.approve")).click()
    expect(p.locator("#retrain-runs")).to_contain_text(JA("maintenance.status.approved"))
    p.get_by_role("button", name=JA("maintenance.retrain_now")).click()
    expect(p.locator("#mnt-error")).to_contain_text("still approved")
    watch.problems.clear()  # the 409 is expected

    # roll back to the previous champion, after saying yes
    p.get_by_role("button", name=JA("maintenance.rollback.submit")).click()
    dialog = p.get_by_role("dialog")
    expect(dialog).to_contain_text(
        JA("maintenance.js.rollback_body", target=JA("maintenance.js.rollback_previous"))
    )
    dialog.get_by_role("button", name=JA("catalog.common.cancel")).click()
    expect(p.locator('[data-alias="champion"]')).to_have_text("v2")
    p.get_by_role("button", name=JA("maintenance.rollback.submit")).click()
    dialog.get_by_role("button", name=JA("maintenance.js.rollback_ok")).click()
    expect(p.locator('[data-alias="champion"]')).to_have_text("v1")


SIZES = [("desktop", 1280), ("phone", 375)]


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("size", "width"), SIZES, ids=[s[0] for s in SIZES])
def test_screenshots_in_both_themes_fit_the_screen(
    watched: tuple[Page, Watch],
    context: BrowserContext,
    live_server: str,
    db: Database,
    settings: Settings,
    tiny: dict[str, Path],  # noqa: F811 - the fixture imported above
    screenshots: Path,
    theme: str,
    size: str,
    width: int,
) -> None:
    p, _ = watched
    world = maintenance_world(db, settings, tiny)
    context.add_cookies([{"name": "loraloop_theme", "value": theme, "url": live_server}])
    p.set_viewport_size({"width": width, "height": 900})
    sign_in(p, world.user)
    p.goto(f"/adapters/{world.adapter_id}/maintenance")
    expect(p.locator("html")).to_have_attribute("data-theme", theme)
    expect(p.locator("#drift-chart")).to_be_visible()
    wide = p.evaluate("document.documentElement.scrollWidth")
    assert wide <= width, f"the maintenance page scrolls sideways at {width}px ({wide}px wide)"
    p.screenshot(path=screenshots / f"maintenance-{theme}-{width}.png", full_page=True)
