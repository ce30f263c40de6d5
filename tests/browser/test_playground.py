"""The playground in a real browser against the real engine on a tiny model: a streamed
answer, thumbs and a better answer reaching the database, the conversation reopening from the
sidebar, two models answering side by side, Stop ending a long answer, errors with what to do,
and screenshots in both themes on a laptop and a phone (``.artifacts/screenshots/``).

The tiny model is just big enough (256 wide, 4 layers) that 400 tokens take seconds, so Stop
has something to stop; every target sits on that one base (the gateway keeps one engine).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Conversation, Feedback, Trace, User
from loraloop.gateway import conversations
from loraloop.testing import make_tiny_adapter, make_tiny_model
from loraloop.web import i18n
from tests.browser.test_journey import Watch
from tests.factories import (
    PASSWORD,
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_trace,
    make_user,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

JA, EN = i18n.translator("ja"), i18n.translator("en")
STREAM_SECONDS = 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("playground-models")
    base = make_tiny_model(root / "base", hidden=256, layers=4)
    other = make_tiny_model(root / "other", hidden=32)
    return {"base": base, "v1": make_tiny_adapter(base, root / "v1", seed=1), "other": other}


@dataclass
class World:
    user: User
    base_value: str
    adapter_value: str
    adapter_id: int
    deployment_id: int


@pytest.fixture
def world(db: Database, settings: Settings, tiny: dict[str, Path]) -> World:
    user = make_user(db, email="hanako@example.com")
    base = make_base_model(db, tiny["base"], name="tiny-base")
    version = make_adapter_version(db, user, base, tiny["v1"], name="kumo")
    deployment = make_deployment(
        db, user, settings, name="kumo", adapter_id=version.adapter_id, alias="champion"
    )
    return World(
        user,
        f"base:{base.id}",
        f"adapter:{version.adapter_id}:1",
        version.adapter_id,
        deployment.id,
    )


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


# helpers --------------------------------------------------------------------------------


def column(p: Page, index: int) -> Locator:
    return p.locator(f'.pg-col[data-col="{index}"]')


def last_answer(p: Page, index: int = 0) -> Locator:
    return column(p, index).locator(".pg-msg--assistant").last


def settings(p: Page, **values: str) -> None:
    details = p.locator("#pg-settings")
    if details.get_attribute("open") is None:
        p.locator(".pg-settings__summary").click()
    for name, value in values.items():
        p.get_by_label(JA(f"playground.settings.{name}"), exact=True).fill(value)


def send(p: Page, text: str) -> None:
    box = p.get_by_label(JA("playground.input_label"), exact=True)
    box.fill(text)
    box.press("Enter")


def done(answer: Locator) -> None:
    expect(answer).to_have_attribute("data-status", "done", timeout=STREAM_SECONDS * 1000)


def traces(db: Database) -> list[Trace]:
    with db.session() as session:
        return list(session.scalars(select(Trace).order_by(Trace.created_at)))


def feedback_on(db: Database, trace_id: str) -> list[Feedback]:
    with db.session() as session:
        query = select(Feedback).where(Feedback.trace_id == trace_id).order_by(Feedback.id)
        return list(session.scalars(query))


def wait_for(check: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.1)


def count_updates(p: Page) -> None:
    """Count changes to answer texts from now on, in ``window.pgUpdates``."""
    p.evaluate(
        """() => {
        window.pgUpdates = 0;
        const inText = (node) => node.closest && node.closest('.pg-msg__text');
        new MutationObserver((changes) => {
          changes.forEach((c) => { if (inText(c.target)) window.pgUpdates++; });
        }).observe(document.getElementById('pg-columns'),
                   {subtree: true, childList: true, characterData: true});
    }"""
    )


def no_sideways_scroll(p: Page, width: int) -> None:
    scrolled = p.evaluate("document.documentElement.scrollWidth")
    assert scrolled <= width, f"the playground scrolls sideways at {width}px ({scrolled}px)"


# the journey ----------------------------------------------------------------------------


def test_stream_rate_correct_reload_and_reopen(
    page: tuple[Page, Watch], world: World, db: Database, live_server: str
) -> None:
    p, _ = page
    p.goto(f"/playground?adapter_id={world.adapter_id}")
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("playground.title"))
    expect(p.locator("#pg-target-0")).to_have_value(world.adapter_value)
    settings(p, max_tokens="24", seed="7", temperature="0.8")
    count_updates(p)
    send(p, "くもブレンドはいくらですか？")

    answer = last_answer(p)
    expect(column(p, 0).locator(".pg-msg--user .pg-msg__text")).to_have_text(
        "くもブレンドはいくらですか？"
    )
    done(answer)
    assert p.evaluate("window.pgUpdates") >= 3, "the answer did not arrive token by token"
    (trace,) = traces(db)
    assert trace.source == "playground"
    assert trace.model == "kumo@v1"
    assert trace.request["max_tokens"] == 24
    assert answer.locator(".pg-msg__text").text_content() == trace.response
    expect(answer.locator(".pg-msg__model")).to_have_text("kumo@v1")

    # thumbs down, then the better answer
    answer.get_by_role("button", name=JA("playground.feedback.down"), exact=True).click()
    expect(
        answer.get_by_role("button", name=JA("playground.feedback.down"), exact=True)
    ).to_have_attribute("aria-pressed", "true")
    expect(answer.locator(".pg-actions__saved")).to_have_text(JA("playground.feedback.saved_down"))
    answer.get_by_role("button", name=JA("playground.feedback.fix")).click()
    editor = answer.get_by_label(JA("playground.feedback.fix_label"), exact=True)
    expect(editor).to_be_focused()
    editor.fill("くもブレンドは 480 円です。")
    answer.get_by_role("button", name=JA("playground.feedback.fix_save")).click()
    expect(answer.locator(".pg-actions__saved")).to_have_text(JA("playground.feedback.fix_saved"))
    expect(answer.locator(".pg-fixed__text")).to_have_text("くもブレンドは 480 円です。")
    rows = feedback_on(db, trace.id)
    assert [(r.rating, r.correction) for r in rows] == [
        (-1, None),
        (None, "くもブレンドは 480 円です。"),
    ]
    assert rows[0].author_id == world.user.id

    # the conversation was kept: the address names it, a reload reopens it
    with db.session() as session:
        (saved,) = session.scalars(select(Conversation)).all()
        assert saved.owner_id == world.user.id
        assert saved.title == "くもブレンドはいくらですか？"
        assert saved.target == {"adapter_id": world.adapter_id, "version": 1}
        assert saved.settings["max_tokens"] == 24
        assert [m["role"] for m in saved.messages] == ["user", "assistant"]
        assert saved.messages[1]["trace_id"] == trace.id
    expect(p).to_have_url(f"{live_server}/playground?conversation={saved.id}")

    p.goto("/playground")
    link = p.locator("#pg-history").get_by_role("link", name="くもブレンドはいくらですか？")
    expect(link).to_be_visible()
    expect(column(p, 0).locator(".pg-msg")).to_have_count(0)
    link.click()
    expect(p).to_have_url(f"{live_server}/playground?conversation={saved.id}")
    expect(link).to_have_attribute("aria-current", "page")
    reopened = last_answer(p)
    expect(reopened.locator(".pg-msg__text")).to_have_text(trace.response)
    expect(p.locator("#pg-target-0")).to_have_value(world.adapter_value)
    expect(p.locator("#pg-max_tokens")).to_have_value("24")
    expect(
        reopened.get_by_role("button", name=JA("playground.feedback.down"), exact=True)
    ).to_have_attribute("aria-pressed", "true")
    expect(reopened.locator(".pg-fixed__text")).to_have_text("くもブレンドは 480 円です。")

    # feedback still works on the reopened answer, through its stored trace id
    reopened.get_by_role("button", name=JA("playground.feedback.up"), exact=True).click()
    expect(reopened.locator(".pg-actions__saved")).to_have_text(JA("playground.feedback.saved_up"))
    assert [r.rating for r in feedback_on(db, trace.id)] == [-1, None, 1]

    # a second message continues the same conversation
    send(p, "ありがとう")
    done(last_answer(p))
    wait_for(lambda: len(_messages(db, saved.id)) == 4)
    assert len(traces(db)) == 2
    second = traces(db)[1]
    assert second.request["messages"][1] == {"role": "assistant", "content": trace.response}


def _messages(db: Database, conversation_id: int) -> list[dict[str, object]]:
    with db.session() as session:
        row = session.get(Conversation, conversation_id)
        return list(row.messages) if row else []


def test_shift_enter_is_a_new_line_and_rename_and_delete(
    page: tuple[Page, Watch], world: World, db: Database, live_server: str
) -> None:
    p, _ = page
    p.goto("/playground")
    settings(p, max_tokens="8")
    box = p.get_by_label(JA("playground.input_label"), exact=True)
    box.fill("一行目")
    box.press("Shift+Enter")
    box.press_sequentially("二行目")
    expect(box).to_have_value("一行目\n二行目")
    box.press("Enter")
    done(last_answer(p))
    expect(column(p, 0).locator(".pg-msg--user .pg-msg__text")).to_have_text("一行目\n二行目")
    item = p.locator(".pg-history__item").first
    expect(item.locator(".pg-history__link")).to_have_text("一行目 二行目")

    item.get_by_role(
        "button", name=JA("playground.history.rename_named", title="一行目 二行目")
    ).click()
    field = item.get_by_label(JA("playground.history.new_title"))
    expect(field).to_be_focused()
    field.fill("改行のテスト")
    field.press("Enter")
    expect(item.locator(".pg-history__link")).to_have_text("改行のテスト")
    with db.session() as session:
        (row,) = session.scalars(select(Conversation)).all()
        assert row.title == "改行のテスト"

    # New chat keeps the target and the settings, and starts empty
    p.get_by_role("button", name=JA("playground.new_chat")).click()
    expect(column(p, 0).locator(".pg-msg")).to_have_count(0)
    expect(p).to_have_url(f"{live_server}/playground")
    expect(p.locator("#pg-max_tokens")).to_have_value("8")

    item.get_by_role(
        "button", name=JA("playground.history.delete_named", title="改行のテスト")
    ).click()
    item.get_by_role("button", name=JA("playground.cancel")).click()
    expect(item).to_be_visible()
    item.get_by_role(
        "button", name=JA("playground.history.delete_named", title="改行のテスト")
    ).click()
    item.get_by_role("button", name=JA("playground.history.delete"), exact=True).click()
    expect(p.locator(".pg-history__item")).to_have_count(0)
    expect(p.locator("#pg-history-empty")).to_be_visible()
    with db.session() as session:
        assert session.scalars(select(Conversation)).all() == []
        assert len(session.scalars(select(Trace)).all()) == 1  # its answer's trace stays


def test_compare_mode_gets_two_answers_and_reopens_side_by_side(
    page: tuple[Page, Watch], world: World, db: Database
) -> None:
    p, _ = page
    p.goto("/playground?deployment=kumo")
    expect(column(p, 1)).to_be_hidden()
    p.get_by_text(JA("playground.compare")).click()
    expect(p.get_by_role("switch", name=JA("playground.compare"))).to_be_checked()
    expect(column(p, 1)).to_be_visible()
    expect(p.locator("#pg-target-0")).to_have_value("deployment:kumo")
    p.locator("#pg-target-1").select_option(world.base_value)
    settings(p, max_tokens="12", seed="3")
    send(p, "おすすめは？")
    done(last_answer(p, 0))
    done(last_answer(p, 1))
    found = {t.model: t for t in traces(db)}
    assert set(found) == {"kumo", "base:tiny-base"}
    assert last_answer(p, 0).locator(".pg-msg__text").text_content() == found["kumo"].response
    assert last_answer(p, 1).locator(".pg-msg__text").text_content() == (
        found["base:tiny-base"].response
    )

    last_answer(p, 1).get_by_role("button", name=JA("playground.feedback.up"), exact=True).click()
    expect(last_answer(p, 1).locator(".pg-actions__saved")).to_have_text(
        JA("playground.feedback.saved_up")
    )
    assert [f.rating for f in feedback_on(db, found["base:tiny-base"].id)] == [1]
    assert feedback_on(db, found["kumo"].id) == []

    with db.session() as session:
        (saved,) = session.scalars(select(Conversation)).all()
    wait_for(lambda: len(_messages(db, saved.id)) == 3)
    with db.session() as session:
        stored = session.get(Conversation, saved.id)
        assert stored is not None
        assert stored.target == {
            "compare": [{"deployment": "kumo"}, {"base_model_id": int(world.base_value[5:])}]
        }
    p.reload()
    expect(p.get_by_role("switch", name=JA("playground.compare"))).to_be_checked()
    expect(p.locator("#pg-target-1")).to_have_value(world.base_value)
    expect(last_answer(p, 1).locator(".pg-msg__text")).to_have_text(
        found["base:tiny-base"].response
    )
    expect(last_answer(p, 0).locator(".pg-msg__text")).to_have_text(found["kumo"].response)

    # leaving compare mode starts a new chat; the comparison stays in the list
    p.get_by_text(JA("playground.compare")).click()
    expect(column(p, 1)).to_be_hidden()
    expect(p.locator("#pg-notice")).to_have_text(JA("playground.notice.single_new"))
    expect(column(p, 0).locator(".pg-msg")).to_have_count(0)
    expect(p.locator(".pg-history__item")).to_have_count(1)


def test_two_streams_run_at_once_and_each_has_its_own_stop(
    page: tuple[Page, Watch], world: World, db: Database
) -> None:
    p, _ = page
    p.goto("/playground")
    p.get_by_text(JA("playground.compare")).click()
    p.locator("#pg-target-0").select_option(world.base_value)
    p.locator("#pg-target-1").select_option(world.adapter_value)
    settings(p, max_tokens="400", temperature="0")
    send(p, "長い話をしてください")
    a, b = last_answer(p, 0), last_answer(p, 1)
    expect(a).to_have_attribute("data-status", "streaming", timeout=STREAM_SECONDS * 1000)
    expect(b).to_have_attribute("data-status", "streaming", timeout=STREAM_SECONDS * 1000)
    column(p, 0).get_by_role("button", name=JA("playground.stop_column", letter="A")).click()
    expect(a).to_have_attribute("data-status", "stopped")
    expect(b).to_have_attribute("data-status", "streaming")  # B goes on alone
    column(p, 1).get_by_role("button", name=JA("playground.stop_column", letter="B")).click()
    expect(b).to_have_attribute("data-status", "stopped")
    expect(p.get_by_role("button", name=JA("playground.send"))).to_be_visible()
    wait_for(lambda: len(traces(db)) == 2 and all(t.status == "abandoned" for t in traces(db)))
    assert all(t.completion_tokens < 400 for t in traces(db))


def test_targets_on_two_bases_answer_in_turn_so_neither_is_cut_off(
    page: tuple[Page, Watch], world: World, db: Database, tiny: dict[str, Path]
) -> None:
    other = make_base_model(db, tiny["other"], name="other-base")
    p, _ = page
    p.goto("/playground")
    p.get_by_text(JA("playground.compare")).click()
    p.locator("#pg-target-0").select_option(world.base_value)
    p.locator("#pg-target-1").select_option(f"base:{other.id}")
    settings(p, max_tokens="40", temperature="1", seed="2")
    send(p, "順番にどうぞ")
    a, b = last_answer(p, 0), last_answer(p, 1)
    expect(b).to_have_attribute("data-status", "queued")
    expect(b.locator(".pg-msg__state")).to_have_text(JA("playground.state.queued"))
    done(a)
    done(b)
    by_model = {t.model: t for t in traces(db)}
    assert [by_model[m].finish_reason for m in ("base:tiny-base", "base:other-base")] == [
        "length",
        "length",
    ]
    assert by_model["base:tiny-base"].created_at <= by_model["base:other-base"].created_at


def test_stop_ends_a_long_answer_early(
    page: tuple[Page, Watch], world: World, db: Database, screenshots: Path
) -> None:
    p, _ = page
    p.goto("/playground")
    p.locator("#pg-target-0").select_option(world.base_value)
    settings(p, max_tokens="400", temperature="1", seed="5")
    send(p, "とても長い物語を書いてください")
    answer = last_answer(p)
    expect(answer).to_have_attribute("data-status", "streaming", timeout=STREAM_SECONDS * 1000)
    expect(answer.locator(".pg-msg__text")).to_have_attribute("aria-busy", "true")
    expect(answer.locator(".pg-msg__text")).to_have_text(re.compile(r"\S"))
    stop = p.get_by_role("button", name=JA("playground.stop"), exact=True)
    expect(p.get_by_role("button", name=JA("playground.send"))).to_be_hidden()
    p.screenshot(path=screenshots / "playground-streaming-light-1280.png")
    stop.click()
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer.locator(".pg-msg__state")).to_have_text(JA("playground.state.stopped"))
    expect(p.locator("#pg-announce")).to_have_text(JA("playground.announce.stopped_single"))
    expect(answer.locator(".pg-msg__text")).to_have_attribute("aria-busy", "false")
    expect(p.get_by_role("button", name=JA("playground.send"))).to_be_visible()
    wait_for(lambda: bool(traces(db)) and traces(db)[0].status == "abandoned")
    (trace,) = traces(db)
    assert 0 < trace.completion_tokens < 400

    # a stopped answer can still be rated, and the partial answer is kept in the chat
    answer.get_by_role("button", name=JA("playground.feedback.down"), exact=True).click()
    expect(answer.locator(".pg-actions__saved")).to_have_text(JA("playground.feedback.saved_down"))
    assert [f.rating for f in feedback_on(db, trace.id)] == [-1]
    with db.session() as session:
        (saved,) = session.scalars(select(Conversation)).all()
    wait_for(lambda: _messages(db, saved.id)[-1].get("trace_id") == trace.id)


def test_errors_say_what_happened_and_what_to_do(
    page: tuple[Page, Watch], world: World, db: Database, live_server: str
) -> None:
    p, watch = page
    with db.session() as session:
        from loraloop.gateway import deployments

        deployments.set_status(session, world.user, world.deployment_id, "paused")
    p.goto("/playground?deployment=kumo")
    send(p, "こんにちは")
    answer = last_answer(p)
    error = answer.get_by_role("alert")
    expect(error).to_contain_text("deployment kumo is paused")
    expect(error).to_contain_text(JA("playground.error.paused"))
    expect(error.get_by_role("link", name=JA("playground.error.to_deploy"))).to_have_attribute(
        "href", "/deploy"
    )
    expect(answer).to_have_attribute("data-status", "error")

    # a conversation too long for the model: the server's message and the way out
    p.locator("#pg-target-0").select_option(world.adapter_value)
    settings(p, max_tokens="600")
    answer.get_by_role("button", name=JA("playground.retry")).click()
    error = last_answer(p).get_by_role("alert")
    expect(error).to_contain_text("maximum context length is 512 tokens")
    expect(error).to_contain_text(JA("playground.error.context"))
    expect(column(p, 0).locator(".pg-msg--assistant")).to_have_count(1)

    # settings the server would refuse are caught before sending
    settings(p, max_tokens="8", temperature="5")
    send(p, "もう一度")
    expect(p.locator("#pg-settings-error")).to_be_visible()
    expect(p.locator("#pg-temperature")).to_be_focused()
    settings(p, temperature="0.5")
    send(p, "もう一度")
    done(last_answer(p))

    loads = [problem for problem in watch.problems if not problem.startswith("console error")]
    assert loads == [
        f"409 for {live_server}/api/playground/chat",
        f"400 for {live_server}/api/playground/chat",
    ]
    assert all("(Conflict)" in x or "(Bad Request)" in x for x in watch.problems if x not in loads)
    watch.problems.clear()  # those refusals are the point of this test


# screenshots ------------------------------------------------------------------------------

ANSWER = (
    "くもブレンドはレギュラーサイズで 480 円、ラージサイズで 560 円です。\n"
    "豆の販売は 200g で 1,400 円からご用意しています。"
)
OTHER = "くもブレンドは 480 円です。季節限定の「月見ブレンド」もおすすめです。"


def _said(db: Database, world: World, text: str) -> dict[str, Any]:
    """An assistant message with a real trace behind it, so its feedback buttons show."""
    return {"role": "assistant", "content": text, "trace_id": make_trace(db, world.user).id}


def _seed(db: Database, world: World, *, compare: bool) -> int:
    """A realistic conversation to photograph (the tiny model only writes noise)."""
    question = "くもブレンドはいくらですか？"
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "営業時間を教えてください。"},
        _said(db, world, "平日は 7 時から 20 時、土日祝は 8 時から 18 時まで営業しています。"),
    ]
    if compare:
        messages.append(_said(db, world, "毎日 8 時から 18 時までです。"))
    messages += [{"role": "user", "content": question}, _said(db, world, ANSWER)]
    if compare:
        messages.append(_said(db, world, OTHER))
    kumo: dict[str, Any] = {"deployment": "kumo"}
    target = kumo
    if compare:
        target = {"compare": [kumo, {"adapter_id": world.adapter_id, "version": 1}]}
    with db.session() as session:
        conversations.create(
            session, world.user, title="営業時間と価格", target={}, settings={}, messages=[]
        )
        row = conversations.create(
            session,
            world.user,
            title="比較：くもブレンドの価格" if compare else question,
            target=target,
            settings={"system": "あなたはくもコーヒーの店員です。", "temperature": 0.7},
            messages=messages,
        )
        return row.id


SHOTS = [
    # name, theme, width, compare
    ("playground-light-1280", "light", 1280, False),
    ("playground-dark-1280", "dark", 1280, False),
    ("playground-light-375", "light", 375, False),
    ("playground-dark-375", "dark", 375, False),
    ("playground-compare-light-1280", "light", 1280, True),
    ("playground-compare-dark-1280", "dark", 1280, True),
    ("playground-compare-dark-375", "dark", 375, True),
]


@pytest.mark.parametrize(("name", "theme", "width", "compare"), SHOTS, ids=[s[0] for s in SHOTS])
def test_screenshots(
    page: tuple[Page, Watch],
    world: World,
    db: Database,
    live_server: str,
    screenshots: Path,
    name: str,
    theme: str,
    width: int,
    compare: bool,
) -> None:
    p, _ = page
    p.context.add_cookies([{"name": "loraloop_theme", "value": theme, "url": live_server}])
    p.set_viewport_size({"width": width, "height": 900})
    conversation = _seed(db, world, compare=compare)
    p.goto(f"/playground?conversation={conversation}")
    expect(p.locator("html")).to_have_attribute("data-theme", theme)
    expect(last_answer(p, 1 if compare else 0).locator(".pg-msg__text")).to_have_text(
        OTHER if compare else ANSWER
    )
    no_sideways_scroll(p, width)
    p.screenshot(path=screenshots / f"{name}.png", full_page=True)
    if width < 720 or compare:
        return
    p.locator(".pg-settings__summary").click()
    p.wait_for_timeout(300)  # the chevron's turn
    p.screenshot(path=screenshots / f"{name}-settings.png")


def test_phone_layout_with_a_live_answer_and_the_editor(
    page: tuple[Page, Watch], world: World, screenshots: Path
) -> None:
    p, _ = page
    p.set_viewport_size({"width": 375, "height": 760})
    p.goto("/playground")
    p.get_by_role("button", name=JA("playground.history.toggle", count=0)).click()
    expect(p.locator("#pg-history-empty")).to_be_visible()
    settings(p, max_tokens="16", seed="1")
    p.locator(".pg-settings__summary").click()
    send(p, "おすすめのコーヒーは？")
    answer = last_answer(p)
    done(answer)
    answer.get_by_role("button", name=JA("playground.feedback.fix")).click()
    no_sideways_scroll(p, 375)
    p.screenshot(path=screenshots / "playground-editor-light-375.png", full_page=True)


def test_english_page(page: tuple[Page, Watch], world: World, db: Database) -> None:
    p, _ = page
    with db.session() as session:
        session.get(User, world.user.id).locale = "en"  # type: ignore[union-attr]
    p.goto("/playground")
    expect(p.locator("html")).to_have_attribute("lang", "en")
    expect(p.get_by_role("heading", level=1)).to_have_text(EN("playground.title"))
    expect(p.get_by_role("button", name=EN("playground.send"))).to_be_visible()
    settings_summary = p.locator("#pg-settings-values")
    expect(settings_summary).to_contain_text(EN("playground.settings.temperature"))
