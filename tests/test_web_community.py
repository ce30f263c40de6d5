"""The community pages rendered on the server from rows made through the real services
(MiniLM embeds every item): an adapter's community page with its forms, refusals and
leaderboard; the review queue, which never shows who wrote an item; and "my contributions and
my points", where every entry shows its formula, each factor and the event behind it. Both
languages; a private adapter is a 404 to anyone its owner did not invite."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.contributions import items, review, rules
from loraloop.db.engine import Database
from loraloop.db.tables import (
    CommunityMember,
    Contribution,
    GateDecision,
    PointsEntry,
    RetrainRun,
    ReviewAssignment,
    User,
)
from loraloop.identity import accounts
from loraloop.mlops import promotion
from loraloop.storage import Storage
from loraloop.web import community_views, i18n, pages_community
from tests.factories import make_user, sign_in
from tests.mlops_world import World, add_version, make_world, quick_user

HTML = {"accept": "text/html,application/xhtml+xml"}
AUTHOR_NAME = "投稿者 秘密子"
AUTHOR_EMAIL = "secret-author@example.com"


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def example(question: str, answer: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


@dataclass(frozen=True)
class Community:
    """A public adapter with a history: one item accepted by consensus, one by the owner, a
    promotion that shared an impact bonus, and three items waiting in the reviewers' queues
    (an example, an eval case and a gold item); plus a private adapter of the same owner."""

    owner: User
    author: User
    reviewer: User
    others: list[User]
    adapter_id: int
    private_id: int
    consensus: int
    accepted: int
    pending_example: int
    pending_case: int
    gold: int


def _vote(db: Database, settings: Settings, people: list[User], item: int, verdict: str) -> None:
    """Everyone drawn for ``item`` commits ``verdict``, then everyone reveals it."""
    by = {p.id: p for p in people}
    with db.session() as session:
        drawn = list(
            session.scalars(
                select(ReviewAssignment).where(ReviewAssignment.contribution_id == item)
            )
        )
    for a in drawn:
        with db.session() as session:
            salt = f"salt-{a.id}-0123"
            commitment = review.commitment_of(a.id, verdict, salt)
            review.commit(session, settings, by[a.reviewer_id], a.id, commitment)
    for a in drawn:
        with db.session() as session:
            review.reveal(
                session,
                settings,
                by[a.reviewer_id],
                a.id,
                verdict=verdict,
                salt=f"salt-{a.id}-0123",
            )


def _promote(db: Database, world: World, tmp_path: Path) -> None:
    """A retrained version holding the accepted examples is promoted with a +0.1 gain."""
    world_adapter = world.adapter_id
    v2 = add_version(db, world, tmp_path / "v2")
    with db.session() as session:
        through = max(
            c
            for c in session.scalars(
                select(Contribution.candidate_id).where(Contribution.adapter_id == world_adapter)
            )
            if c is not None
        )
        session.add(
            RetrainRun(
                adapter_id=world_adapter,
                trigger="examples",
                status="promoted",
                detail={"candidates_through": through},
                challenger_version_id=v2,
            )
        )
        decision = GateDecision(
            adapter_id=world_adapter,
            champion_version_id=world.version_id(1),
            challenger_version_id=v2,
            outcome="promote",
            reason="better",
            numbers={"pooled": {"delta": 0.1}},
        )
        session.add(decision)
        session.flush()
        promotion.promote(session, world_adapter, v2, cause="gate", decision=decision)


def community_world(db: Database, settings: Settings, tmp_path: Path) -> Community:
    owner = make_user(db, email="owner@example.com")
    author = make_user(db, email=AUTHOR_EMAIL)
    reviewer = make_user(db, email="reviewer@example.com")
    with db.session() as session:
        accounts.update_profile(session, owner, display_name="山田 花子")
        accounts.update_profile(session, author, display_name=AUTHOR_NAME)
        accounts.update_profile(session, reviewer, display_name="鈴木 一郎")
    others = [quick_user(db), quick_user(db)]
    world = make_world(db, tmp_path / "public", versions=1, owner=owner, visibility="public")
    private = make_world(db, tmp_path / "private", versions=1, owner=owner)
    storage = Storage(settings.home / "artifacts")
    people = [reviewer, *others]
    with db.session() as session:
        for person in people:
            items.enrol(session, person, world.adapter_id, reviewer=True)

    def offer(kind: str, item: dict[str, object], source: str | None = None) -> int:
        with db.session() as session:
            return items.submit(
                session,
                settings,
                storage,
                author,
                world.adapter_id,
                kind=kind,
                item=item,
                source=source,
            ).id

    consensus = offer("example", example("桜ラテはいくらですか？", "660円です。"), "店頭メニュー")
    _vote(db, settings, people, consensus, "accept")
    accepted = offer("example", example("オーツミルクに変更できますか？", "はい、+50円です。"))
    with db.session() as session:
        items.decide(session, owner, accepted, accept=True)
    _promote(db, world, tmp_path)
    pending_example = offer(
        "example", example("Wi-Fiはありますか？", "ありません。"), "https://example.com/faq"
    )
    pending_case = offer("eval_case", {"prompt": "営業時間は？", "expected": "8時"})
    with db.session() as session:
        gold = items.add_gold(
            session,
            settings,
            owner,
            world.adapter_id,
            kind="example",
            item=example("定休日はいつですか？", "火曜日です。"),
            verdict="accept",
        ).id
    return Community(
        owner,
        author,
        reviewer,
        others,
        world.adapter_id,
        private.adapter_id,
        consensus,
        accepted,
        pending_example,
        pending_case,
        gold,
    )


@pytest.fixture
def world(db: Database, settings: Settings, tmp_path: Path) -> Community:
    return community_world(db, settings, tmp_path)


def page(client: TestClient, path: str, status: int = 200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.text[:500]
    return response.text


def as_user(client: TestClient, db: Database, user: User, lang: str = "ja") -> str:
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)
    return sign_in(client, user)


def post(client: TestClient, path: str, token: str, **fields: str) -> Any:
    return client.post(
        path, data={"csrf_token": token, **fields}, headers=HTML, follow_redirects=False
    )


# the community page ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_a_contributor_sees_the_forms_the_pool_the_board_and_the_rules(
    client: TestClient, db: Database, world: Community, lang: str
) -> None:
    as_user(client, db, world.reviewer, lang)
    text = page(client, f"/adapters/{world.adapter_id}/community")
    assert f'<html lang="{lang}"' in text
    for key in (
        "community.offer.heading",
        "community.example.heading",
        "community.case.heading",
        "community.pool.leave",
        "community.board.heading",
        "community.rules.heading",
    ):
        assert text_of(lang, key) in text, key
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, "community.board.heading") not in text
    assert 'aria-current="page" href="/adapters"' in text  # the adapters area of the nav
    # the owner's parts are not there
    assert 'id="pending"' not in text
    assert 'id="gold-form"' not in text
    # the leaderboard: the author first (two items and an impact share), then the reviewers
    board = text.split('id="leaderboard"')[1].split("</table>")[0]
    assert board.index(html.escape(AUTHOR_NAME)) < board.index("鈴木 一郎")
    assert text_of(lang, "community.board.you") in board
    # the formula's numbers are the rules' own
    numbers = community_views.rule_numbers()
    assert numbers["base_example"] == community_views.number(rules.BASE_POINTS["example"])
    expected = text_of(
        lang,
        "community.rules.base",
        example=numbers["base_example"],
        eval_case=numbers["base_eval_case"],
        correction=numbers["base_correction"],
    )
    assert expected in text
    assert text_of(lang, "community.rules.drift", bonus=f"{rules.DRIFT_BONUS:g}") in text
    probation = text_of(
        lang,
        "community.rules.probation",
        weight=f"{rules.PROBATION_WEIGHT:g}",
        reviews=rules.PROBATION_REVIEWS,
    )
    assert probation in text


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_owner_sees_the_pending_items_and_the_owner_forms(
    client: TestClient, db: Database, world: Community, lang: str
) -> None:
    as_user(client, db, world.owner, lang)
    text = page(client, f"/adapters/{world.adapter_id}/community")
    pending = text.split('id="pending"')[1].split("</section>")[0]
    listed = re.findall(r'data-pending="(\d+)"', pending)
    assert sorted(map(int, listed)) == sorted([world.pending_example, world.pending_case])
    assert "Wi-Fiはありますか？" in pending
    assert "https://example.com/faq" in pending  # provenance
    assert "8時" in pending  # the eval case's expected answer
    assert str(world.gold) not in listed  # gold items are not waiting for a decision
    assert text_of(lang, "community.pending.reject") in pending
    assert 'name="reason"' in pending
    assert 'id="gold-form"' in text
    assert 'id="invite-form"' not in text  # a public adapter needs no invitations
    assert 'action="/adapters/' + str(world.adapter_id) + '/community/reviewer"' not in text
    assert text_of(lang, "community.counts.gold", count=1) in text
    private = page(client, f"/adapters/{world.private_id}/community")
    assert 'id="invite-form"' in private


def test_the_owner_accepts_and_rejects_with_a_reason(
    client: TestClient, db: Database, world: Community
) -> None:
    token = as_user(client, db, world.owner, "en")
    base = f"/adapters/{world.adapter_id}/community"
    refused = post(
        client,
        f"{base}/decisions",
        token,
        contribution=str(world.pending_example),
        accept="false",
        reason="  ",
    )
    assert refused.status_code == 400
    assert f'data-refusal="decide-{world.pending_example}"' in refused.text
    assert "say why the contribution is rejected" in refused.text
    rejected = post(
        client,
        f"{base}/decisions",
        token,
        contribution=str(world.pending_example),
        accept="false",
        reason="We do have Wi-Fi.",
    )
    assert rejected.status_code == 303
    location = rejected.headers["location"]
    assert location == f"{base}?done=rejected&id={world.pending_example}#pending"
    after = page(client, location)
    assert text_of("en", "community.done.rejected", id=world.pending_example) in after
    accepted = post(
        client, f"{base}/decisions", token, contribution=str(world.pending_case), accept="true"
    )
    assert accepted.status_code == 303
    with db.session() as session:
        example_row = session.get(Contribution, world.pending_example)
        case_row = session.get(Contribution, world.pending_case)
        assert example_row is not None
        assert case_row is not None
        assert (example_row.status, example_row.reason) == ("rejected", "We do have Wi-Fi.")
        assert (case_row.status, case_row.decided_via) == ("accepted", "owner")
    assert text_of("en", "community.pending.empty") in page(client, base)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_submitting_a_duplicate_shows_the_refusal_with_the_existing_item(
    client: TestClient, db: Database, world: Community, lang: str
) -> None:
    token = as_user(client, db, world.reviewer, lang)
    base = f"/adapters/{world.adapter_id}/community"
    fields = {"kind": "example", "question": "豆は買えますか？", "answer": "200gで1400円です。"}
    first = post(client, f"{base}/contributions", token, **fields, source="店員")
    assert first.status_code == 303
    with db.session() as session:
        row = session.scalar(
            select(Contribution).where(Contribution.author_id == world.reviewer.id)
        )
        assert row is not None
        assert row.provenance == {"via": "web", "source": "店員"}
        assert row.status == "pending"
    location = first.headers["location"]
    assert location == f"{base}?done=submitted&id={row.id}#offer"
    assert text_of(lang, "community.done.submitted", id=row.id) in page(client, location)

    again = post(client, f"{base}/contributions", token, **fields)
    assert again.status_code == 409
    text = again.text
    assert 'data-refusal="example"' in text
    assert text_of(lang, "community.refused.duplicate", id=row.id) in text
    assert f"contribution #{row.id} (pending)" in text  # the service's own words, too
    # the form keeps what was typed
    assert "200gで1400円です。</textarea>" in text


def test_an_invalid_eval_case_and_the_rate_limit_are_refused_beside_their_form(
    db: Database, settings: Settings, world: Community
) -> None:
    strict = settings.model_copy(update={"contributions_per_hour": 1})
    with TestClient(create_app(strict, db), base_url="http://127.0.0.1:8000") as client:
        token = as_user(client, db, world.reviewer, "en")
        base = f"/adapters/{world.adapter_id}/community/contributions"
        bad = post(client, base, token, kind="eval_case", question="x?", answer="(", metric="regex")
        assert bad.status_code == 400
        assert 'data-refusal="eval_case"' in bad.text
        good = post(client, base, token, kind="eval_case", question="駐車場は？", answer="3台")
        assert good.status_code == 303
        limited = post(client, base, token, kind="example", question="q?", answer="a.")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0
        assert 'data-refusal="example"' in limited.text
        seconds = re.search(r"Try again in (\d+) seconds", limited.text)
        assert seconds is not None


def test_joining_and_leaving_the_reviewer_pool(
    client: TestClient, db: Database, world: Community
) -> None:
    newcomer = make_user(db)
    token = as_user(client, db, newcomer, "en")
    base = f"/adapters/{world.adapter_id}/community"
    assert text_of("en", "community.pool.join") in page(client, base)
    joined = post(client, f"{base}/reviewer", token, join="true")
    assert joined.headers["location"] == f"{base}?done=reviewer_on#pool"
    text = page(client, joined.headers["location"])
    assert text_of("en", "community.done.reviewer_on") in text
    assert text_of("en", "community.pool.leave") in text
    assert 'data-pool="in"' in text

    def enrolled() -> bool:
        with db.session() as session:
            member = session.scalar(
                select(CommunityMember).where(CommunityMember.user_id == newcomer.id)
            )
            return bool(member and member.reviewer)

    assert enrolled()
    post(client, f"{base}/reviewer", token, join="false")
    assert not enrolled()
    assert text_of("en", "community.pool.join") in page(client, base)


def test_the_owner_adds_gold_and_invites_to_a_private_adapter(
    client: TestClient, db: Database, world: Community
) -> None:
    token = as_user(client, db, world.owner, "en")
    base = f"/adapters/{world.private_id}/community"
    added = post(
        client,
        f"{base}/gold",
        token,
        question="予約できますか？",
        answer="できません。",
        verdict="reject",
    )
    assert added.status_code == 303
    with db.session() as session:
        gold = session.scalar(
            select(Contribution).where(
                Contribution.adapter_id == world.private_id, Contribution.gold.is_not(None)
            )
        )
        assert gold is not None
        assert (gold.gold, gold.status) == ("reject", "gold")
    unknown = post(client, f"{base}/invites", token, email="nobody@example.com")
    assert unknown.status_code == 400
    assert text_of("en", "community.refused.no_account") in unknown.text
    assert 'value="nobody@example.com"' in unknown.text
    invited = post(client, f"{base}/invites", token, email=world.reviewer.email)
    assert invited.headers["location"] == f"{base}?done=invited#invite"
    # the invited reviewer may now open the private community page, and join its reviewers
    as_user(client, db, world.reviewer, "en")
    assert text_of("en", "community.pool.join") in page(client, base)


def test_a_stranger_gets_the_404_of_a_missing_adapter_on_a_private_community(
    client: TestClient, db: Database, world: Community
) -> None:
    token = as_user(client, db, make_user(db), "en")
    theirs = page(client, f"/adapters/{world.private_id}/community", status=404)
    missing = page(client, "/adapters/999999/community", status=404)
    strip = re.compile(r"\d+")
    assert strip.sub("", theirs) == strip.sub("", missing)
    # posting is the same 404, and nothing is written
    offered = post(
        client,
        f"/adapters/{world.private_id}/community/contributions",
        token,
        kind="example",
        question="q?",
        answer="a.",
    )
    assert offered.status_code == 404
    # owner-only forms on a public adapter are a 404 to others too
    gold = post(
        client,
        f"/adapters/{world.adapter_id}/community/gold",
        token,
        question="q?",
        answer="a.",
        verdict="accept",
    )
    assert gold.status_code == 404


def test_forms_need_the_csrf_token_and_a_session(
    client: TestClient, db: Database, world: Community
) -> None:
    response = client.get(f"/adapters/{world.adapter_id}/community", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    for path in ("/reviews", "/me/points"):
        assert client.get(path, follow_redirects=False).headers["location"] == "/signin"
    as_user(client, db, world.reviewer, "en")
    forged = post(
        client, f"/adapters/{world.adapter_id}/community/reviewer", "forged-token", join="false"
    )
    assert forged.status_code == 403


def test_the_adapter_page_links_to_its_community(
    client: TestClient, db: Database, world: Community
) -> None:
    as_user(client, db, world.reviewer, "en")
    text = page(client, f"/adapters/{world.adapter_id}")
    assert f'href="/adapters/{world.adapter_id}/community"' in text
    assert f'href="/adapters/{world.adapter_id}/maintenance"' not in text  # the owner's alone


# the review queue --------------------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_review_queue_shows_items_but_never_their_author(
    client: TestClient, db: Database, world: Community, lang: str
) -> None:
    as_user(client, db, world.reviewer, lang)
    text = page(client, "/reviews")
    assert f'<html lang="{lang}"' in text
    assert 'aria-current="page" href="/reviews"' in text
    with db.session() as session:
        mine = {
            a.contribution_id: a.id
            for a in session.scalars(
                select(ReviewAssignment).where(
                    ReviewAssignment.reviewer_id == world.reviewer.id,
                    ReviewAssignment.state == "assigned",
                )
            )
        }
    assert set(mine) == {world.pending_example, world.pending_case, world.gold}
    assert sorted(map(int, re.findall(r'data-task="(\d+)"', text))) == sorted(mine.values())
    for content in ("Wi-Fiはありますか？", "営業時間は？", "8時", "定休日はいつですか？"):
        assert content in text
    assert "https://example.com/faq" in text
    # never the author, never anyone's verdict, never which item is gold
    assert html.escape(AUTHOR_NAME) not in text
    assert AUTHOR_EMAIL not in text
    assert text_of(lang, "community.status.gold") not in text
    assert "data-verdict-of" not in text
    # the eval case is accepted or rejected, not fixed
    case = text.split(f'id="review-{mine[world.pending_case]}"')[1].split('class="card cm-task"')[0]
    assert 'data-verdict="fix"' not in case
    first = text.split(f'id="review-{mine[world.pending_example]}"')[1].split(
        'class="card cm-task"'
    )[0]
    assert 'data-verdict="fix"' in first
    assert text_of(lang, "community.state.assigned") in text
    assert '<script src="/static/community.js' in text


def test_an_empty_queue_says_how_to_get_reviews(client: TestClient, db: Database) -> None:
    as_user(client, db, make_user(db), "ja")
    text = page(client, "/reviews")
    assert text_of("ja", "community.reviews.empty") in text
    assert "data-task=" not in text


# my contributions and my points ------------------------------------------------------------


def test_the_points_page_lists_every_entry_with_its_factors_and_source(
    client: TestClient, db: Database, world: Community
) -> None:
    as_user(client, db, world.author, "en")
    text = page(client, "/me/points")
    assert 'aria-current="page" href="/rewards"' in text
    with db.session() as session:
        entries = list(
            session.scalars(select(PointsEntry).where(PointsEntry.user_id == world.author.id))
        )
    kinds = sorted(e.kind for e in entries)
    assert kinds == ["contribution", "contribution", "impact", "impact"]
    assert sorted(map(int, re.findall(r'data-entry="(\d+)"', text))) == sorted(
        e.id for e in entries
    )
    total = sum(e.millipoints for e in entries) / 1000
    assert f'<span class="stat__value" data-total>{community_views.number(total)}</span>' in text
    for e in entries:
        block = text.split(f'data-entry="{e.id}"')[1].split("</li>")[0]
        assert html.escape(e.breakdown["formula"]) in block
        terms = [term.strip() for term in e.breakdown["formula"].split("×")]
        for term in terms:  # each factor of the formula with its value
            value = community_views.number(e.breakdown[term])
            assert re.search(
                rf'data-factor="{term}"><span class="equation__value">{re.escape(value)}<', block
            ), (e.kind, term)
        assert f"{community_views.number(e.millipoints / 1000)}</span>" in block
        if e.kind == "contribution":
            assert f'href="#contribution-{e.source_id}"' in block
            assert 'data-detail="distance_to_training_set"' in block
        else:
            assert (
                text_of("en", "community.source.promotion", id=e.source_id, contribution="")[:30]
                in block
            )
    # the accepted contribution: base 10 × quality 1 × novelty 1.5 × drift 1 = 15
    owner_accepted = next(e for e in entries if e.source_id == world.accepted)
    assert owner_accepted.breakdown["points"] == 15.0
    # every contribution is listed with its status, the entries link to it
    for contribution in (world.consensus, world.accepted, world.pending_example):
        assert f'id="contribution-{contribution}"' in text
    assert text_of("en", "community.status.pending") in text
    assert text_of("en", "community.points.probation", weight="0.25", reviews=10, scored=0) in text


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_a_reviewers_points_trace_back_to_the_review(
    client: TestClient, db: Database, world: Community, lang: str
) -> None:
    as_user(client, db, world.reviewer, lang)
    text = page(client, "/me/points")
    assert f'<html lang="{lang}"' in text
    with db.session() as session:
        entry = session.scalar(select(PointsEntry).where(PointsEntry.user_id == world.reviewer.id))
        assert entry is not None
    assert entry.kind == "review"
    block = text.split(f'data-entry="{entry.id}"')[1].split("</li>")[0]
    assert text_of(lang, "community.entry.review") in block
    verdict = i18n.translator(lang)("community.verdict.accept")
    assert text_of(lang, "community.source.review", id=world.consensus, verdict=verdict) in block
    assert 'data-factor="review_points"' in block
    assert 'data-factor="reputation"' in block
    assert text_of(lang, "community.factor.reputation") in block
    assert text_of(lang, "community.mine.empty") in text


# the catalogs ------------------------------------------------------------------------------

DYNAMIC = [
    *(f"community.done.{done}" for done in pages_community.DONE),
    *(f"community.kind.{kind}" for kind in items.KINDS),
    *(f"community.status.{s}" for s in ("pending", "accepted", "rejected", "gold")),
    *(f"community.verdict.{verdict}" for verdict in review.VERDICTS),
    *(f"community.state.{s}" for s in ("assigned", "waiting", "open", "done")),
    *(f"community.entry.{kind}" for kind in ("contribution", "review", "impact")),
    *(f"community.gold.verdict_{verdict}" for verdict in ("accept", "reject")),
    *(f"community.decided_via.{via}" for via in ("consensus", "owner")),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_keys_built_at_run_time_exist(lang: str) -> None:
    missing = sorted(set(DYNAMIC) - set(i18n.catalog(lang)))
    assert not missing, missing


def test_every_factor_of_the_ledger_has_a_name(db: Database, world: Community) -> None:
    with db.session() as session:
        keys = {k for e in session.scalars(select(PointsEntry)) for k in e.breakdown}
    keys -= {"formula"}
    for lang in i18n.LANGUAGES:
        missing = sorted(k for k in keys if f"community.factor.{k}" not in i18n.catalog(lang))
        assert not missing, (lang, missing)


NUMBERS = [(10.0, "10"), (0.25, "0.25"), (1000.0, "1,000"), (12.3456, "12.3456"), (-0.0, "0")]


@pytest.mark.parametrize(("value", "expected"), NUMBERS, ids=[n[1] for n in NUMBERS])
def test_numbers_read_as_people_write_them(value: float, expected: str) -> None:
    assert community_views.number(value) == expected
