"""The data pages: datasets (list, upload form, one dataset), the training form with its time
estimate, and the job page — in both languages, only ever the viewer's own things — plus the
estimate's rule itself."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loraloop.catalog import adapters, estimates
from loraloop.catalog.estimates import Estimate, Machine
from loraloop.db.engine import Database
from loraloop.db.tables import AdapterVersion, BaseModel, Job, User
from loraloop.identity import accounts
from loraloop.jobs import queue
from loraloop.testing import make_tiny_model
from loraloop.web import i18n
from tests.factories import make_base_model, make_job, make_user, sign_in

HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def _jsonl(count: int, *, broken_line: int | None = None) -> bytes:
    lines = []
    for i in range(count):
        row = {
            "messages": [
                {"role": "user", "content": f"雲ブレンド{i}はいくらですか？"},
                {"role": "assistant", "content": f"{i * 10 + 480}円です。"},
            ]
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    if broken_line is not None:
        lines[broken_line - 1] = '{"messages": [{"role": "user", "content": "no end"'
    return ("\n".join(lines) + "\n").encode()


def _upload(client: TestClient, body: bytes, name: str = "cafe") -> Any:
    return client.post(
        "/api/datasets",
        files={"file": ("cafe.jsonl", body, "application/jsonl")},
        data={"name": name},
    )


def _in(db: Database, user: User, lang: str) -> None:
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)


def _signed_in(client: TestClient, db: Database, lang: str = "ja") -> User:
    user = make_user(db)
    _in(db, user, lang)
    sign_in(client, user)
    return user


def _page_data(page: str, element_id: str) -> Any:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page)
    assert found, f"no #{element_id} on the page"
    return json.loads(found.group(1))


# anonymous ------------------------------------------------------------------------------

PAGES = ["/datasets", "/datasets/1", "/train", "/jobs/1"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


def test_the_estimate_needs_a_signed_in_user(client: TestClient) -> None:
    query = "base_model_id=1&dataset_id=1&version=1"
    response = client.get(f"/train/estimate?{query}", headers={"accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


# datasets -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_datasets_page_lists_own_datasets_and_the_upload_form(
    client: TestClient, other_client: TestClient, db: Database, lang: str
) -> None:
    _signed_in(client, db, lang)
    assert _upload(client, _jsonl(3), name="mine").status_code == 201
    _signed_in(other_client, db)
    assert _upload(other_client, _jsonl(3), name="theirs").status_code == 201

    page = client.get("/datasets", headers=HTML)
    assert page.status_code == 200
    assert f'<html lang="{lang}"' in page.text
    assert text_of(lang, "data.upload.heading") in page.text
    assert ">mine</a>" in page.text
    assert "theirs" not in page.text
    # the upload area: drag and drop plus a labelled file input, a name and a format choice
    assert 'id="drop-zone"' in page.text
    assert '<label class="field__label" for="upload-file">' in page.text
    assert '<label class="field__label" for="upload-name">' in page.text
    assert 'id="upload-format"' in page.text
    assert '<progress class="data-progress__bar" id="upload-bar"' in page.text
    assert '<script src="/static/data.js' in page.text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, "data.upload.heading") not in page.text


def test_datasets_page_without_datasets_says_what_to_do(client: TestClient, db: Database) -> None:
    _signed_in(client, db)
    page = client.get("/datasets", headers=HTML).text
    assert text_of("ja", "data.datasets.empty") in page


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_dataset_page_shows_versions_stats_and_the_preview(
    client: TestClient, db: Database, tiny_base: Path, lang: str
) -> None:
    _signed_in(client, db, lang)
    base = make_base_model(db, tiny_base, name="tiny")
    first = _upload(client, _jsonl(12)).json()
    body = _jsonl(12) + _jsonl(1)  # the same 12 again plus a duplicate of the first
    second = _upload(client, body).json()
    assert second["version"] == 2
    assert second["duplicates_removed"] == 1

    page = client.get(f"/datasets/{first['dataset_id']}", headers=HTML)
    assert page.status_code == 200
    text = page.text
    assert text_of(lang, "data.stats.heading", version=2) in text
    assert text_of(lang, "data.preview.heading") in text
    assert text_of(lang, "data.preview.trained") in text  # the legend
    assert f'href="/datasets/{first["dataset_id"]}?version=1"' in text
    assert f'<option value="{base.id}" selected>tiny</option>' in text
    assert text_of(lang, "data.stats.duplicate_exact", line=13, of=1) in text
    data = _page_data(text, "dataset-data")
    assert data["version"] == 2
    assert data["train_examples"] + data["validation_examples"] == 12

    older = client.get(f"/datasets/{first['dataset_id']}?version=1", headers=HTML).text
    assert _page_data(older, "dataset-data")["version"] == 1
    assert "/train?dataset_id=" in older

    # the preview the page's script asks for: trained (assistant) runs and masked ones
    preview = client.get(
        f"/api/datasets/{first['dataset_id']}/versions/2/preview?index=0&base={base.id}"
    ).json()
    assert {segment["trained"] for segment in preview["segments"]} == {True, False}


def test_dataset_page_of_another_user_or_version_is_404(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    _signed_in(other_client, db)
    theirs = _upload(other_client, _jsonl(3), name="theirs").json()
    _signed_in(client, db)
    mine = _upload(client, _jsonl(3), name="mine").json()
    for path in (
        f"/datasets/{theirs['dataset_id']}",
        f"/datasets/{mine['dataset_id']}?version=9",
        "/datasets/999999",
    ):
        response = client.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert text_of("ja", "error.title.404") in response.text
        assert "theirs" not in response.text


# training -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_train_page_offers_own_things_presets_and_advanced_settings(
    client: TestClient, other_client: TestClient, db: Database, tiny_base: Path, lang: str
) -> None:
    me = _signed_in(client, db, lang)
    them = _signed_in(other_client, db)
    base = make_base_model(db, tiny_base, name="tiny")
    dataset = _upload(client, _jsonl(12)).json()
    with db.session() as session:
        mine = adapters.create(session, me, name="my-bot", base_model_id=base.id)
        adapters.create(
            session, them, name="public-bot", base_model_id=base.id, visibility="public"
        )
    page = client.get(f"/train?dataset_id={dataset['dataset_id']}&version=1", headers=HTML)
    assert page.status_code == 200
    text = page.text
    for name in adapters.PRESETS:
        assert text_of(lang, f"data.preset.{name}") in text
        assert text_of(lang, f"data.preset.{name}.desc") in text
    assert text_of(lang, "data.train.advanced") in text
    for field in ("opt-rank", "opt-alpha", "opt-dropout", "opt-targets", "opt-lr", "opt-epochs"):
        assert f'for="{field}"' in text
    assert text_of(lang, "data.estimate.label") in text
    assert f'<option value="{mine.id}">my-bot</option>' in text
    assert "public-bot" not in text  # someone else's adapter cannot get a new version
    data = _page_data(text, "train-data")
    assert data["selected"] == {
        "dataset_id": dataset["dataset_id"],
        "version": 1,
        "adapter_id": None,
    }
    assert data["presets"]["quick"]["rank"] == 8
    assert data["presets"]["thorough"]["targets"] == "all-linear"
    assert [d["name"] for d in data["datasets"]] == ["cafe"]


def test_train_page_without_datasets_links_to_the_upload(
    client: TestClient, db: Database, tiny_base: Path
) -> None:
    _signed_in(client, db)
    make_base_model(db, tiny_base)
    page = client.get("/train", headers=HTML).text
    assert text_of("ja", "data.train.no_dataset") in page
    assert 'href="/datasets"' in page


def test_the_estimate_counts_the_datasets_tokens(
    client: TestClient, other_client: TestClient, db: Database, tiny_base: Path
) -> None:
    _signed_in(client, db)
    base = make_base_model(db, tiny_base, name="tiny")
    with db.session() as session:  # as big as the default, so the work shows in the figure
        session.get(BaseModel, base.id).parameters = 135_000_000  # type: ignore[union-attr]
    dataset = _upload(client, _jsonl(12)).json()
    query = f"base_model_id={base.id}&dataset_id={dataset['dataset_id']}&version=1"
    json_only = {"accept": "application/json"}

    quick = client.get(f"/train/estimate?{query}&preset=quick", headers=json_only)
    assert quick.status_code == 200, quick.text
    found = quick.json()
    assert set(found) == {"seconds", "low", "high", "tokens", "tokens_per_s", "runs"}
    assert found["tokens"] > 12 * 20  # byte-level tokens of a dozen conversations
    assert found["low"] <= found["seconds"] <= found["high"]
    assert found["runs"] == 0
    longer = client.get(f"/train/estimate?{query}&preset=quick&epochs=10", headers=json_only)
    assert longer.json()["seconds"] > found["seconds"]
    cut = client.get(f"/train/estimate?{query}&preset=quick&max_length=16", headers=json_only)
    assert cut.json()["tokens"] == 16 * dataset["train_examples"]

    _signed_in(other_client, db)
    theirs = other_client.get(f"/train/estimate?{query}", headers=json_only)
    assert theirs.status_code == 404
    bad = client.get(f"/train/estimate?{query}&preset=fast", headers=json_only)
    assert bad.status_code == 400


# jobs -----------------------------------------------------------------------------------


def _train_job(db: Database, user: User, base_id: int, **changes: Any) -> Job:
    with db.session() as session:
        adapter = adapters.create(session, user, name="cafe-bot", base_model_id=base_id)
        job = queue.enqueue(
            session,
            user,
            "train",
            {
                "adapter_id": adapter.id,
                "adapter_name": "cafe-bot",
                "base_name": "tiny",
                "base_path": "/srv/secret/models/tiny",
                "train_file": "/srv/secret/train.jsonl",
                "output_dir": "/srv/secret/runs/x",
                "dataset": {"id": 1, "name": "cafe", "version": 2},
                "spec": {"epochs": 1.0, "learning_rate": 3e-4, "lora": {"rank": 8, "alpha": 16}},
            },
            submitted=False,
        )
        for name, value in changes.items():
            setattr(job, name, value)
        return job


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_job_page_of_a_running_training(
    client: TestClient, db: Database, tiny_base: Path, lang: str
) -> None:
    me = _signed_in(client, db, lang)
    base = make_base_model(db, tiny_base, name="tiny")
    job = _train_job(db, me, base.id, status="running")
    page = client.get(f"/jobs/{job.id}", headers=HTML)
    assert page.status_code == 200
    text = page.text
    assert text_of(lang, "data.chart.heading") in text
    assert text_of(lang, "job.status.running") in text
    assert text_of(lang, "data.job.lead", adapter="cafe-bot", base="tiny") in text
    assert '<script src="/static/chart.js' in text
    assert "/srv/secret" not in text  # the payload's server paths stay on the server
    assert re.search(r'id="job-cancel"\s*>', text)  # cancel shown
    assert re.search(r'id="job-retry"\s+hidden', text)  # resume hidden
    assert re.search(r'id="job-done"[^>]*hidden', text)
    data = _page_data(text, "job-data")
    assert data["adapter_id"] is not None
    assert data["status"] == "running"
    assert "running" in data["cancellable"]
    assert "failed" in data["retryable"]


def test_job_page_of_a_finished_training_links_to_the_adapter_and_playground(
    client: TestClient, db: Database, tiny_base: Path
) -> None:
    me = _signed_in(client, db)
    base = make_base_model(db, tiny_base, name="tiny")
    job = _train_job(db, me, base.id, status="succeeded")
    adapter_id = job.payload["adapter_id"]
    text = client.get(f"/jobs/{job.id}", headers=HTML).text
    assert f'href="/adapters/{adapter_id}"' in text
    assert f'href="/playground?adapter_id={adapter_id}"' in text
    assert not re.search(r'id="job-done"[^>]*hidden', text)
    assert re.search(r'id="job-cancel"\s+hidden', text)


def test_job_page_of_a_failed_job_offers_resume_and_says_why(
    client: TestClient, db: Database, tiny_base: Path
) -> None:
    me = _signed_in(client, db)
    base = make_base_model(db, tiny_base, name="tiny")
    job = _train_job(db, me, base.id, status="failed", error="out of memory at step 3")
    text = client.get(f"/jobs/{job.id}", headers=HTML).text
    assert "out of memory at step 3" in text
    assert re.search(r'id="job-retry"\s*>', text)
    assert text_of("ja", "data.job.resume") in text
    assert text_of("ja", "data.job.error_next_train") in text


def test_job_page_of_another_user_is_404(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    them = _signed_in(other_client, db)
    theirs = make_job(db, them)
    _signed_in(client, db)
    for path in (f"/jobs/{theirs.id}", "/jobs/999999"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 404
        assert text_of("ja", "error.title.404") in response.text


def test_job_page_of_a_selftest_has_no_adapter_links(client: TestClient, db: Database) -> None:
    me = _signed_in(client, db, "en")
    job = make_job(db, me)
    text = client.get(f"/jobs/{job.id}", headers=HTML).text
    assert text_of("en", "data.job.heading", kind="Self-test", id=job.id) in text
    assert "/playground?adapter_id" not in text
    assert text_of("en", "data.job.retry") in text  # the (hidden) button says Retry, not Resume


# the estimate ---------------------------------------------------------------------------

CPU2 = Machine(cpus=2, gpu=False)
CPU8 = Machine(cpus=8, gpu=False)
GPU = Machine(cpus=8, gpu=True)
M135 = 135_000_000
STARTUP = 10 + M135 * 3e-8  # seconds before the first step of a 135M model


def _spread(e: Estimate) -> float:
    """The range's width relative to the training time (start-up excluded)."""
    return (e.high - e.low) / (e.seconds - STARTUP)


