"""The maintenance page of an adapter: rendered on the server from real rows made through the
services (versions, alias moves, gate decisions from evaluation jobs, retrain runs, drift
reports, candidates, suites), in both languages; user text escaped; the owner only (anyone
else gets the 404 of a missing adapter); empty states that say what to do."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import aliases
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    Adapter,
    AdapterVersion,
    DriftReport,
    Job,
    Trace,
    TrainingCandidate,
    User,
)
from loraloop.identity import accounts
from loraloop.mlops import feedback, gate, policy, suites
from loraloop.testing import make_tiny_adapter, make_tiny_model
from loraloop.web import i18n, pages_maintenance
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_trace,
    make_user,
    sign_in,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

HTML = {"accept": "text/html,application/xhtml+xml"}
SCRIPT = "<script>alert('x')</script> 営業時間を教えて"
QUESTIONS = [
    ("営業時間は？", "8時"),
    ("定休日は？", "火曜"),
    ("雲ブレンドはいくら？", "480円"),
    ("駐車場はありますか？", "3台"),
]


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("maintenance-models")
    base = make_tiny_model(root / "base")
    folders = {"base": base}
    for seed in (1, 2, 3):
        folders[f"v{seed}"] = make_tiny_adapter(base, root / f"v{seed}", seed=seed)
    return folders


@dataclass(frozen=True)
class World:
    user: User
    adapter_id: int
    refused_decision: int
    candidates: list[int]


def _scored(payload: dict[str, Any], scores: dict[int, list[list[float]]]) -> dict[str, Any]:
    """An evaluate job's result: per version id, per suite, the given case scores."""
    versions: dict[str, Any] = {}
    for version_id, per_suite in scores.items():
        versions[str(version_id)] = {
            str(suite["id"]): {
                "score": sum(values) / len(values),
                "cases": [
                    {"id": case["id"], "score": value, "answer": "…"}
                    for case, value in zip(suite["cases"], values, strict=True)
                ],
            }
            for suite, values in zip(payload["suites"], per_suite, strict=True)
        }
    return {"versions": versions}


def _gate(
    session: Session,
    settings: Settings,
    user: User,
    adapter_id: int,
    version: int,
    scores: dict[int, list[list[float]]],
) -> int:
    """Challenge the champion with ``version`` and finish its evaluation job with ``scores``."""
    run = policy.challenge(session, settings, user, adapter_id, version)
    job = session.get(Job, run.eval_job_id)
    assert job is not None
    job.result = _scored(job.payload, scores)
    gate.evaluation_succeeded(session, job)
    assert run.decision_id is not None
    return run.decision_id


