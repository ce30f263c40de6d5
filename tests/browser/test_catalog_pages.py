"""The catalog pages in a real browser: from an adapter page to a deployment with a key shown
once, then the Python snippet copied off the page runs the ``openai`` client against the live
server (the real engine on a tiny model), as do the curl and JavaScript ones; the keys page
issues and revokes a key; and every page is screenshotted in both themes at 1280 and 375 px
wide, failing if a phone would have to scroll sideways."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, AdapterVersion, Trace, User
from loraloop.mlops import feedback
from loraloop.testing import make_tiny_adapter, make_tiny_model
from loraloop.web import i18n
from tests.browser.test_journey import Watch
from tests.factories import (
    PASSWORD,
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_job,
    make_key,
    make_trace,
    make_user,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

JA = i18n.translator("ja")
SNIPPET_SECONDS = 120


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalog-models")
    base = make_tiny_model(root / "base", hidden=32)
    return {"base": base, "v1": make_tiny_adapter(base, root / "v1", seed=1)}


@pytest.fixture
def page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    p = context.new_page()
    watch = Watch(p, live_server)
    yield p, watch
    assert not watch.problems, watch.problems


def sign_in(p: Page, user: User) -> None:
    p.goto("/signin")
    p.get_by_label(JA("field.email")).fill(user.email)
    p.get_by_label(JA("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=JA("signin.submit")).click()
    expect(p.get_by_role("heading", level=1)).to_contain_text(user.display_name)


def run_snippet(command: list[str], code: str) -> str:
    done = subprocess.run(
        [*command, code],
        capture_output=True,
        text=True,
        timeout=SNIPPET_SECONDS,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "NO_PROXY": "127.0.0.1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_adapter_to_deployment_to_a_working_snippet(
    page: tuple[Page, Watch],
    live_server: str,
    db: Database,
    tiny: dict[str, Path],
    screenshots: Path,
) -> None:
    p, _ = page
    user = make_user(db)
    base = make_base_model(db, tiny["base"], name="tiny-base")
    version = make_adapter_version(db, user, base, tiny["v1"], name="Kumo-Coffee")
    sign_in(p, user)

    p.goto(f"/adapters/{version.adapter_id}")
    expect(p.get_by_role("heading", level=1)).to_have_text("Kumo-Coffee")
    p.locator("main").get_by_role("link", name=JA("catalog.adapter.deploy"), exact=True).click()
    expect(p).to_have_url(f"{live_server}/deploy?adapter_id={version.adapter_id}")
    name = p.get_by_label(JA("catalog.deploy.name"), exact=True)
    expect(name).to_have_value("kumo-coffee")  # suggested from the adapter, lowercased
    expect(name).to_be_focused()
    expect(p.get_by_label(JA("catalog.deploy.target.champion"))).to_be_checked()
    p.get_by_role("button", name=JA("catalog.deploy.submit")).click()

    panel = p.locator("#deploy-result")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text(JA("catalog.secret.once"))
    secret = p.get_by_label(JA("catalog.secret.label"), exact=True).input_value()
    assert secret.startswith("ll_")
    python = panel.locator("#new-python")
    expect(python).to_contain_text(secret)
    expect(python).to_contain_text(f'base_url="{live_server}/v1"')
    expect(python).to_contain_text('model="kumo-coffee"')
    p.screenshot(path=screenshots / "catalog-deploy-created-ja.png", full_page=True)

    python_block = panel.locator(".catalog-code:has(#new-python)")
    python_block.get_by_role("button", name=JA("catalog.common.copy")).click()
    expect(python_block.get_by_role("button", name=JA("catalog.js.copied"))).to_be_visible()
    copied = p.evaluate("navigator.clipboard.readText()")
    assert copied == python.text_content()

    run_snippet([sys.executable, "-c"], copied)  # exits 0 (asserted) having printed the answer
    with db.session() as session:  # a random tiny model may answer only whitespace: ask the trace
        trace = session.scalar(select(Trace).where(Trace.model == "kumo-coffee"))
    assert trace is not None
    assert trace.status == "ok"
    assert trace.completion_tokens > 0
    if shutil.which("curl"):
        curl = panel.locator("#new-curl").text_content() or ""
        assert '"choices"' in run_snippet(["bash", "-c"], curl)
    if shutil.which("node"):
        script = panel.locator("#new-javascript").text_content() or ""
        assert run_snippet(["node", "--input-type=module", "-e"], script).strip()
    with db.session() as session:
        traces = session.scalars(select(Trace).where(Trace.model == "kumo-coffee")).all()
    assert traces, "the gateway recorded no answer for kumo-coffee"
    assert all(t.status != "error" for t in traces), [t.error for t in traces]

    p.get_by_role("button", name=JA("catalog.secret.done")).click()
    expect(p).to_have_url(f"{live_server}/deploy")
    expect(p.locator("#deploy-result")).to_be_hidden()
    assert secret not in p.content()
    row = p.locator("[data-deployment]", has_text="kumo-coffee")
    expect(row).to_contain_text(JA("catalog.deploy.status.active"))


def test_deployment_errors_pause_resume_and_delete(
    page: tuple[Page, Watch], db: Database, settings: Settings, tmp_path: Path
) -> None:
    p, watch = page
    user, adapter_id = _world(db, settings, tmp_path)
    sign_in(p, user)
    p.goto(f"/deploy?adapter_id={adapter_id}")
    p.get_by_role("button", name=JA("catalog.deploy.submit")).click()  # kumo-coffee exists
    alert = p.locator("#deploy-form [data-error]")
    expect(alert).to_contain_text("already have a deployment named kumo-coffee")
    expect(p.get_by_role("button", name=JA("catalog.deploy.submit"))).to_be_enabled()
    assert any("409" in problem for problem in watch.problems)
    watch.problems.clear()  # the refused request is the point here

    p.get_by_label(JA("catalog.deploy.target.external"), exact=False).check()
    expect(p.get_by_label(JA("catalog.deploy.adapter"), exact=True)).to_be_hidden()
    expect(p.get_by_label(JA("catalog.deploy.upstream_url"))).to_be_visible()

    row = p.locator("[data-deployment]", has_text="kumo-v2-pinned")
    row.get_by_role("button", name=JA("catalog.deploy.pause")).click()
    row = p.locator("[data-deployment]", has_text="kumo-v2-pinned")
    expect(row).to_contain_text(JA("catalog.deploy.status.paused"))
    row.get_by_role("button", name=JA("catalog.deploy.resume")).click()
    expect(p.locator("[data-deployment]", has_text="kumo-v2-pinned")).to_contain_text(
        JA("catalog.deploy.status.active")
    )
    p.locator("[data-deployment]", has_text="kumo-v2-pinned").get_by_role(
        "button", name=JA("catalog.common.delete")
    ).click()
    p.get_by_role("dialog").get_by_role("button", name=JA("catalog.js.delete")).click()
    expect(p.locator("[data-deployment]", has_text="kumo-v2-pinned")).to_have_count(0)
    expect(p.locator("[data-deployment]")).to_have_count(1)


def test_owner_moves_the_champion_and_publishes(
    page: tuple[Page, Watch], db: Database, settings: Settings, tmp_path: Path
) -> None:
    p, _ = page
    user, adapter_id = _world(db, settings, tmp_path)
    sign_in(p, user)
    p.goto(f"/adapters/{adapter_id}")
    v2 = p.locator("#version-2")
    v2.get_by_role("button", name=JA("catalog.adapter.make_champion")).click()
    expect(p.locator("#version-2")).to_contain_text(JA("catalog.alias.champion"))
    expect(p.locator("#version-1 [data-set-champion]")).to_have_count(1)

    p.get_by_label(JA("catalog.adapters.visibility")).select_option("public")
    p.get_by_label(JA("catalog.adapter.description")).fill("雲珈琲の店頭アシスタント")
    p.get_by_role("button", name=JA("catalog.common.save")).click()
    expect(p.locator(".catalog-facts")).to_contain_text(JA("catalog.visibility.public"))
    expect(p.locator(".catalog-description")).to_have_text("雲珈琲の店頭アシスタント")


def test_admin_registers_a_local_base_model(
    page: tuple[Page, Watch], db: Database, settings: Settings, tmp_path: Path,
    tiny: dict[str, Path],
) -> None:  # fmt: skip
    p, watch = page
    user, _ = _world(db, settings, tmp_path)
    sign_in(p, user)
    p.goto("/models")
    form = p.locator("#register-form")
    form.get_by_label(JA("catalog.models.register.local")).check()
    path = form.get_by_label(JA("catalog.models.register.local_path"))
    path.fill(str(tmp_path / "missing"))
    form.get_by_role("button", name=JA("catalog.models.register.submit")).click()
    expect(form.get_by_role("alert")).to_contain_text("is not a folder")
    watch.problems.clear()  # the 400 is expected

    path.fill(str(tiny["base"]))
    form.get_by_role("button", name=JA("catalog.models.register.submit")).click()
    expect(p.get_by_role("rowheader", name=tiny["base"].name, exact=True)).to_be_visible()


def test_account_changes_the_display_name_and_language(
    page: tuple[Page, Watch], live_server: str, db: Database
) -> None:
    p, _ = page
    user = make_user(db)
    sign_in(p, user)
    p.goto("/account")
    expect(p.get_by_label(JA("field.email"))).to_have_attribute("readonly", "")
    p.get_by_label(JA("field.display_name"), exact=True).fill("佐藤 太郎")
    p.locator("#profile-form").get_by_role("button", name=JA("catalog.common.save")).click()
    expect(p.locator("#profile-form [data-progress]")).to_have_text(JA("catalog.js.saved"))
    p.get_by_role("radio", name="English").check()
    p.get_by_role("button", name=JA("catalog.account.language_save")).click()
    expect(p).to_have_url(f"{live_server}/account")
    expect(p.locator("html")).to_have_attribute("lang", "en")
    p.goto("/")
    expect(p.get_by_role("heading", level=1)).to_have_text(
        i18n.translator("en")("dashboard.welcome", name="佐藤 太郎")
    )


def test_keys_page_issues_a_key_once_and_revokes_it(
    page: tuple[Page, Watch], live_server: str, db: Database
) -> None:
    p, _ = page
    user = make_user(db)
    sign_in(p, user)
    p.goto("/keys")
    p.get_by_label(JA("catalog.keys.name"), exact=True).fill("本番サーバー")
    p.get_by_label(JA("catalog.keys.field.tpm")).fill("5000")
    p.get_by_label(JA("catalog.keys.field.expiry")).fill("30")
    p.get_by_role("button", name=JA("catalog.keys.submit")).click()

    expect(p.locator("#key-result")).to_be_visible()
    secret = p.get_by_label(JA("catalog.secret.label"), exact=True).input_value()
    assert secret.startswith("ll_")
    p.get_by_role("button", name=JA("catalog.secret.done")).click()
    row = p.locator("[data-key]", has_text="本番サーバー")
    expect(row).to_contain_text(JA("catalog.keys.state.active"))
    expect(row).to_contain_text(secret[:13])  # the prefix, never the rest
    assert secret not in p.content()

    row.get_by_role("button", name=JA("catalog.keys.revoke")).click()
    dialog = p.get_by_role("dialog")
    expect(dialog).to_contain_text(JA("catalog.js.revoke_title", name="本番サーバー"))
    dialog.get_by_role("button", name=JA("catalog.common.cancel")).click()
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text(JA("catalog.keys.state.active"))

    row.get_by_role("button", name=JA("catalog.keys.revoke")).click()
    dialog.get_by_role("button", name=JA("catalog.js.revoke")).click()
    expect(p.locator("[data-key]", has_text="本番サーバー")).to_contain_text(
        JA("catalog.keys.state.revoked")
    )
    expect(p.locator("[data-revoke]")).to_have_count(0)


CARD = """---
base_model: tiny-base
license: apache-2.0
---

