"""The data journey in a real browser, on the tiny model with a local worker: upload a file
with a broken line (the report names the line), upload the fixed file by drag and drop, read
the preview with its trained tokens highlighted, start a quick run and watch its loss chart
grow until the job succeeds; then the finished job's page draws the chart from stored events.
Screenshots of every page, light and dark, desktop and phone, land in ``.artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from playwright.sync_api import BrowserContext, FilePayload, Page, expect

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.testing import make_tiny_model
from loraloop.web import i18n
from tests.factories import make_base_model

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

JA, EN = i18n.translator("ja"), i18n.translator("en")
PASSWORD = "correct horse battery staple"
TRAINING_SECONDS = 240_000  # ms: the child process imports torch on a busy machine
BROKEN_LINE = 3
EXAMPLES, TRAIN = 12, 11  # one of twelve is held out for validation


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    """The app with its local worker, so a queued training run really runs."""
    return create_app(settings, db, local_worker=True)


@pytest.fixture
def tiny(db: Database, tmp_path: Path) -> int:
    base = make_base_model(db, make_tiny_model(tmp_path / "tiny"), name="tiny")
    return base.id


class Watch:
    """Script errors, failed loads and requests that left the test server."""

    def __init__(self, page: Page, base: str):
        self.base = base
        self.problems: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("response", self._response)
        page.on("request", self._request)

    def _response(self, response: object) -> None:
        status = getattr(response, "status", 0)
        if status >= 400:
            self.problems.append(f"{status} for {getattr(response, 'url', '')}")

    def _request(self, request: object) -> None:
        url = str(getattr(request, "url", ""))
        self.urls.append(url)
        if not url.startswith((self.base + "/", "data:")):
            self.problems.append(f"request off the test server: {url}")

    def expect_refused_upload(self) -> None:
        """The 400 of a refused upload is the point; anything else still fails the test."""
        expected = [p for p in self.problems if "400" in p]
        assert expected, self.problems
        self.problems = [p for p in self.problems if "400" not in p]


@pytest.fixture
def page(context: BrowserContext, live_server: str) -> Iterator[tuple[Page, Watch]]:
    p = context.new_page()
    watch = Watch(p, live_server)
    p.set_default_timeout(20_000)
    yield p, watch
    assert not watch.problems, watch.problems


def _jsonl(count: int, *, broken: int | None = None) -> bytes:
    lines = []
    for i in range(count):
        row = {
            "messages": [
                {"role": "system", "content": "あなたは雲珈琲の店員です。"},
                {"role": "user", "content": f"雲ブレンド{i}番はいくらですか？"},
                {"role": "assistant", "content": f"{480 + i * 10}円です。"},
            ]
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    if broken is not None:
        lines[broken - 1] = '{"messages": [{"role": "user", "content": "閉じていない行"'
    return ("\n".join(lines) + "\n").encode()


def _sign_up(p: Page) -> None:
    p.goto("/signup")
    p.get_by_label(JA("field.email")).fill("kenji@example.com")
    p.get_by_label(JA("field.display_name")).fill("佐藤 健二")
    p.get_by_label(JA("field.password")).fill(PASSWORD)
    p.get_by_role("button", name=JA("signup.submit")).click()
    expect(p).to_have_url(re.compile(r"/$"))


def _upload_broken(p: Page) -> None:
    broken: FilePayload = {
        "name": "cafe.jsonl",
        "mimeType": "application/jsonl",
        "buffer": _jsonl(EXAMPLES, broken=BROKEN_LINE),
    }
    p.get_by_label(JA("data.upload.file")).set_input_files(files=[broken])
    expect(p.get_by_label(JA("data.upload.name"))).to_have_value("cafe")
    p.get_by_role("button", name=JA("data.upload.submit")).click()
    report = p.locator("#upload-report")
    expect(report).to_be_visible()
    expect(report).to_contain_text(JA("data.report.invalid_title"))
    expect(report.locator("li")).to_have_count(1)
    expect(report.locator(".data-report__line")).to_have_text(
        JA("data.report.line", line=BROKEN_LINE)
    )


def _drop(p: Page, body: bytes, name: str) -> None:
    """Drop a file on the upload area, as a person dragging it from their desktop would."""
    transfer = p.evaluate_handle(
        """([text, name]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: "application/jsonl" }));
            return dt;
        }""",
        [body.decode(), name],
    )
    p.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
    expect(p.locator("#drop-zone")).to_have_class(re.compile("is-dragover"))
    p.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


_WIDER = """() => [...document.querySelectorAll("body *")]
    .filter((el) => el.getBoundingClientRect().right > 375.5)
    .filter((el) => !el.closest(".nav, .table-wrap, pre, .data-log"))
    .slice(0, 8)
    .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)"""


def _fits(p: Page, what: str) -> None:
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{what} scrolls sideways at 375px ({width}px wide): {p.evaluate(_WIDER)}"


def _shoot(
    p: Page,
    live_server: str,
    screenshots: Path,
    name: str,
    ready: str,
    prepare: Callable[[Page], None] | None = None,
) -> None:
    """Screenshots of the current page, light and dark, desktop and phone (``prepare`` runs
    after each reload, to open what a person would open)."""
    for theme in ("light", "dark"):
        p.context.add_cookies([{"name": "loraloop_theme", "value": theme, "url": live_server}])
        for width, height, size in ((1280, 800, "desktop"), (375, 740, "phone")):
            p.set_viewport_size({"width": width, "height": height})
            p.reload()
            expect(p.locator("html")).to_have_attribute("data-theme", theme)
            if prepare is not None:
                prepare(p)
            expect(p.locator(ready).first).to_be_visible()
            if size == "phone":
                _fits(p, name)
            p.screenshot(path=screenshots / f"data-{name}-{theme}-{size}.png", full_page=True)
    p.context.add_cookies([{"name": "loraloop_theme", "value": "light", "url": live_server}])
    p.set_viewport_size({"width": 1280, "height": 800})


def _quick_and_short(p: Page) -> None:
    """The quick preset, with short rows and two epochs so the tiny run takes several steps."""
    p.locator("label.data-preset", has_text=JA("data.preset.quick")).click()
    expect(p.locator('input[name="preset"][value="quick"]')).to_be_checked()
    p.get_by_text(JA("data.train.advanced")).click()
    p.get_by_label(JA("data.train.max_length")).fill("160")
    p.get_by_label(JA("data.train.epochs")).fill("2")


def _advanced_open(p: Page) -> None:
    p.locator("#advanced summary").click()
    expect(p.locator("#estimate-value")).not_to_have_text("—")


def test_upload_fix_preview_train_and_watch_the_chart(
    page: tuple[Page, Watch], live_server: str, screenshots: Path, tiny: int
) -> None:
    p, watch = page
    _sign_up(p)

    # 1. a file with a broken line: the report names the line, nothing is stored
    p.goto("/datasets")
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("data.datasets.title"))
    _upload_broken(p)
    watch.expect_refused_upload()
    p.screenshot(path=screenshots / "data-upload-report-light-desktop.png", full_page=True)
    p.set_viewport_size({"width": 375, "height": 740})
    _fits(p, "the upload report")
    p.screenshot(path=screenshots / "data-upload-report-light-phone.png", full_page=True)
    p.set_viewport_size({"width": 1280, "height": 800})

    # 2. the fixed file, dropped on the upload area: progress, then the dataset page
    _drop(p, _jsonl(EXAMPLES), "cafe.jsonl")
    expect(p.locator("#upload-chosen")).to_contain_text("cafe.jsonl")
    p.get_by_role("button", name=JA("data.upload.submit")).click()
    expect(p).to_have_url(re.compile(r"/datasets/\d+\?version=1$"))
    dataset_url = p.url

    # 3. the preview: the assistant's reply is highlighted as trained, the rest masked
    trained = p.locator("#preview-text mark.data-token--trained")
    expect(trained.first).to_be_visible()
    expect(p.locator("#preview-text .data-token--masked").first).to_contain_text("<|im_start|>")
    expect(trained.first).to_contain_text("円です。")
    expect(p.locator("#preview-position")).to_have_text(
        JA("data.preview.position", index=1, total=TRAIN)
    )
    expect(p.locator("#token-stats-list")).to_be_visible()
    p.get_by_role("button", name=JA("data.preview.next")).click()
    expect(p.locator("#preview-position")).to_have_text(
        JA("data.preview.position", index=2, total=TRAIN)
    )
    p.goto("/datasets")
    _shoot(p, live_server, screenshots, "datasets", "#upload-form")
    p.goto(dataset_url)
    _shoot(p, live_server, screenshots, "dataset", "#preview-text mark")

    # 4. a quick run of the tiny model, from the dataset page
    p.goto(dataset_url)
    p.get_by_role("link", name=JA("data.dataset.train")).click()
    expect(p).to_have_url(re.compile(r"/train\?dataset_id=\d+&version=1$"))
    expect(p.get_by_label(JA("data.train.adapter_name"))).to_have_value("cafe-lora")
    _shoot(p, live_server, screenshots, "train", "#estimate-value", _quick_and_short)
    expect(p.get_by_label(JA("data.train.rank"))).to_have_attribute("placeholder", "8")
    expect(p.locator("#estimate-value")).to_contain_text("約")
    expect(p.locator("#estimate-detail")).to_contain_text("トークン")
    p.get_by_role("button", name=JA("data.train.submit")).click()
    expect(p).to_have_url(re.compile(r"/jobs/\d+$"))
    job_url = p.url

    # 5. the live chart gets points as events stream in, and the job succeeds
    status = p.locator("#job-status")
    over = "|".join(JA(f"job.status.{s}") for s in ("succeeded", "failed", "cancelled"))
    expect(status).to_have_text(re.compile(over), timeout=TRAINING_SECONDS)
    error = p.locator("#job-error-text").text_content()
    assert status.text_content() == JA("job.status.succeeded"), error
    chart = p.locator("#loss-chart svg")
    expect(chart).to_have_attribute("role", "img")
    expect(chart.locator("title")).to_have_text(JA("data.chart.title"))
    expect(chart.locator("path.chart-line--train")).to_have_count(1)  # two or more points
    expect(chart.locator("circle.chart-dot--val").first).to_be_attached()
    assert any("/stream" in url for url in watch.urls), "the page did not follow the stream"
    done = p.locator("#job-done")
    expect(done).to_be_visible()
    expect(done.get_by_role("link", name=JA("data.job.to_playground"))).to_have_attribute(
        "href", re.compile(r"^/playground\?adapter_id=\d+$")
    )
    expect(p.locator("#job-cancel")).to_be_hidden()
    expect(p.locator("#job-log li").first).to_be_visible()

    # 6. a finished job's page draws the chart from its stored events, without the stream
    watch.urls.clear()
    p.goto(job_url)
    expect(p.locator("#loss-chart svg path.chart-line--train")).to_have_count(1)
    p.wait_for_function(
        "(() => { const bar = document.getElementById('job-progress');"
        " return bar.max > 1 && bar.value === bar.max; })()"
    )
    assert not any("/stream" in url for url in watch.urls), watch.urls
    steps = p.evaluate("document.querySelectorAll('#job-log li').length")
    assert steps >= 3
    _shoot(p, live_server, screenshots, "job", "#loss-chart svg")

    # 7. the same pages in English
    p.get_by_role("button", name="English").click()
    expect(p.locator("html")).to_have_attribute("lang", "en")
    expect(p.locator("#job-status")).to_have_text(EN("job.status.succeeded"))
    _shoot(p, live_server, screenshots, "job-en", "#loss-chart svg")
    p.goto("/train")
    _shoot(p, live_server, screenshots, "train-en", "#estimate-value", _advanced_open)