def _drift(session: Session, adapter_id: int, deployment_id: int, version_id: int) -> None:
    series = [(100, 0.05, 0.04, None), (200, 0.08, 0.05, None), (300, 0.31, 0.12, "drift")]
    for requests, ood, bad, alarm in series:
        clusters = [
            {"size": 7, "examples": [SCRIPT, "テイクアウトの予約はできますか"], "members": []},
            {"size": 3, "examples": ["Do you have oat milk?"], "members": []},
        ]
        report = DriftReport(
            deployment_id=deployment_id,
            adapter_id=adapter_id,
            version_id=version_id,
            requests=requests,
            input={
                "p_value": 0.001 if alarm else 0.4,
                "mmd2": 0.01,
                "ood_share": ood,
                "clusters": clusters if alarm else [],
            },
            quality={"n": requests // 10, "rate": bad, "recent_rate": bad, "alarm": False},
            alarm=alarm,
        )
        session.add(report)
        session.flush()
    policy.trigger(session, adapter_id, "drift", {"report_id": report.id})


def maintenance_world(db: Database, settings: Settings, tiny: dict[str, Path]) -> World:
    """An adapter with three versions that went through the whole loop: v2 promoted by the
    gate, v3 refused (it regressed on one suite), drift reports with an alarm and clusters,
    a proposed retrain run, two corrections waiting for review and thumbs on both champions'
    answers."""
    user = make_user(db, email="hanako@example.com")
    with db.session() as session:
        accounts.update_profile(session, user, display_name="山田 花子")
    base = make_base_model(db, tiny["base"], name="tiny-base")
    v1 = make_adapter_version(db, user, base, tiny["v1"], name="kumo-coffee")
    with db.session() as session:
        adapter = session.get(Adapter, v1.adapter_id)
    v2 = make_adapter_version(db, user, base, tiny["v2"], adapter=adapter)
    v3 = make_adapter_version(db, user, base, tiny["v3"], adapter=adapter)
    deployment = make_deployment(
        db, user, settings, name="kumo-coffee", adapter_id=v1.adapter_id, alias="champion"
    )
    aid = v1.adapter_id
    with db.session() as session:
        for name in ("店頭の質問", "敬語"):
            suite = suites.create(session, user, aid, name=name, metric="contains")
            cases = [{"prompt": q, "expected": a} for q, a in QUESTIONS]
            suites.add_cases(session, user, suite.id, cases)
        _gate(
            session,
            settings,
            user,
            aid,
            2,
            {
                v1.id: [[0, 0, 1, 0], [0, 1, 0, 0]],
                v2.id: [[1, 1, 1, 1], [1, 1, 1, 0]],
            },
        )
        refused = _gate(
            session,
            settings,
            user,
            aid,
            3,
            {
                v2.id: [[1, 1, 1, 1], [1, 1, 1, 0]],
                v3.id: [[1, 1, 1, 1], [0, 0, 1, 0]],
            },
        )
        _drift(session, aid, deployment.id, v2.id)
        pending = []
        for question, answer in (
            ("豆は買えますか？", "はい、200gで1400円です。"),
            ("Wi-Fiは？", "<b>無料</b>でお使いいただけます。"),
        ):
            row = TrainingCandidate(
                adapter_id=aid,
                messages=[
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
                status="pending",
                role="train",
            )
            session.add(row)
            session.flush()
            pending.append(row.id)
    _ratings(db, user, v1.id, good=6, bad=4)
    _ratings(db, user, v2.id, good=10, bad=2)
    return World(user, aid, refused, pending)


def _ratings(db: Database, user: User, version_id: int, *, good: int, bad: int) -> None:
    """Thumbs on answers served by the version: its live feedback."""
    for n in range(good + bad):
        trace = make_trace(db, user)
        with db.session() as session:
            row = session.get(Trace, trace.id)
            assert row is not None
            row.adapter_version_id = version_id
            feedback.give(session, user, trace.id, rating=1 if n < good else -1)


def page(client: TestClient, path: str, status: int = 200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.text[:500]
    return response.text


# the full page -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_owner_sees_every_section_in_both_languages(
    client: TestClient, db: Database, settings: Settings, tiny: dict[str, Path], lang: str
) -> None:
    world = maintenance_world(db, settings, tiny)
    with db.session() as session:
        accounts.update_profile(session, world.user, locale=lang)
    sign_in(client, world.user)
    text = page(client, f"/adapters/{world.adapter_id}/maintenance")
    assert f'<html lang="{lang}"' in text
    for key in (
        "maintenance.quality.heading",
        "maintenance.clusters.heading",
        "maintenance.history.heading",
        "maintenance.decisions.heading",
        "maintenance.runs.heading",
        "maintenance.candidates.heading",
        "maintenance.suites.heading",
        "maintenance.policy.heading",
        "maintenance.mode.propose_hint",
    ):
        assert text_of(lang, key) in text, key
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, "maintenance.policy.heading") not in text
    assert text_of(lang, "maintenance.heading", name="kumo-coffee") in text
    # champion v2 (the gate promoted it), no challenger (v3 was refused)
    assert re.search(r'data-alias="champion">v2<', text)
    assert text_of(lang, "maintenance.none") in text
    # both charts are SVG drawn on the server: a line per suite, the drift lines and the alarm
    assert text.count('class="mnt-series__line"') == 2 + 2
    assert 'id="score-chart"' in text
    assert 'id="drift-chart"' in text
    assert text.count('class="mnt-alarm"') == 1
    assert "店頭の質問" in text
    assert "敬語" in text
    # the gate's numbers: pooled delta with its interval, per-suite deltas, an override button
    assert text_of(lang, "maintenance.outcome.refuse") in text
    assert "+0.625" in text  # v2 over v1, pooled over 8 cases
    assert "-0.500" in text  # v3 on 敬語
    assert f'data-decision="{world.refused_decision}" data-promote="true"' in text
    assert text_of(lang, "maintenance.decisions.promote", version=3) in text
    # the retrain run the drift alarm proposed, with approve and dismiss
    assert text_of(lang, "maintenance.status.proposed") in text
    assert 'data-action="approve"' in text
    assert 'data-action="dismiss"' in text
    assert text.count('href="/jobs/') >= 2  # the two gate evaluations
    # alias history: who moved what, and why
    assert text_of(lang, "maintenance.cause.gate") in text
    assert text_of(lang, "maintenance.cause.first") in text
    # corrections waiting, policy form filled from the stored (default) policy
    assert text.count("data-candidate=") == 3 * len(world.candidates)  # li + two buttons
    assert re.search(r'name="mode" value="propose" [^>]*checked', text)
    assert 'value="0.02"' in text
    # live feedback per version
    assert text_of(lang, "maintenance.live.row", bad=2, rated=12, rate="17%") in text


def test_user_text_is_escaped(
    client: TestClient, db: Database, settings: Settings, tiny: dict[str, Path]
) -> None:
    world = maintenance_world(db, settings, tiny)
    sign_in(client, world.user)
    text = page(client, f"/adapters/{world.adapter_id}/maintenance")
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; 営業時間を教えて" in text
    assert "<b>無料</b>" not in text
    assert "&lt;b&gt;無料&lt;/b&gt;" in text
    assert text.count('<li class="mnt-quote">') == 3  # the clusters' example texts


def test_another_user_gets_the_page_of_a_missing_adapter(
    client: TestClient, db: Database, settings: Settings, tiny: dict[str, Path]
) -> None:
    world = maintenance_world(db, settings, tiny)
    with db.session() as session:
        row = session.get(Adapter, world.adapter_id)
        assert row is not None
        row.visibility = "public"  # public adapters are still the owner's to maintain
    sign_in(client, make_user(db))
    theirs = page(client, f"/adapters/{world.adapter_id}/maintenance", status=404)
    missing = page(client, "/adapters/999999/maintenance", status=404)
    assert "kumo-coffee" not in theirs
    strip = re.compile(r"999999|\d+")
    assert strip.sub("", theirs) == strip.sub("", missing)


def test_signed_out_visitors_go_to_sign_in(client: TestClient) -> None:
    response = client.get("/adapters/1/maintenance", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


# empty states ------------------------------------------------------------------------------

EMPTY = [
    "maintenance.scores.empty",
    "maintenance.drift.empty",
    "maintenance.clusters.empty",
    "maintenance.decisions.empty",
    "maintenance.runs.empty",
    "maintenance.candidates.empty",
    "maintenance.suites.empty",
    "maintenance.live.empty",
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_a_new_adapter_shows_what_to_do(
    client: TestClient, db: Database, tiny: dict[str, Path], lang: str
) -> None:
    user = make_user(db)
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], name="fresh")
    sign_in(client, user)
    text = page(client, f"/adapters/{version.adapter_id}/maintenance")
    for key in EMPTY:
        assert text_of(lang, key) in text, key
    assert "<svg" not in text.split('id="quality"')[1].split('id="clusters"')[0]
    assert f'href="/deploy?adapter_id={version.adapter_id}"' in text
    assert 'href="#suites"' in text
    assert 'id="rollback-form"' not in text  # one version: nothing to roll back to
    assert 'data-action="retrain"' in text


def test_the_adapter_page_links_to_the_maintenance_page_for_its_owner(
    client: TestClient, db: Database, tiny: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny["base"])
    version = make_adapter_version(db, user, base, tiny["v1"], visibility="public")
    link = f'href="/adapters/{version.adapter_id}/maintenance"'
    sign_in(client, user)
    assert link in page(client, f"/adapters/{version.adapter_id}")
    sign_in(client, make_user(db))
    assert link not in page(client, f"/adapters/{version.adapter_id}")


# the charts' geometry ----------------------------------------------------------------------

TICKS = [
    # highest value, expected ticks
    (300, [0, 50, 100, 150, 200, 250, 300]),
    (1000, [0, 200, 400, 600, 800, 1000]),
    (7, [0, 1, 2, 3, 4, 5, 6, 7]),
    (13, [0, 2, 4, 6, 8, 10, 12, 14]),
    (0, [0, 1]),
]


@pytest.mark.parametrize(("high", "expected"), TICKS, ids=[str(t[0]) for t in TICKS])
def test_nice_ticks(high: float, expected: list[float]) -> None:
    assert pages_maintenance.nice_ticks(high) == pytest.approx(expected)


def test_score_chart_places_versions_in_slots_and_scores_upwards() -> None:
    scores = [
        {"version": 1, "suite": "a", "score": 0.0},
        {"version": 2, "suite": "a", "score": 1.0},
        {"version": 2, "suite": "b", "score": 0.5},
    ]
    chart = pages_maintenance.score_chart(scores, [1, 2])
    assert chart is not None
    first, second = chart.lines
    width = chart.right - chart.left
    assert [d.x for d in first.dots] == pytest.approx(
        [chart.left + 0.25 * width, chart.left + 0.75 * width]
    )
    assert first.dots[0].y == pytest.approx(chart.bottom)
    assert first.dots[1].y == pytest.approx(chart.top)
    assert second.dots[0].y == pytest.approx((chart.top + chart.bottom) / 2)
    assert first.path.startswith("M")
    assert " L" in first.path
    assert [tick.label for tick in chart.x_ticks] == ["v1", "v2"]
    assert pages_maintenance.score_chart([], [1]) is None


def test_the_header_follows_the_aliases(
    client: TestClient, db: Database, settings: Settings, tiny: dict[str, Path]
) -> None:
    world = maintenance_world(db, settings, tiny)
    with db.session() as session:
        v1 = session.scalar(
            select(AdapterVersion.id).where(
                AdapterVersion.adapter_id == world.adapter_id, AdapterVersion.version == 1
            )
        )
        assert v1 is not None
        aliases.move(session, world.adapter_id, "champion", v1, cause="rollback")
    sign_in(client, world.user)
    text = page(client, f"/adapters/{world.adapter_id}/maintenance")
    assert re.search(r'data-alias="champion">v1<', text)
    assert text_of("ja", "maintenance.cause.rollback") in text
