"""The community pages in a real browser. A reviewer commits and reveals from ``/reviews``:
the page's script seals each verdict with SHA-256 exactly as ``review.commitment_of`` does (the
server accepts the commitment, then the reveal matches it, a fix with Japanese, quotes, a tab
and an emoji included), keeps the salt in localStorage and reveals by itself once every
reviewer has committed. A duplicate offered through the community page shows its refusal.
Screenshots of the three pages go to ``.artifacts/screenshots/`` (and from there to
``docs/screenshots/``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Dialog, Locator, Page, expect
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.contributions import review
from loraloop.db.engine import Database
from loraloop.db.tables import Contribution, ReviewAssignment, User
from loraloop.web import i18n
from tests.browser.test_catalog_pages import sign_in
from tests.browser.test_journey import Watch
from tests.test_web_community import Community, community_world

pytestmark = pytest.mark.browser

JA = i18n.translator("ja")
#: A fix whose JSON needs escaping: quotes, a backslash, a newline, a tab, non-ASCII, an emoji.
EDIT = 'あります。"Kumo-Free" は無料です\\n\n\tパスワードは店頭で 🍵'

HASHES: list[tuple[int, str, str, list[dict[str, str]] | None]] = [
    # assignment, verdict, salt, edited messages
    (1, "accept", "0123456789abcdef", None),
    (987654, "reject", "塩-salt", None),
    (
        42,
        "fix",
        "s" * 64,
        [
            {"role": "user", "content": "質問 </script>"},
            {"role": "assistant", "content": 'é "q" \\ \n\r\t\u0001\u007f\u2028 🍵 end'},
        ],
    ),
    (7, "fix", "salt1234", [{"content": "keys out of order", "role": "user"}]),
]


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


def _drawn(db: Database, user: User) -> dict[int, ReviewAssignment]:
    """The user's assignments by contribution id."""
    with db.session() as session:
        rows = session.scalars(
            select(ReviewAssignment).where(ReviewAssignment.reviewer_id == user.id)
        )
        return {a.contribution_id: a for a in rows}


def _assignment(db: Database, assignment_id: int) -> ReviewAssignment:
    with db.session() as session:
        row = session.get(ReviewAssignment, assignment_id)
        assert row is not None
        return row


def _commit_others(db: Database, settings: Settings, world: Community, item: int) -> None:
    """The two other reviewers commit ``accept`` on ``item`` (through the service)."""
    for person in world.others:
        a = _drawn(db, person)[item]
        with db.session() as session:
            commitment = review.commitment_of(a.id, "accept", f"other-{a.id}")
            review.commit(session, settings, person, a.id, commitment)


def _reveal_others(db: Database, settings: Settings, world: Community, item: int) -> None:
    for person in world.others:
        a = _drawn(db, person)[item]
        with db.session() as session:
            review.reveal(session, settings, person, a.id, verdict="accept", salt=f"other-{a.id}")


def _kept(p: Page, assignment_id: int) -> dict[str, Any] | None:
    value: dict[str, Any] | None = p.evaluate(
        "id => JSON.parse(localStorage.getItem('loraloop.review.' + id))", assignment_id
    )
    return value


def _task(p: Page, assignment_id: int) -> Locator:
    return p.locator(f"#review-{assignment_id}")


