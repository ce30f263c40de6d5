"""Issue 5's acceptance journey, in a real browser, once in Japanese and once in English, each
on a fresh server and database with the tiny model and a local worker: sign up, upload a file
with a broken line (the page names the line), fix it and upload again, start a quick training
run and watch its loss chart grow until the job succeeds, chat with the new adapter in the
playground (a streamed answer), give it a thumbs-down with a better answer, deploy it, and call
the deployment with the official ``openai`` client using the key, model id and base URL read
off the page. Every page must be in the chosen language, with no script error, no failed load
and no request leaving the test server.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fastapi import FastAPI
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FilePayload,
    Page,
    Request,
    Response,
    expect,
)
from sqlalchemy import select

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Feedback, Trace, User
from loraloop.testing import make_tiny_model
from loraloop.web import i18n
from tests.factories import make_base_model

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

LOCALES = {"ja": "ja-JP", "en": "en-US"}
PASSWORD = "correct horse battery staple"
EXAMPLES = 60  # a tenth is held out for validation
BROKEN_LINE = 4
TRAINING_MS = 120_000  # the worker's child process imports torch on a busy machine
ANSWER_MS = 60_000
CORRECTION = {"ja": "雲ブレンドは 480 円です。", "en": "The Kumo blend is 480 yen."}

# Runs in every page before its own scripts: says (as a console error, which fails the test)
# when a page is not in the chosen language, and records each drawing of the loss chart as
# (points on the training line, the job's status then).
INIT_SCRIPT = """
document.addEventListener("DOMContentLoaded", () => {
  if (!location.protocol.startsWith("http")) return;
  const lang = document.documentElement.lang;
  if (lang !== %s) console.error("page language is " + lang + " on " + location.pathname);
  const frame = document.getElementById("loss-chart");
  if (!frame) return;
  window.chartDrawings = [];
  new MutationObserver(() => {
    const svg = frame.querySelector("svg");
    if (!svg) return;
    const line = svg.querySelector("path.chart-line--train");
    const points = line
      ? (line.getAttribute("d").match(/[ML]/g) || []).length
      : svg.querySelectorAll("circle.chart-dot--train").length;
    const status = document.getElementById("job-status").textContent;
    window.chartDrawings.push([points, status]);
  }).observe(frame, { childList: true });
});
"""


class Watch:
    """What a person would notice: script errors, failed loads, requests that left the test
    server; and the addresses of the pages (documents) the browser loaded."""

    def __init__(self, page: Page, base: str):
        self.base = base
        self.problems: list[str] = []
        self.pages: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("response", self._response)
        page.on("request", self._request)

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} for {response.url}")
        if response.request.resource_type == "document":
            self.pages.append(response.url.removeprefix(self.base))

    def _request(self, request: Request) -> None:
        if not request.url.startswith((self.base + "/", "data:")):
            self.problems.append(f"request off the test server: {request.url}")

    def expect_refused_upload(self) -> None:
        """The 400 of the broken file is the point; anything else still fails the test."""
        refused = [p for p in self.problems if "400" in p]
        assert refused, self.problems
        assert any(p == f"400 for {self.base}/api/datasets" for p in refused), refused
        self.problems = [p for p in self.problems if "400" not in p]


@pytest.fixture(params=list(LOCALES))
def lang(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    """The app with its local worker, so a queued training run really runs."""
    return create_app(settings, db, local_worker=True)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("journey") / "tiny", hidden=32)


@pytest.fixture
def tiny(db: Database, tiny_folder: Path) -> int:
    return make_base_model(db, tiny_folder, name="tiny").id


@pytest.fixture
def context(browser: Browser, live_server: str, lang: str) -> Iterator[BrowserContext]:
    """A fresh profile whose browser asks for ``lang``; requests off the server are refused."""
    ctx = browser.new_context(
        base_url=live_server, locale=LOCALES[lang], viewport={"width": 1280, "height": 800}
    )
    ctx.route(lambda url: not url.startswith(live_server + "/"), lambda route: route.abort())
    ctx.add_init_script(INIT_SCRIPT % json.dumps(lang))
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    p = context.new_page()
    p.set_default_timeout(20_000)
    watch = Watch(p, live_server)
    yield p, watch
    assert not watch.problems, watch.problems


def jsonl(count: int, *, broken: int | None = None) -> bytes:
    """Short café examples (short rows keep the tiny run to a few seconds)."""
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"ブレンド{i}番は？"},
                    {"role": "assistant", "content": f"{480 + i * 10}円です。"},
                ]
            },
            ensure_ascii=False,
        )
        for i in range(count)
    ]
    if broken is not None:
        rows[broken - 1] = '{"messages": [{"role": "user", "content": "閉じていない行"'
    return ("\n".join(rows) + "\n").encode()


def _file(body: bytes) -> FilePayload:
    return {"name": "cafe.jsonl", "mimeType": "application/jsonl", "buffer": body}


def _in(p: Page, lang: str) -> None:
    expect(p.locator("html")).to_have_attribute("lang", lang)


def _sign_up(p: Page, t: i18n.Translate, lang: str, live_server: str) -> None:
    p.goto("/")
    expect(p).to_have_url(f"{live_server}/signin")
    _in(p, lang)
    p.get_by_role("link", name=t("signin.to_signup")).click()
    expect(p).to_have_url(f"{live_server}/signup")
    _in(p, lang)
    expect(p.get_by_role("heading", level=1)).to_have_text(t("signup.title"))
    p.get_by_label(t("field.email")).fill(f"newcomer-{lang}@example.com")
    p.get_by_label(t("field.display_name")).fill("山田 花子" if lang == "ja" else "Hanako Yamada")
    p.get_by_label(t("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=t("signup.submit")).click()
    expect(p).to_have_url(f"{live_server}/")
    _in(p, lang)


def _upload_broken_then_fixed(p: Page, t: i18n.Translate, watch: Watch) -> None:
    p.locator("nav.nav").get_by_role("link", name=t("nav.datasets")).click()
    expect(p.get_by_role("heading", level=1)).to_have_text(t("data.datasets.title"))
    file_input = p.get_by_label(t("data.upload.file"))
    file_input.set_input_files(files=[_file(jsonl(EXAMPLES, broken=BROKEN_LINE))])
    expect(p.get_by_label(t("data.upload.name"))).to_have_value("cafe")
    p.get_by_role("button", name=t("data.upload.submit")).click()
    report = p.locator("#upload-report")
    expect(report).to_be_visible()
    expect(report).to_contain_text(t("data.report.invalid_title"))
    expect(report.locator(".data-report__line")).to_have_text(
        t("data.report.line", line=BROKEN_LINE)
    )
    watch.expect_refused_upload()

    file_input.set_input_files(files=[_file(jsonl(EXAMPLES))])
    p.get_by_role("button", name=t("data.upload.submit")).click()
    expect(p).to_have_url(re.compile(r"/datasets/\d+\?version=1$"))
    expect(p.locator("#preview-text mark.data-token--trained").first).to_be_visible()


def _start_quick_run(p: Page, t: i18n.Translate) -> None:
    p.get_by_role("link", name=t("data.dataset.train")).click()
    expect(p).to_have_url(re.compile(r"/train\?dataset_id=\d+&version=1$"))
    expect(p.get_by_label(t("data.train.adapter_name"))).to_have_value("cafe-lora")
    p.locator("label.data-preset", has_text=t("data.preset.quick")).click()
    expect(p.locator('input[name="preset"][value="quick"]')).to_be_checked()
    p.get_by_text(t("data.train.advanced")).click()
    p.get_by_label(t("data.train.max_length")).fill("64")
    # three passes over 54 rows, some 80 steps: the run outlasts several of the stream's
    # polls (half a second each) even on a fast machine, so the chart is seen growing
    p.get_by_label(t("data.train.epochs")).fill("3")
    p.get_by_role("button", name=t("data.train.submit")).click()
    expect(p).to_have_url(re.compile(r"/jobs/\d+$"))


def _watch_it_train(p: Page, t: i18n.Translate) -> None:
    status = p.locator("#job-status")
    over = "|".join(re.escape(t(f"job.status.{s}")) for s in ("succeeded", "failed", "cancelled"))
    expect(status).to_have_text(re.compile(f"^({over})$"), timeout=TRAINING_MS)
    assert status.text_content() == t("job.status.succeeded"), p.locator("#job-error").inner_text()
    chart = p.locator("#loss-chart svg")
    expect(chart.locator("title")).to_have_text(t("data.chart.title"))
    expect(chart.locator("path.chart-line--train")).to_have_count(1)  # two points or more
    drawings: list[list[object]] = p.evaluate("window.chartDrawings")
    assert drawings, "the loss chart was never drawn on the job page"
    most = max(int(str(n)) for n, _ in drawings)
    assert most >= 2, f"the chart drew at most {most} point(s): {drawings}"
    live = {n for n, status in drawings if status == t("job.status.running")}
    assert len(live) >= 2, f"the chart did not grow while the job ran: {drawings}"
    expect(p.locator("#job-done")).to_be_visible()


def _chat_and_correct(p: Page, t: i18n.Translate, db: Database, lang: str) -> None:
    p.locator("#job-done").get_by_role("link", name=t("data.job.to_playground")).click()
    expect(p).to_have_url(re.compile(r"/playground\?adapter_id=\d+$"))
    expect(p.get_by_role("heading", level=1)).to_have_text(t("playground.title"))
    expect(p.locator("#pg-target-0")).to_have_value(re.compile(r"^adapter:\d+:1$"))
    p.locator(".pg-settings__summary").click()
    p.get_by_label(t("playground.settings.max_tokens"), exact=True).fill("16")
    p.get_by_label(t("playground.settings.seed"), exact=True).fill("7")
    p.evaluate(
        """() => { window.answerUpdates = 0;
        const inAnswer = (node) => (node.nodeType === 1 ? node : node.parentElement)
          ?.closest(".pg-msg--assistant .pg-msg__text");
        new MutationObserver((changes) => changes.forEach((change) => {
          if (inAnswer(change.target)) window.answerUpdates++;
        })).observe(document.getElementById("pg-columns"),
                    { subtree: true, childList: true, characterData: true }); }"""
    )
    box = p.get_by_label(t("playground.input_label"), exact=True)
    box.fill("ブレンド3番は？")
    box.press("Enter")
    answer = p.locator('.pg-col[data-col="0"] .pg-msg--assistant').last
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_MS)
    text = answer.locator(".pg-msg__text").text_content() or ""
    assert text.strip(), "the playground showed an empty answer"
    assert p.evaluate("window.answerUpdates") >= 3, "the answer did not stream in"
    with db.session() as session:
        (trace,) = session.scalars(select(Trace).where(Trace.source == "playground")).all()
    assert trace.response == text
    expect(answer.locator(".pg-msg__model")).to_have_text("cafe-lora@v1")

    down = answer.get_by_role("button", name=t("playground.feedback.down"), exact=True)
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    answer.get_by_role("button", name=t("playground.feedback.fix")).click()
    answer.get_by_label(t("playground.feedback.fix_label"), exact=True).fill(CORRECTION[lang])
    answer.get_by_role("button", name=t("playground.feedback.fix_save")).click()
    expect(answer.locator(".pg-actions__saved")).to_have_text(t("playground.feedback.fix_saved"))
    with db.session() as session:
        rows = session.scalars(select(Feedback).where(Feedback.trace_id == trace.id)).all()
        ratings = [(r.rating, r.correction) for r in rows]
    assert (-1, None) in ratings, ratings
    assert (None, CORRECTION[lang]) in ratings, ratings


def _deploy(p: Page, t: i18n.Translate, live_server: str) -> tuple[str, str, str]:
    """Deploy the adapter from /deploy; returns (key, model id, base URL) as the page shows
    them: the key in its once-only field, the other two in the Python snippet."""
    p.locator("nav.nav").get_by_role("link", name=t("nav.deploy")).click()
    expect(p).to_have_url(f"{live_server}/deploy")
    expect(p.get_by_label(t("catalog.deploy.target.champion"))).to_be_checked()
    expect(p.get_by_label(t("catalog.deploy.name"), exact=True)).to_have_value("cafe-lora")
    p.get_by_role("button", name=t("catalog.deploy.submit")).click()
    panel = p.locator("#deploy-result")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text(t("catalog.secret.once"))
    key = p.get_by_label(t("catalog.secret.label"), exact=True).input_value()
    python = panel.locator("#new-python").text_content() or ""
    found = {
        name: re.search(rf'{name}="([^"]+)"', python) for name in ("base_url", "api_key", "model")
    }
    assert all(found.values()), python
    values = {name: match.group(1) for name, match in found.items() if match}
    assert values["api_key"] == key, "the snippet's key is not the key shown"
    return key, values["model"], values["base_url"]


def _call_with_openai(key: str, model: str, base_url: str) -> str:
    with httpx.Client(trust_env=False, timeout=60) as http:  # loopback: no proxy
        client = openai.OpenAI(base_url=base_url, api_key=key, http_client=http, max_retries=0)
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "ブレンド5番は？"}],
            max_tokens=12,
        )
    return reply.choices[0].message.content or ""


def test_newcomer_signs_up_trains_chats_deploys_and_calls_the_api(
    page: tuple[Page, Watch],
    live_server: str,
    db: Database,
    tiny: int,
    lang: str,
) -> None:
    p, watch = page
    t = i18n.translator(lang)
    started = time.monotonic()

    _sign_up(p, t, lang, live_server)
    with db.session() as session:
        (me,) = session.scalars(select(User)).all()
        assert me.locale == lang
    _upload_broken_then_fixed(p, t, watch)
    _start_quick_run(p, t)
    _watch_it_train(p, t)
    _chat_and_correct(p, t, db, lang)
    key, model, base_url = _deploy(p, t, live_server)
    assert key.startswith("ll_")
    assert (model, base_url) == ("cafe-lora", f"{live_server}/v1")
    assert _call_with_openai(key, model, base_url).strip(), "the API answered nothing"

    seen = {re.sub(r"\d+", "N", url.split("?")[0]) for url in watch.pages}
    wanted = {"/signin", "/signup", "/", "/datasets", "/datasets/N", "/train", "/jobs/N"}
    assert wanted | {"/playground", "/deploy"} <= seen, seen
    elapsed = time.monotonic() - started
    print(f"journey in {lang}: {elapsed:.1f}s")