ESTIMATES: list[tuple[str, dict[str, Any], Any]] = [
    # name, changes to 100k tokens x 1 epoch of a 135M model on 2 cores, check
    ("no tokens: start-up only", {"tokens": 0}, lambda e: e.seconds == e.high == round(STARTUP, 1)),
    ("rule of thumb on 2 cores", {}, lambda e: e.runs == 0 and 1500 < e.seconds < 4000),
    ("epochs scale the work", {"epochs": 3.0}, lambda e: 3 * 1500 < e.seconds < 3 * 4000),
    ("more cores are faster", {"machine": CPU8}, lambda e: e.seconds < 1000),
    ("a GPU is much faster", {"machine": GPU}, lambda e: e.seconds < 20),
    (
        "all linear layers cost more",
        {"targets": "all-linear"},
        lambda e: e.tokens_per_s < estimates.tokens_per_second(M135, CPU2),
    ),
    (
        "measured runs win over the rule (median)",
        {"measured": [50.0, 100.0, 400.0]},
        lambda e: (
            e.runs == 3
            and e.tokens_per_s == 100.0
            and e.seconds == round(STARTUP + 100_000 * 1.1 / 100, 1)
        ),
    ),
    ("the rule's range is wide", {}, lambda e: _spread(e) == pytest.approx(1.5, abs=0.01)),
    (
        "a measured range is narrower",
        {"measured": [100.0]},
        lambda e: _spread(e) == pytest.approx(0.6, abs=0.01),
    ),
    ("zero measurements are ignored", {"measured": [0.0]}, lambda e: e.runs == 0),
]


