"""Plugins: the sample plugin (examples/plugins/loraloop_sample_plugin), loaded by module path
through the ``plugins`` setting, extends each of the four places end to end; broken plugins are
named and left out while the server keeps serving."""

from __future__ import annotations

import io
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loraloop import plugins
from loraloop.api.app import create_app
from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.datasets import formats
from loraloop.db import Database
from loraloop.db.tables import Adapter, Trace, User
from loraloop.jobs import supervisor
from loraloop.ml import evaluation, router
from loraloop.testing import StubEngine, make_tiny_adapter, make_tiny_model
from tests.factories import make_base_model, make_deployment, make_key, make_user, sign_in

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "plugins" / "loraloop_sample_plugin"
MODULE = "loraloop_sample_plugin"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with empty registries and puts the sample plugin on the path."""
    monkeypatch.setattr(formats, "_ADDED", {})
    monkeypatch.setattr(evaluation, "_ADDED", {})
    monkeypatch.setattr(router, "_STRATEGIES", {})
    monkeypatch.setattr(plugins, "_children", {})
    monkeypatch.syspath_prepend(str(SAMPLE))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"plugins": (MODULE,)})


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db, engine_factory=lambda path: StubEngine(answer="stub"))


def _adapter(db: Database, user: User, tmp_path: Path, visibility: str = "private") -> Adapter:
    base = make_base_model(db, tmp_path / "no-model-here")
    with db.session() as session:
        return adapters.create(
            session, user, name="kumo", base_model_id=base.id, visibility=visibility
        )


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("loraloop_sample_plugin", ("loraloop_sample_plugin",)),
        ("a.b, c ,", ("a.b", "c")),
        ('["a.b", "c"]', ("a.b", "c")),
        ("", ()),
    ],
)
def test_the_plugins_setting_takes_a_comma_or_json_list(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("LORALOOP_PLUGINS", given)
    assert Settings(env="development").plugins == expected


def test_a_plugin_setting_that_is_no_module_path_is_refused() -> None:
    with pytest.raises(ValueError, match="'not a module'"):
        Settings(env="development", plugins=["ok.module", "not a module"])


def test_the_sample_plugin_contributes_to_each_registry(app: FastAPI) -> None:
    loaded: plugins.Plugins = app.state.plugins
    assert MODULE in loaded.names()
    assert loaded.problems == []
    assert loaded.contributed == {
        "dataset_formats": ["qa"],
        "eval_metrics": ["keyword_recall"],
        "router_strategies": ["word_overlap"],
    }
    assert formats.known_formats()[-1] == "qa"
    assert evaluation.metric_names()[-1] == "keyword_recall"
    assert router.strategy_names() == ("word_overlap",)
    assert plugins.child_modules() == [MODULE]
    loaded.close()
    assert "qa" not in formats.known_formats()
    assert "keyword_recall" not in evaluation.metric_names()
    assert router.strategy_names() == ()


BROKEN = {
    "plugin_raises": "raise RuntimeError('no licence file')",
    "plugin_typo": "from loraloop.plugins import hookimpl\n@hookimpl\ndef dataset_format():\n"
    "    return []",
    "plugin_bad_items": "from loraloop.plugins import hookimpl\n@hookimpl\ndef eval_metrics():\n"
    "    return ['not a metric']",
    "plugin_panel_fails": "from loraloop.plugins import hookimpl\n@hookimpl\n"
    "def adapter_panels(adapter):\n    raise KeyError('oops')",
    "plugin_takes_over": "from loraloop.plugins import hookimpl, Metric\n@hookimpl\n"
    "def eval_metrics():\n    return [Metric('keyword_recall', lambda a, e: 1.0)]",
}
PROBLEMS = {
    "plugin_raises": "could not be imported: RuntimeError: no licence file",
    "plugin_typo": "implements 'dataset_format', which is not a loraloop hook",
    "plugin_bad_items": "gave a bad eval_metrics entry: TypeError: 'not a metric'",
    "plugin_missing": "could not be imported: ModuleNotFoundError",
    "plugin_takes_over": "metric 'keyword_recall' is already added by another plugin",
}


def test_broken_plugins_are_named_and_left_out_while_the_server_serves(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, source in BROKEN.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source) + "\n")
    monkeypatch.syspath_prepend(str(folder))
    names = (MODULE, *BROKEN, "plugin_missing")
    with caplog.at_level(logging.ERROR, logger="loraloop.plugins"):
        app = create_app(settings.model_copy(update={"plugins": names}), db)
    loaded: plugins.Plugins = app.state.plugins
    for name, problem in PROBLEMS.items():
        said = [p for p in loaded.problems if p.startswith(f"plugin {name!r} ")]
        assert said, f"{name}: {loaded.problems}"
        assert problem in said[0]
        assert name in caplog.text
    assert evaluation.metric_names()[-1] == "keyword_recall"  # the sample's, first come
    assert evaluation.score("keyword_recall", "a b", ["a", "c"]) == 0.5
    user = make_user(db)
    adapter = _adapter(db, user, tmp_path)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        sign_in(client, user)
        page = client.get(f"/adapters/{adapter.id}")
    assert page.status_code == 200
    assert "Sample plugin" in page.text or "サンプルプラグイン" in page.text
    assert any(
        "'plugin_panel_fails' failed in adapter_panels: KeyError" in p for p in loaded.problems
    )


# --- 1. dataset formats --------------------------------------------------------------------


def test_a_dataset_in_the_sample_format_uploads_through_the_api(
    client: TestClient, db: Database
) -> None:
    sign_in(client, make_user(db))
    body = (SAMPLE / "sample.jsonl").read_bytes()
    for chosen in ({}, {"format": "qa"}):
        response = client.post(
            "/api/datasets",
            files={"file": ("faq.jsonl", body, "application/jsonl")},
            data={"name": "faq", **chosen},
        )
        assert response.status_code == 201, response.text
        assert response.json()["format"] == "qa"
    version = response.json()
    assert version["examples"] == 3
    assert version["report"]["same_as_version"] == 1  # the same examples, recognised or chosen
    rows = client.get(f"/api/datasets/{version['dataset_id']}/versions/2/rows").json()["rows"]
    conversations = [[m["role"] for m in row["messages"]] for row in rows]
    assert sorted(conversations) == [
        ["system", "user", "assistant"],
        ["user", "assistant"],
        ["user", "assistant"],
    ]


def test_problems_in_the_sample_format_carry_line_numbers(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    lines = [
        {"question": "Hi?", "answer": "Hello."},
        {"question": "Open on Sunday?", "answer": ""},
        {"question": 3},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = client.post(
        "/api/datasets",
        files={"file": ("faq.jsonl", body, "application/jsonl")},
        data={"name": "faq"},
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "line 2: answer: must be a non-empty string" in message
    assert "line 3: question: must be a non-empty string" in message
    assert "line 3: answer: must be a non-empty string" in message


def test_a_format_plugin_that_crashes_is_a_problem_of_the_line() -> None:
    def parse(record: dict[str, object], report: formats.Report) -> list[dict[str, str]]:
        raise ZeroDivisionError("division by zero")

    formats.register_format(formats.DatasetFormat("crashy", parse, markers=("q",)))
    with pytest.raises(formats.DatasetInvalid) as caught:
        formats.read_jsonl(io.BytesIO(b'{"q": 1}\n'), max_bytes=1000)
    assert "line 1: the crashy format (a plugin) failed on this line: ZeroDivisionError" in (
        caught.value.message
    )


# --- 2. evaluation metrics -----------------------------------------------------------------


def test_the_sample_metric_scores_an_eval_case_added_through_the_api(
    client: TestClient, db: Database, tmp_path: Path
) -> None:
    user = make_user(db)
    adapter = _adapter(db, user, tmp_path)
    sign_in(client, user)
    suite = client.post(
        f"/api/adapters/{adapter.id}/suites", json={"name": "menu", "metric": "keyword_recall"}
    )
    assert suite.status_code == 201, suite.text
    case = {"prompt": "What is in the Kumo blend?", "expected": ["Ethiopian", "Guatemalan"]}
    added = client.post(f"/api/suites/{suite.json()['id']}/cases", json={"cases": [case]})
    assert added.status_code == 201, added.text
    refused = client.post(
        f"/api/suites/{suite.json()['id']}/cases", json={"cases": [{**case, "expected": [""]}]}
    )
    assert refused.status_code == 400
    assert "every keyword must be a non-empty string" in refused.json()["error"]["message"]
    answer = "Mostly Ethiopian beans."
    assert evaluation.score("keyword_recall", answer, case["expected"]) == 0.5


class _Lease:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def heartbeat(self) -> None:
        """Always granted."""

    def event(self, data: dict[str, Any]) -> None:
        self.events.append(data)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_an_evaluate_job_scores_with_the_plugin_metric_in_its_child_process(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(SAMPLE))  # the child imports the module by its path
    base = make_tiny_model(tmp_path / "base")
    version = {"id": 1, "version": 1, "path": str(make_tiny_adapter(base, tmp_path / "v1"))}
    question = [{"role": "user", "content": "What is in the Kumo blend?"}]
    case = {"id": 7, "messages": question, "expected": ["zzzz"], "metric": "keyword_recall"}
    payload = {
        "adapter_id": 1,
        "base_path": str(base),
        "versions": [version],
        "suites": [
            {"id": 3, "name": "menu", "kind": "owner", "metric": "contains", "cases": [case]}
        ],
        "max_new_tokens": 2,
    }
    outcome = supervisor.run_child("evaluate", payload, _Lease(), beat_every=5)
    assert outcome.error is None, outcome.tail
    assert outcome.result is not None
    assert outcome.result["versions"]["1"]["3"]["cases"][0]["score"] == 0.0


# --- 3. router strategies ------------------------------------------------------------------


def test_the_sample_strategy_routes_an_app_request(
    app: FastAPI, db: Database, settings: Settings, tmp_path: Path
) -> None:
    user = make_user(db)
    base = make_base_model(db, tmp_path / "stub", name="stub")
    for name in ("orders", "hello"):
        make_deployment(db, user, settings, name=name, base_model_id=base.id)
    members = [
        {"deployment": "orders", "description": "refunds orders shipping returns"},
        {"deployment": "hello", "description": "greetings opening hours"},
    ]
    spec = {"type": "router", "members": members, "strategy": "word_overlap", "default": "hello"}
    make_deployment(db, user, settings, name="desk", app=spec)
    key = make_key(db, user, rate_limit_per_minute=10_000)

    def ask(text: str) -> Trace:
        with TestClient(app) as client:
            reply = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "desk", "messages": [{"role": "user", "content": text}]},
            )
        assert reply.status_code == 200, reply.text
        with db.session() as session:
            trace = session.get(Trace, reply.json()["id"])
            assert trace is not None
            return trace

    routed = ask("Where are my orders? I want refunds.")
    assert routed.route == {"member": "orders", "by": "strategy", "strategy": "word_overlap"}
    passed = ask("xyzzy")
    assert passed.route == {"member": "hello", "by": "default", "strategy_passed": "word_overlap"}


def test_an_app_naming_a_strategy_nobody_installed_is_refused(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    user = make_user(db)
    base = make_base_model(db, tmp_path / "stub", name="stub")
    make_deployment(db, user, settings, name="one", base_model_id=base.id)
    sign_in(client, user)
    spec = {
        "type": "router",
        "members": [{"deployment": "one"}],
        "strategy": "coin_flip",
        "default": "one",
    }
    response = client.post("/api/deployments", json={"name": "desk", "app": spec})
    assert response.status_code == 400, response.text
    assert (
        "strategy 'coin_flip' is not one a plugin adds (word_overlap)"
        in (response.json()["error"]["message"])
    )


def test_a_failing_strategy_leaves_the_request_to_the_default() -> None:
    def broken(text: str, members: Any) -> str | None:
        raise RuntimeError("model server down")

    router.register_strategy("broken", broken)
    router.register_strategy("wrong", lambda text, members: "nobody")
    members = [router.Candidate("a")]
    for name, said in [
        ("broken", "strategy 'broken' failed: RuntimeError: model server down"),
        ("wrong", "strategy 'wrong' chose 'nobody', which is not a member"),
        ("gone", "strategy 'gone' is not installed"),
    ]:
        with pytest.raises(router.StrategyFailed, match=said):
            router.pick(name, "hi", members)


# --- 4. UI panels --------------------------------------------------------------------------


PANEL = """
from markupsafe import Markup
from loraloop.plugins import Panel, hookimpl