# kumo-coffee

A LoRA adapter for `tiny-base` trained with loraloop.

## Metrics

- val_loss: 1.23
- steps: 1200

```python
model = PeftModel.from_pretrained(base, '<this folder>')
```
"""


def _fake_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(name.encode())
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    return folder


def _world(db: Database, settings: Settings, root: Path) -> tuple[User, int]:
    """A user with a bit of everything, so the screenshots show full pages."""
    user = make_user(db, email="hanako@example.com")
    with db.session() as session:
        found_user = session.get(User, user.id)
        assert found_user is not None
        found_user.role, found_user.display_name = "admin", "山田 花子"
    user = found_user
    base = make_base_model(db, root / "base", name="smollm2-135m-instruct")
    first = make_adapter_version(db, user, base, _fake_folder(root, "v1"), name="kumo-coffee")
    with db.session() as session:
        adapter = session.get(Adapter, first.adapter_id)
        found = session.get(AdapterVersion, first.id)
        assert found is not None
        found.metrics = {"val_loss": 1.2345, "train_loss": 1.1, "steps": 1200, "seconds": 81.5}
    second = make_adapter_version(db, user, base, _fake_folder(root, "v2"), adapter=adapter)
    make_deployment(
        db, user, settings, name="kumo-coffee", adapter_id=first.adapter_id, alias="champion"
    )
    make_deployment(db, user, settings, name="kumo-v2-pinned", adapter_id=first.adapter_id,
                    version=second.version)  # fmt: skip
    make_key(db, user, name="本番サーバー", tokens_per_minute=20000, token_budget=5_000_000)
    make_job(db, user)
    trace = make_trace(db, user, answer="雲ブレンドは480円です。")
    with db.session() as session:
        feedback.give(session, user, trace.id, rating=1, comment="丁寧でわかりやすい")
    other = make_user(db)
    make_adapter_version(
        db, other, base, _fake_folder(root, "o1"), name="osaka-dialect", visibility="public"
    )
    return user, first.adapter_id


SIZES = [("desktop", 1280), ("phone", 375)]


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("size", "width"), SIZES, ids=[s[0] for s in SIZES])
def test_screenshots_in_both_themes_fit_the_screen(
    page: tuple[Page, Watch],
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
    p, _ = page
    user, adapter_id = _world(db, settings, tmp_path)
    context.add_cookies([{"name": "loraloop_theme", "value": theme, "url": live_server}])
    p.set_viewport_size({"width": width, "height": 900})
    sign_in(p, user)
    paths = {
        "dashboard": "/",
        "models": "/models",
        "adapters": "/adapters",
        "adapter": f"/adapters/{adapter_id}",
        "deploy": f"/deploy?adapter_id={adapter_id}",
        "keys": "/keys",
        "account": "/account",
    }
    for name, path in paths.items():
        p.goto(path)
        expect(p.locator("html")).to_have_attribute("data-theme", theme)
        if name == "adapter":
            p.locator("details.catalog-card-details").first.locator("summary").click()
        if name == "deploy":
            p.locator("details.catalog-row__code").first.locator("summary").click()
        wide = p.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"{path} scrolls sideways at {width}px ({wide}px wide)"
        p.screenshot(path=screenshots / f"catalog-{name}-{theme}-{width}.png", full_page=True)


def test_a_newcomer_dashboard_on_a_phone(
    page: tuple[Page, Watch], db: Database, screenshots: Path
) -> None:
    p, _ = page
    user = make_user(db)
    p.set_viewport_size({"width": 375, "height": 800})
    sign_in(p, user)
    steps = p.get_by_role("region", name=JA("dashboard.steps.heading"))
    expect(steps.get_by_role("listitem")).to_have_count(5)
    expect(steps.get_by_role("link", name=JA("dashboard.steps.data.title"))).to_have_attribute(
        "href", "/datasets"
    )
    assert p.evaluate("document.documentElement.scrollWidth") <= 375
    p.screenshot(path=screenshots / "catalog-dashboard-newcomer-light-375.png", full_page=True)