@pytest.mark.parametrize(("name", "changes", "check"), ESTIMATES, ids=[e[0] for e in ESTIMATES])
def test_estimate(name: str, changes: dict[str, Any], check: Any) -> None:
    args: dict[str, Any] = {"tokens": 100_000, "epochs": 1.0, "parameters": M135, "machine": CPU2}
    args.update(changes)
    found = estimates.estimate(
        args.pop("tokens"), args.pop("epochs"), args.pop("parameters"), args.pop("machine"), **args
    )
    assert isinstance(found, Estimate)
    assert check(found), found


def test_estimate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="epochs"):
        estimates.estimate(10, 0, M135, CPU2)


PRESET_SETTINGS = [
    # preset, expected subset
    ("quick", {"epochs": 1.0, "rank": 8, "alpha": 16, "targets": "attention", "dropout": 0.05}),
    ("balanced", {"epochs": 3.0, "rank": 16, "learning_rate": 2e-4, "max_length": 1024}),
    ("thorough", {"epochs": 5.0, "targets": "all-linear", "early_stopping_patience": 3}),
]


@pytest.mark.parametrize(
    ("preset", "expected"), PRESET_SETTINGS, ids=[p[0] for p in PRESET_SETTINGS]
)
def test_preset_settings_fill_in_the_defaults(preset: str, expected: dict[str, Any]) -> None:
    found = estimates.preset_settings(preset)
    assert found.items() >= expected.items()
    assert set(found) == {
        "epochs",
        "learning_rate",
        "max_length",
        "early_stopping_patience",
        "rank",
        "alpha",
        "dropout",
        "targets",
    }


def test_measured_throughput_comes_from_finished_runs_of_the_same_base(
    db: Database, tiny_base: Path
) -> None:
    me = make_user(db)
    base = make_base_model(db, tiny_base)
    other_base = make_base_model(db, tiny_base)
    runs = [(base.id, 120.0), (base.id, 80.0), (other_base.id, 9000.0)]
    jobs = [make_job(db, me) for _ in runs]
    with db.session() as session:
        for job, (base_id, speed) in zip(jobs, runs, strict=True):
            adapter = adapters.create(
                session, me, name=f"a{base_id}-{int(speed)}", base_model_id=base_id
            )
            session.add(
                AdapterVersion(
                    adapter_id=adapter.id,
                    version=1,
                    job_id=job.id,
                    path="/x",
                    sha256="0" * 64,
                    spec={},
                    metrics={"tokens_per_second": speed},
                )
            )
        session.flush()
        assert sorted(estimates.measured_tokens_per_s(session, base.id)) == [80.0, 120.0]
