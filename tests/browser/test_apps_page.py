"""The apps builder in a real browser: a router with two members and a keyword rule built
through the page (rows added, a member renamed and moved by keyboard), saved, and kept after a
reload; a bad spec shows every problem the server found; "Try it in the playground" opens the
playground on the app, whose answer says which member answered and why; and screenshots in
both themes on a laptop and a phone (``.artifacts/screenshots/``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Deployment, Feedback, Trace, User
from loraloop.testing import make_tiny_model
from loraloop.web import i18n
from tests.browser.test_journey import Watch
from tests.factories import (
    PASSWORD,
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_user,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

JA = i18n.translator("ja")
STREAM_SECONDS = 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("apps-models") / "base", hidden=32)


@dataclass
class World:
    user: User
    ids: dict[str, int]


@pytest.fixture
def world(db: Database, settings: Settings, tiny: Path) -> World:
    """Two deployments of the tiny base to build apps from: ``support`` and ``legal``."""
    user = make_user(db, email="hanako@example.com")
    base = make_base_model(db, tiny, name="tiny-base")
    made = {
        name: make_deployment(db, user, settings, name=name, base_model_id=base.id)
        for name in ("support", "legal")
    }
    return World(user, {name: row.id for name, row in made.items()})


@pytest.fixture
def page(context: BrowserContext, live_server: str, world: World) -> Iterator[tuple[Page, Watch]]:
    signed = context.request.post(
        "/api/auth/signin", data={"email": world.user.email, "password": PASSWORD}
    )
    assert signed.ok, signed.text()
    p = context.new_page()
    watch = Watch(p, live_server)
    yield p, watch
    assert not watch.problems, watch.problems


def member(p: Page, number: int) -> Locator:
    return p.locator("[data-member]").nth(number - 1)


def rule(p: Page, number: int) -> Locator:
    return p.locator("[data-rule]").nth(number - 1)


def spec_of(db: Database, name: str) -> dict[str, object]:
    with db.session() as session:
        row = session.query(Deployment).filter_by(name=name).one()
        assert row.app is not None
        return dict(row.app)


def save(p: Page, label: str) -> None:
    p.get_by_role("button", name=JA(label), exact=True).click()


# building ----------------------------------------------------------------------------------


def test_build_a_router_save_reload_and_edit(
    page: tuple[Page, Watch], db: Database, live_server: str
) -> None:
    p, _ = page
    p.goto("/apps")
    expect(p.locator("nav .nav__link[aria-current=page]")).to_have_text(JA("nav.apps"))
    p.locator("main").get_by_role("link", name=JA("apps.new"), exact=True).click()
    expect(p).to_have_url(f"{live_server}/apps/new")

    p.get_by_label(JA("apps.builder.name"), exact=True).fill("desk")
    expect(p.get_by_role("radio", name=JA("apps.type.router"))).to_be_checked()
    first = member(p, 1)
    expect(first.get_by_role("group", name=JA("apps.js.member_legend", number=1))).to_be_visible()
    first.get_by_label(JA("apps.member.deployment")).select_option("support")
    first.get_by_label(JA("apps.member.description")).fill("返品、返金、配送のこと")
    p.get_by_role("button", name=JA("apps.builder.add_member")).click()
    second = member(p, 2)
    expect(second.get_by_label(JA("apps.member.deployment"))).to_be_focused()
    second.get_by_label(JA("apps.member.deployment")).select_option("legal")

    expect(p.get_by_text(JA("apps.builder.no_rules"))).to_be_visible()
    p.get_by_role("button", name=JA("apps.builder.add_rule")).click()
    expect(p.get_by_text(JA("apps.builder.no_rules"))).to_be_hidden()
    rule(p, 1).get_by_label(JA("apps.rule.member")).select_option("support")
    rule(p, 1).get_by_label(JA("apps.rule.keywords")).fill("返品、 返金")
    p.get_by_label(JA("apps.builder.default"), exact=True).select_option("legal")
    p.get_by_label(JA("apps.builder.semantic"), exact=True).check()  # threshold left empty
    p.get_by_label(JA("apps.builder.defaults.max_tokens"), exact=True).fill("8")
    save(p, "apps.builder.create")

    expect(p.locator("[data-saved]")).to_have_text(JA("apps.builder.saved"))
    app_id = spec_id(db, "desk")
    expect(p).to_have_url(f"{live_server}/apps/{app_id}")  # "saved" is said once
    assert spec_of(db, "desk") == {
        "type": "router",
        "members": [
            {"deployment": "support", "name": "support", "description": "返品、返金、配送のこと"},
            {"deployment": "legal", "name": "legal"},
        ],
        "rules": [{"member": "support", "keywords": ["返品", "返金"]}],
        "semantic": {"threshold": 0.35},  # the service's default
        "default": "legal",
        "defaults": {"max_tokens": 8},
    }

    p.reload()
    expect(p.get_by_label(JA("apps.builder.semantic"), exact=True)).to_be_checked()
    expect(p.get_by_label(JA("apps.builder.threshold"), exact=True)).to_have_value("0.35")
    expect(p.locator("[data-saved]")).to_have_count(0)
    expect(p.locator("[data-member]")).to_have_count(2)
    expect(member(p, 1).get_by_label(JA("apps.member.deployment"))).to_have_value("support")
    expect(member(p, 2).get_by_label(JA("apps.member.deployment"))).to_have_value("legal")
    expect(rule(p, 1).get_by_label(JA("apps.rule.keywords"))).to_have_value("返品, 返金")
    expect(rule(p, 1).get_by_label(JA("apps.rule.member"))).to_have_value("support")
    expect(p.get_by_label(JA("apps.builder.default"), exact=True)).to_have_value("legal")

    # renaming a member carries the rule with it; moving by keyboard keeps the focus
    member(p, 1).get_by_label(JA("apps.member.name")).fill("help")
    expect(rule(p, 1).get_by_label(JA("apps.rule.member"))).to_have_value("help")
    up = member(p, 2).get_by_role("button", name=JA("apps.js.member_up", number=2))
    up.focus()
    p.keyboard.press("Enter")
    expect(member(p, 1).get_by_label(JA("apps.member.deployment"))).to_have_value("legal")
    moved = member(p, 1).get_by_role("button", name=JA("apps.js.member_down", number=1))
    expect(moved).to_be_focused()  # "up" is disabled on the first row
    p.get_by_role("radio", name=JA("apps.type.fallback")).check()
    expect(p.get_by_label(JA("apps.builder.default"), exact=True)).to_be_hidden()
    expect(member(p, 1).get_by_label(JA("apps.member.timeout"))).to_be_visible()
    member(p, 1).get_by_label(JA("apps.member.timeout")).fill("5")
    save(p, "apps.builder.save")
    expect(p.locator("[data-saved]")).to_be_visible()
    assert spec_of(db, "desk") == {
        "type": "fallback",
        "members": [
            {"deployment": "legal", "name": "legal", "timeout_seconds": 5.0},
            {"deployment": "support", "name": "help"},
        ],
        "defaults": {"max_tokens": 8},
    }
    p.goto("/apps")
    listed = p.locator(f'tr[data-app="{app_id}"]')
    expect(listed).to_contain_text(JA("apps.type.fallback"))
    expect(listed).to_contain_text("legal→help")


def spec_id(db: Database, name: str) -> int:
    with db.session() as session:
        return session.query(Deployment).filter_by(name=name).one().id


def test_a_bad_spec_shows_every_problem_the_server_found(
    page: tuple[Page, Watch], db: Database, live_server: str, screenshots: Path
) -> None:
    p, watch = page
    p.goto("/apps/new")
    p.get_by_label(JA("apps.builder.name"), exact=True).fill("desk")
    p.get_by_role("button", name=JA("apps.builder.add_rule")).click()
    rule(p, 1).get_by_label(JA("apps.rule.metadata")).fill("dept")
    p.get_by_label(JA("apps.builder.defaults.temperature"), exact=True).fill("9")
    save(p, "apps.builder.create")
    problems = p.locator("[data-error]")
    expect(problems).to_be_visible()
    expect(problems).to_contain_text(JA("apps.js.not_sent"))  # the page's own notation first
    expect(problems).to_contain_text(JA("apps.js.metadata_format", number=1, entry="dept"))

    rule(p, 1).get_by_label(JA("apps.rule.metadata")).fill("")
    save(p, "apps.builder.create")
    expect(problems).to_contain_text(JA("apps.js.not_saved"))
    items = problems.get_by_role("listitem")
    for part in (
        "member 1 needs 'deployment'",
        "rule 1 needs 'member'",
        "default must name a member",
        "defaults.temperature must be between",
    ):
        expect(items.filter(has_text=part)).to_have_count(1)
    p.screenshot(path=screenshots / "apps-problems-light-1280.png")
    expect(p).to_have_url(f"{live_server}/apps/new")
    with db.session() as session:
        assert session.query(Deployment).filter_by(name="desk").count() == 0
    # the refused request (and Chromium's note of it) is the point here; nothing else failed
    assert watch.problems == [
        f"400 for {live_server}/api/deployments",
        "console error: Failed to load resource: the server responded with a status of 400 "
        "(Bad Request)",
    ]
    watch.problems.clear()


def test_try_it_in_the_playground_shows_which_member_answered(
    page: tuple[Page, Watch], db: Database, settings: Settings, world: World, screenshots: Path
) -> None:
    p, _ = page
    app = make_deployment(
        db,
        world.user,
        settings,
        name="desk",
        app={
            "type": "router",
            "members": [{"deployment": "support"}, {"deployment": "legal"}],
            "rules": [{"member": "support", "keywords": ["返品"]}],
            "default": "legal",
            "defaults": {"max_tokens": 4},
        },
    )
    p.goto(f"/apps/{app.id}")
    p.locator("main").get_by_role("link", name=JA("apps.try_long")).first.click()
    expect(p.locator("#pg-target-0")).to_have_value("deployment:desk")
    box = p.get_by_label(JA("playground.input_label"), exact=True)
    box.fill("注文した品を返品したいです")
    box.press("Enter")
    answer = p.locator('.pg-col[data-col="0"] .pg-msg--assistant').last
    expect(answer).to_have_attribute("data-status", "done", timeout=STREAM_SECONDS * 1000)
    why = JA("playground.route.rule", matched="keyword 返品")
    expected = JA("playground.route.step", member="support", why=why)
    expect(answer.locator(".pg-msg__route")).to_have_text(
        JA("playground.route.answered_by", path=expected)
    )
    assert expected == "support（ルール: keyword 返品）"
    p.screenshot(path=screenshots / "apps-playground-route-light-1280.png")

    # the table on the app's page counts that answer
    p.goto(f"/apps/{app.id}")
    row = p.locator('tr[data-stats="support"]')
    expect(row.locator("td").first).to_have_text("1")


# screenshots --------------------------------------------------------------------------------


def showcase(db: Database, settings: Settings, root: Path) -> tuple[User, int]:
    """A help desk in Japanese: a router over two adapters and a fallback app, with traffic."""
    user = make_user(db)
    base = make_base_model(db, root / "base", name="SmolLM2-135M-Instruct")
    made: dict[str, Deployment] = {}
    for name in ("kumo-support", "kumo-legal"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(name.encode())
        version = make_adapter_version(db, user, base, folder, name=name)
        made[name] = make_deployment(
            db, user, settings, name=name, adapter_id=version.adapter_id, alias="champion"
        )
    made["local"] = make_deployment(db, user, settings, name="local", base_model_id=base.id)
    made["general"] = make_deployment(
        db,
        user,
        settings,
        name="general",
        app={"type": "fallback", "members": [{"deployment": "local", "timeout_seconds": 20}]},
    )
    app = make_deployment(
        db,
        user,
        settings,
        name="desk",
        app={
            "type": "router",
            "members": [
                {
                    "deployment": "kumo-support",
                    "name": "support",
                    "description": "返品、返金、交換、配送、注文のトラブル",
                },
                {
                    "deployment": "kumo-legal",
                    "name": "legal",
                    "description": "契約、規約、条項など法務の質問",
                },
                {"deployment": "general"},
            ],
            "rules": [
                {"member": "support", "keywords": ["返品", "返金"]},
                {"member": "legal", "metadata": {"dept": "legal"}},
                {"member": "legal", "regex": "第[0-9]+条"},
            ],
            "semantic": {"threshold": 0.35},
            "default": "general",
            "system_prompt": "あなたは雲珈琲のお客様窓口です。丁寧に、短く答えてください。",
            "defaults": {"temperature": 0.3, "max_tokens": 256},
        },
    )
    with db.session() as session:
        for number, (name, count, latency, bad) in enumerate(
            [("kumo-support", 42, 610, 3), ("kumo-legal", 17, 820, 1), ("local", 9, 450, 0)]
        ):
            for k in range(count):
                trace = Trace(
                    id=f"chatcmpl-shot{number}{k:04d}",
                    owner_id=user.id,
                    deployment_id=made[name].id,
                    app_id=app.id,
                    source="api",
                    endpoint="chat",
                    model="desk",
                    request={},
                    status="error" if k == 0 and name == "local" else "ok",
                    prompt_tokens=40,
                    completion_tokens=60 + k,
                    latency_ms=latency + 5 * k,
                )
                session.add(trace)
                session.flush()  # the trace first: feedback points at it
                if k < 6:
                    session.add(
                        Feedback(
                            trace_id=trace.id,
                            owner_id=user.id,
                            rating=-1 if k < bad else 1,
                            tags=[],
                        )
                    )
    return user, app.id


SIZES = [("desktop", 1280), ("phone", 375)]


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("size", "width"), SIZES, ids=[s[0] for s in SIZES])
def test_screenshots_in_both_themes_fit_the_screen(
    browser_page: tuple[Page, Watch],
    context: BrowserContext,
    live_server: str,
    db: Database,
    settings: Settings,
    tmp_path: Path,
    screenshots: Path,
    theme: str,
    size: str,
    width: int,
) -> None:
    p, _ = browser_page
    user, app_id = showcase(db, settings, tmp_path)
    signed = context.request.post(
        "/api/auth/signin", data={"email": user.email, "password": PASSWORD}
    )
    assert signed.ok
    context.add_cookies([{"name": "loraloop_theme", "value": theme, "url": live_server}])
    p.set_viewport_size({"width": width, "height": 900})
    for name, path in {"list": "/apps", "builder": f"/apps/{app_id}", "new": "/apps/new"}.items():
        p.goto(path)
        expect(p.locator("html")).to_have_attribute("data-theme", theme)
        wide = p.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"{path} scrolls sideways at {width}px ({wide}px wide)"
        p.screenshot(path=screenshots / f"apps-{name}-{theme}-{width}.png", full_page=True)


@pytest.fixture
def browser_page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    """A page of a browser that is not signed in yet (the test signs its own user in)."""
    p = context.new_page()
    watch = Watch(p, live_server)
    yield p, watch
    assert not watch.problems, watch.problems