@hookimpl
def adapter_panels(adapter):
    return [
        Panel("Raw <i>title</i>", "<script>alert(1)</script> for " + adapter.name),
        Panel("Trusted", Markup("<em>bold claim</em>")),
    ]
"""


def test_the_sample_panel_shows_on_the_adapter_page_and_text_is_escaped(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "plugin_panel.py").write_text(PANEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    app = create_app(settings.model_copy(update={"plugins": (MODULE, "plugin_panel")}), db)
    owner, visitor = make_user(db), make_user(db)
    adapter = _adapter(db, owner, tmp_path, visibility="public")
    with TestClient(app) as client:
        sign_in(client, visitor)
        page = client.get(f"/adapters/{adapter.id}")
    assert page.status_code == 200
    text = page.text
    assert 'data-plugin="loraloop_sample_plugin"' in text
    assert "<dd>kumo</dd>" in text  # the sample's own template, with the adapter's name
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; for kumo" in text
    assert "Raw &lt;i&gt;title&lt;/i&gt;" in text
    assert "<em>bold claim</em>" in text  # Markup is the plugin's explicit choice


def test_the_hooks_have_one_line_docstrings() -> None:
    for name in ("dataset_formats", "eval_metrics", "router_strategies", "adapter_panels"):
        doc = getattr(plugins.Specs, name).__doc__
        assert doc, name
        assert "\n" not in doc.strip(), name


def test_no_adapter_rows_leak_into_panels() -> None:
    fields = set(plugins.AdapterInfo.__dataclass_fields__)
    assert fields == {
        "id",
        "name",
        "base_model",
        "visibility",
        "licence",
        "description",
        "champion",
        "mine",
        "lang",
    }