def test_a_reviewer_commits_and_reveals_from_the_reviews_page(
    watched: tuple[Page, Watch],
    db: Database,
    settings: Settings,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    p, _ = watched
    world = community_world(db, settings, tmp_path)
    sign_in(p, world.reviewer)
    p.get_by_role("navigation").get_by_role("link", name=JA("nav.reviews")).click()
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("community.reviews.heading"))
    expect(p.locator("#no-crypto")).to_be_hidden()  # 127.0.0.1 is a secure context

    # the page's hash is review.commitment_of, byte for byte
    for assignment, verdict, salt, edited in HASHES:
        js = p.evaluate(
            "([a, v, s, e]) => window.loraloop.review.commitmentOf(a, v, s, e)",
            [assignment, verdict, salt, edited],
        )
        assert js == review.commitment_of(assignment, verdict, salt, edited), (verdict, salt)

    drawn = _drawn(db, world.reviewer)
    example, case, gold = (
        drawn[world.pending_example].id,
        drawn[world.pending_case].id,
        drawn[world.gold].id,
    )
    expect(p.locator("[data-task]")).to_have_count(3)
    expect(p.get_by_text("投稿者 秘密子")).to_have_count(0)  # never the author

    # 1. the example: fix it; only the hash is sent, the rest stays in this browser
    task = _task(p, example)
    expect(task.locator("[data-state-label]")).to_have_text(JA("community.state.assigned"))
    expect(task.get_by_label(JA("community.reviews.fix_label"))).to_be_hidden()
    task.get_by_role("button", name=JA("community.reviews.commit")).click()
    expect(task.get_by_role("alert")).to_have_text(JA("community.js.pick_verdict"))
    task.get_by_role("button", name=JA("community.verdict.fix"), exact=True).click()
    fix = task.get_by_label(JA("community.reviews.fix_label"))
    expect(fix).to_be_focused()
    expect(fix).to_have_value("ありません。")  # starts from the answer under review
    fix.fill(EDIT)
    task.get_by_label(JA("community.reviews.comment")).fill("Wi-Fiはあります")
    task.get_by_role("button", name=JA("community.reviews.commit")).click()
    expect(task.locator("[data-state-label]")).to_have_text(JA("community.state.waiting"))
    expect(task.locator("[data-kept]")).to_have_text(
        JA("community.js.kept", verdict=JA("community.verdict.fix"))
    )
    secret = _kept(p, example)
    assert secret is not None
    edited = [
        {"role": "user", "content": "Wi-Fiはありますか？"},
        {"role": "assistant", "content": EDIT},
    ]
    assert secret["verdict"] == "fix"
    assert secret["edited"] == edited
    committed = _assignment(db, example)
    assert committed.state == "committed"
    assert committed.verdict is None  # the server knows nothing but the hash
    assert committed.commitment == review.commitment_of(example, "fix", secret["salt"], edited)

    # the eval case gets no "fix" (the service would refuse it at the reveal)
    case_task = _task(p, case)
    expect(case_task.locator('[data-verdict="fix"]')).to_have_count(0)
    case_task.get_by_role("button", name=JA("community.verdict.accept"), exact=True).click()
    expect(case_task.locator('[data-verdict="accept"]')).to_have_attribute("aria-pressed", "true")
    p.screenshot(path=screenshots / "community-reviews-ja-light-1280.png", full_page=True)

    # 2. the others commit: the reveal opens, and the page reveals by itself on load
    _commit_others(db, settings, world, world.pending_example)
    p.reload()
    task = _task(p, example)
    expect(task.locator("[data-state-label]")).to_have_text(JA("community.state.done"))
    expect(task.locator("[data-kept]")).to_have_text(JA("community.js.revealed"))
    revealed = _assignment(db, example)
    assert revealed.state == "revealed"  # the reveal matched the commitment
    assert (revealed.verdict, revealed.edited, revealed.comment) == (
        "fix",
        edited,
        "Wi-Fiはあります",
    )
    assert _kept(p, example) is None  # nothing left behind once revealed

    # 3. the eval case: the others committed first, so committing opens the reveal at once
    _commit_others(db, settings, world, world.pending_case)
    case_task = _task(p, case)
    case_task.get_by_role("button", name=JA("community.verdict.accept"), exact=True).click()
    case_task.get_by_role("button", name=JA("community.reviews.commit")).click()
    expect(case_task.locator("[data-state-label]")).to_have_text(JA("community.state.done"))
    assert _assignment(db, case).state == "revealed"
    assert _assignment(db, case).verdict == "accept"

    # the others reveal: the consensus accepts both (the example as written: 2 accepts to 1 fix)
    _reveal_others(db, settings, world, world.pending_example)
    _reveal_others(db, settings, world, world.pending_case)
    with db.session() as session:
        for item in (world.pending_example, world.pending_case):
            row = session.get(Contribution, item)
            assert row is not None
            assert (row.status, row.decided_via) == ("accepted", "consensus")

    # the gold item is still waiting; after a reload only it is left
    p.reload()
    expect(p.locator("[data-task]")).to_have_count(1)
    expect(_task(p, gold).locator("[data-state-label]")).to_have_text(
        JA("community.state.assigned")
    )


def test_a_duplicate_offered_on_the_community_page_is_refused_with_a_pointer(
    watched: tuple[Page, Watch],
    db: Database,
    settings: Settings,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    p, watch = watched
    world = community_world(db, settings, tmp_path)
    sign_in(p, world.reviewer)
    p.goto(f"/adapters/{world.adapter_id}")
    p.get_by_role("link", name=JA("community.link"), exact=True).click()
    expect(p.get_by_role("heading", level=1)).to_contain_text(JA("community.title"))
    form = p.locator("#example-form")
    form.get_by_label(JA("community.example.question")).fill("Wi-Fiはありますか？")
    form.get_by_label(JA("community.example.answer")).fill("ありません。")
    watch.problems.clear()
    with p.expect_response(lambda r: r.request.method == "POST") as posted:
        form.get_by_role("button", name=JA("community.example.submit")).click()
    assert posted.value.status == 409
    refusal = p.locator('[data-refusal="example"]')
    expect(refusal).to_contain_text(JA("community.refused.duplicate", id=world.pending_example))
    # the refusal is the answer expected here: the page's 409 is no problem (and the only one)
    expected = {
        f"409 for {posted.value.url}",
        "console error: Failed to load resource: the "
        "server responded with a status of 409 (Conflict)",
    }
    assert set(watch.problems) <= expected, watch.problems
    watch.problems.clear()
    expect(form.get_by_label(JA("community.example.answer"))).to_have_value("ありません。")
    p.screenshot(path=screenshots / "community-refused-ja-light-1280.png", full_page=True)

    # the pool toggle says where the reviewer stands, and is a real button
    leave = p.get_by_role("button", name=JA("community.pool.leave"))
    expect(leave).to_have_attribute("aria-pressed", "true")

    # the owner's view and the author's points, as their people see them

    p.context.clear_cookies()
    sign_in(p, world.owner)
    p.goto(f"/adapters/{world.adapter_id}/community")
    expect(p.locator("[data-pending]")).to_have_count(2)
    p.screenshot(path=screenshots / "community-owner-ja-light-1280.png", full_page=True)

    p.context.clear_cookies()
    sign_in(p, world.author)
    p.get_by_role("navigation").get_by_role("link", name=JA("nav.rewards")).click()
    p.get_by_role("link", name=JA("rewards.to_points")).click()
    expect(p.get_by_role("heading", level=1)).to_have_text(JA("community.points.heading"))
    expect(p.locator("[data-entry]")).to_have_count(4)
    p.screenshot(path=screenshots / "community-points-ja-light-1280.png", full_page=True)
    # the nav with its two new entries still fits the header at 1280 px
    nav = p.get_by_role("navigation", name=JA("nav.label"))
    box = nav.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 1280
