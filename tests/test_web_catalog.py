"""The catalog pages (dashboard, base models, adapters, deploy, API keys, account): both
languages, sign-in required, another user's private things never shown (two users), a 404 for
another user's private adapter, model cards escaped, and snippets that carry the real base URL
and model id but never a stored secret."""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import Adapter, AdapterVersion, ApiKey, BaseModel, User
from loraloop.identity import accounts
from loraloop.ml.models import SUGGESTED_MODELS
from loraloop.mlops import feedback
from loraloop.web import catalog_views, i18n
from tests.factories import (
    make_adapter_version,
    make_base_model,
    make_deployment,
    make_job,
    make_key,
    make_trace,
    make_user,
    sign_in,
)

HTML = {"accept": "text/html,application/xhtml+xml"}
BASE_URL = "http://127.0.0.1:8000/v1"  # the test client's base_url + v1


def text_of(lang: str, key: str, **params: object) -> str:
    return html.escape(i18n.translator(lang)(key, **params))


def page(client: TestClient, path: str) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == 200, response.text[:500]
    return response.text


def fake_adapter_folder(root: Path, name: str, card: str | None = None) -> Path:
    """A version folder the pages can describe (they never load the weights)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"not really weights " + name.encode())
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def set_metrics(db: Database, version: AdapterVersion, metrics: dict[str, object]) -> None:
    with db.session() as session:
        row = session.get(AdapterVersion, version.id)
        assert row is not None
        row.metrics = metrics


def make_admin(db: Database, user: User) -> None:
    with db.session() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.role = "admin"


@pytest.fixture
def base(db: Database, tmp_path: Path) -> BaseModel:
    return make_base_model(db, tmp_path / "base", name="tiny-base")


# every page, both languages, signed out ---------------------------------------------------

PAGES = [
    # path, catalog key whose text the page shows
    ("/", "dashboard.steps.heading"),
    ("/models", "catalog.models.registered"),
    ("/adapters", "catalog.adapters.mine"),
    ("/deploy", "catalog.deploy.new"),
    ("/keys", "catalog.keys.new"),
    ("/account", "catalog.account.profile"),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(("path", "key"), PAGES, ids=[p[0] for p in PAGES])
def test_pages_render_in_both_languages(
    client: TestClient, db: Database, base: BaseModel, path: str, key: str, lang: str
) -> None:
    user = make_user(db)
    with db.session() as session:
        accounts.update_profile(session, user, locale=lang)
    sign_in(client, user)
    text = page(client, path)
    assert f'<html lang="{lang}"' in text
    assert text_of(lang, key) in text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, key) not in text
    assert 'aria-current="page"' in text


@pytest.mark.parametrize("path", [p[0] for p in PAGES] + ["/adapters/1"])
def test_signed_out_visitors_go_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


# isolation between two users -----------------------------------------------------------


@pytest.fixture
def two_users(
    db: Database, settings: Settings, base: BaseModel, tmp_path: Path
) -> tuple[User, User, dict[str, str]]:
    """Aiko and Ben, each with a private adapter, a deployment and a key; Ben also has a
    public adapter. Returns them and Ben's secrets and names."""
    aiko, ben = make_user(db), make_user(db)
    mine = make_adapter_version(db, aiko, base, fake_adapter_folder(tmp_path, "a1"), name="aiko-x")
    make_deployment(
        db, aiko, settings, name="aiko-dep", adapter_id=mine.adapter_id, alias="champion"
    )
    make_key(db, aiko, name="aiko key")
    hidden = make_adapter_version(
        db, ben, base, fake_adapter_folder(tmp_path, "b1"), name="ben-secret"
    )
    make_adapter_version(
        db, ben, base, fake_adapter_folder(tmp_path, "b2"), name="ben-open", visibility="public"
    )
    make_deployment(db, ben, settings, name="ben-dep", adapter_id=hidden.adapter_id, version=1)
    ben_key = make_key(db, ben, name="ben key")
    return aiko, ben, {"key": ben_key, "private_id": str(hidden.adapter_id)}


@pytest.mark.parametrize("path", ["/", "/adapters", "/deploy", "/keys"])
def test_lists_never_show_another_users_private_things(
    client: TestClient, two_users: tuple[User, User, dict[str, str]], path: str
) -> None:
    aiko, _, ben = two_users
    sign_in(client, aiko)
    text = page(client, path)
    for foreign in ("ben-secret", "ben-dep", "ben key", ben["key"], ben["key"][:13]):
        assert foreign not in text, f"{foreign!r} leaked onto {path}"
    if path == "/adapters":
        assert "aiko-x" in text
        assert "ben-open" in text  # public adapters are listed, with their owner
    if path == "/deploy":
        assert "aiko-dep" in text
        assert "ben-open" in text  # a public adapter may be deployed
    if path == "/keys":
        assert "aiko key" in text


def test_another_users_private_adapter_is_a_404_page(
    client: TestClient, two_users: tuple[User, User, dict[str, str]]
) -> None:
    aiko, _, ben = two_users
    sign_in(client, aiko)
    response = client.get(f"/adapters/{ben['private_id']}", headers=HTML)
    assert response.status_code == 404
    assert text_of("ja", "error.title.404") in response.text
    assert "ben-secret" not in response.text
    assert client.get("/adapters/999999", headers=HTML).status_code == 404


def test_a_public_adapter_is_readable_but_not_editable(
    client: TestClient, two_users: tuple[User, User, dict[str, str]], db: Database
) -> None:
    aiko, _, _ = two_users
    sign_in(client, aiko)
    adapters_page = page(client, "/adapters")
    public_id = re.search(r'href="/adapters/(\d+)">ben-open<', adapters_page)
    assert public_id
    text = page(client, f"/adapters/{public_id.group(1)}")
    assert "ben-open" in text
    assert text_of("ja", "catalog.adapter.read_only") in text
    assert 'id="adapter-form"' not in text
    assert "data-set-champion" not in text
    assert f"/api/adapters/{public_id.group(1)}/versions/1/download" in text


def test_deploy_ignores_a_preselected_adapter_the_viewer_cannot_see(
    client: TestClient, two_users: tuple[User, User, dict[str, str]]
) -> None:
    aiko, _, ben = two_users
    sign_in(client, aiko)
    text = page(client, f"/deploy?adapter_id={ben['private_id']}")
    assert "ben-secret" not in text
    assert "data-preselected" not in text


# adapter page --------------------------------------------------------------------------

CARD = """---
base_model: tiny-base
license: apache-2.0
---

# kumo

A LoRA adapter <script>alert(1)</script> for `tiny-base`.

## Metrics

- val_loss: 1.23

<img src="https://example.com/x.png">
[a link](javascript:alert(1))
"""


def test_adapter_page_shows_versions_metrics_card_lineage_and_actions(
    client: TestClient, db: Database, base: BaseModel, tmp_path: Path
) -> None:
    user = make_user(db)
    v1 = make_adapter_version(
        db, user, base, fake_adapter_folder(tmp_path, "v1", CARD), name="kumo"
    )
    set_metrics(db, v1, {"val_loss": 1.234567, "steps": 1200, "stopped_early": False, "custom": 3})
    with db.session() as session:
        adapter = session.get(Adapter, v1.adapter_id)
    make_adapter_version(db, user, base, fake_adapter_folder(tmp_path, "v2"), adapter=adapter)
    sign_in(client, user)
    text = page(client, f"/adapters/{v1.adapter_id}")

    assert 'id="version-1"' in text
    assert 'id="version-2"' in text
    assert text.index('id="version-2"') < text.index('id="version-1"')  # newest first
    assert text_of("ja", "catalog.metric.val_loss") in text
    assert "1.235" in text
    assert "1,200" in text
    assert "custom" in text
    # the card: raw HTML escaped, no image or javascript: link, front matter as fields
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img" not in text
    assert 'href="javascript:' not in text
    assert "<h1>kumo</h1>" in text
    assert "<code>tiny-base</code>" in text
    assert "<dt>base_model</dt><dd>tiny-base</dd>" in text
    assert text_of("ja", "catalog.adapter.no_card") in text  # v2 has none
    # lineage and actions
    assert "tiny-base" in text
    assert f"/api/adapters/{v1.adapter_id}/versions/2/download" in text
    assert f"/playground?adapter_id={v1.adapter_id}&amp;version=1" in text
    assert f"/deploy?adapter_id={v1.adapter_id}" in text
    assert 'data-set-champion="2"' in text  # v1 is champion; v2 can become it
    assert 'data-set-champion="1"' not in text
    assert 'id="adapter-form"' in text


def test_a_folder_without_readme_has_no_card(tmp_path: Path) -> None:
    assert catalog_views.model_card(tmp_path) is None


def test_a_card_that_is_a_link_elsewhere_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("server secret", encoding="utf-8")
    folder = fake_adapter_folder(tmp_path, "linked")
    (folder / "README.md").symlink_to(tmp_path / "secret.txt")
    assert catalog_views.model_card(folder) is None


def test_model_card_cuts_off_huge_files(tmp_path: Path) -> None:
    folder = fake_adapter_folder(tmp_path, "big", "x" * (catalog_views.CARD_BYTES * 3))
    found = catalog_views.model_card(folder)
    assert found is not None
    assert len(found.body) < catalog_views.CARD_BYTES + 100


# deploy: snippets and the once-only secret ---------------------------------------------


def test_deploy_page_snippets_have_the_base_url_and_model_id_never_a_secret(
    client: TestClient, db: Database, settings: Settings, base: BaseModel, tmp_path: Path
) -> None:
    user = make_user(db)
    version = make_adapter_version(db, user, base, fake_adapter_folder(tmp_path, "k"), name="Kumo")
    make_deployment(
        db, user, settings, name="kumo", adapter_id=version.adapter_id, alias="champion"
    )
    sign_in(client, user)
    created = client.post("/api/keys", json={"name": "for kumo", "scopes": ["inference:kumo"]})
    assert created.status_code == 201
    secret = created.json()["secret"]

    text = page(client, f"/deploy?adapter_id={version.adapter_id}")
    assert f"base_url=&#34;{BASE_URL}&#34;" in text  # the Python snippet, HTML-escaped
    assert f"curl {BASE_URL}/chat/completions" in text
    assert "model=&#34;kumo&#34;" in text
    assert "__MODEL__" in text  # the template the page fills in after creating a key
    assert 'href="/playground?deployment=kumo"' in text
    assert secret not in text
    assert secret not in page(client, "/keys")
    assert created.json()["prefix"] in page(client, "/keys")
    # the preselected adapter and its suggested model id
    assert "data-preselected" in text
    assert re.search(rf'<option value="{version.adapter_id}"[^>]* selected>', text)
    assert 'value="kumo"' in text


def test_snippets_run_as_written() -> None:
    texts = catalog_views.snippets(BASE_URL, "kumo", "ll_abc_def", "It's 「雲」")
    assert set(texts) == {"curl", "python", "javascript"}
    for text in texts.values():
        assert BASE_URL in text
        assert "kumo" in text
        assert "ll_abc_def" in text
    compile(texts["python"], "snippet.py", "exec")  # valid Python
    words = shlex.split(texts["curl"].replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    assert body == {"model": "kumo", "messages": [{"role": "user", "content": "It's 「雲」"}]}
    assert words[1] == f"{BASE_URL}/chat/completions"


# keys ------------------------------------------------------------------------------------


def test_keys_page_lists_limits_spending_and_states(client: TestClient, db: Database) -> None:
    user = make_user(db)
    make_key(db, user, name="limited", tokens_per_minute=5000, token_budget=1_000_000)
    make_key(db, user, name="soon gone", expires_in_days=1)
    sign_in(client, user)
    revoked = client.post("/api/keys", json={"name": "old one"}).json()
    client.delete(f"/api/keys/{revoked['id']}")
    with db.session() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == "soon gone")).one()
        key.expires_at = utcnow().replace(year=2000)
    text = page(client, "/keys")
    assert text_of("ja", "catalog.keys.tpm", n="5,000") in text
    assert text_of("ja", "catalog.keys.budget", n="1,000,000") in text
    assert text_of("ja", "catalog.keys.state.revoked") in text
    assert text_of("ja", "catalog.keys.state.expired") in text
    assert text_of("ja", "catalog.keys.state.active") in text
    assert text.count("data-revoke=") == 2  # the revoked key has no button


def test_only_admins_may_choose_the_worker_scope(client: TestClient, db: Database) -> None:
    user = make_user(db)
    sign_in(client, user)
    assert 'value="worker"' not in page(client, "/keys")
    make_admin(db, user)
    assert 'value="worker"' in page(client, "/keys")


# base models ---------------------------------------------------------------------------


def test_models_page_lists_bases_and_suggestions_admins_get_the_form(
    client: TestClient, db: Database, base: BaseModel
) -> None:
    user = make_user(db)
    sign_in(client, user)
    text = page(client, "/models")
    assert "tiny-base" in text
    assert "LlamaForCausalLM" in text
    assert 'id="register-form"' not in text
    assert text_of("ja", "catalog.models.suggested.lead") in text
    for suggestion in SUGGESTED_MODELS:
        assert suggestion.id in text
    assert text_of("ja", "catalog.models.note.llmjp_150m") in text
    make_admin(db, user)
    admin_text = page(client, "/models")
    assert 'id="register-form"' in admin_text
    assert 'data-fill-hub="llm-jp/llm-jp-3-150m-instruct3"' in admin_text
    assert "--cache-dir" in admin_text


def test_every_suggested_model_has_a_translated_note() -> None:
    assert {s.id for s in SUGGESTED_MODELS} == set(catalog_views.SUGGESTION_NOTES)


@pytest.mark.parametrize(("n", "shown"), [(1, "1"), (135_000_000, "135M"), (1_544_000_000, "1.5B")])
def test_parameter_counts_read_like_model_cards(n: int, shown: str) -> None:
    assert catalog_views.count(n) == shown


# dashboard -------------------------------------------------------------------------------


def test_a_newcomer_gets_the_steps_with_links(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    text = page(client, "/")
    for href in ("/datasets", "/train", "/playground", "/deploy", "/keys"):
        assert f'href="{href}"' in text
    assert "catalog-steps--newcomer" in text
    assert text_of("ja", "dashboard.adapters.empty") in text


def test_dashboard_shows_adapters_deployments_jobs_and_feedback(
    client: TestClient, db: Database, settings: Settings, base: BaseModel, tmp_path: Path
) -> None:
    user = make_user(db)
    version = make_adapter_version(db, user, base, fake_adapter_folder(tmp_path, "d"), name="kumo")
    make_deployment(
        db, user, settings, name="kumo-api", adapter_id=version.adapter_id, alias="champion"
    )
    job = make_job(db, user)
    trace = make_trace(db, user, answer="480円です。")
    with db.session() as session:
        feedback.give(session, user, trace.id, rating=-1, comment="税込みの値段も")
    sign_in(client, user)
    text = page(client, "/")
    assert f'href="/adapters/{version.adapter_id}">kumo<' in text
    assert "kumo-api" in text
    assert "kumo@champion" in text
    assert f'href="/jobs/{job.id}"' in text
    assert "480円です。" in text
    assert "税込みの値段も" in text
    assert text_of("ja", "dashboard.feedback.bad") in text
    assert "catalog-steps--newcomer" not in text


# translations built at run time ----------------------------------------------------------

DYNAMIC = [
    *(f"catalog.metric.{name}" for name in catalog_views.METRICS),
    *catalog_views.SUGGESTION_NOTES.values(),
    *(f"catalog.visibility.{v}" for v in ("private", "public")),
    *(f"catalog.alias.{a}" for a in ("champion", "challenger")),
    *(f"catalog.deploy.status.{s}" for s in ("active", "paused")),
    *(f"catalog.deploy.kind.{k}" for k in ("adapter", "base", "external")),
    *(
        f"catalog.deploy.target.{k}{s}"
        for k in ("champion", "version", "base", "external")
        for s in ("", "_hint")
    ),
    *(f"catalog.keys.state.{s}" for s in ("active", "revoked", "expired")),
    *(f"catalog.models.source.{s}" for s in ("package", "hub", "local")),
    *(f"catalog.account.role.{r}" for r in ("admin", "member")),
    *(f"catalog.account.theme.{t}" for t in ("light", "dark", "auto")),
    *(
        f"dashboard.steps.{s}.{p}"
        for s in ("data", "train", "playground", "deploy", "key")
        for p in ("title", "body")
    ),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_keys_built_at_run_time_exist(lang: str) -> None:
    missing = sorted(set(DYNAMIC) - set(i18n.catalog(lang)))
    assert not missing, missing


def test_script_texts_are_in_the_catalogs() -> None:
    script = (Path(catalog_views.__file__).parent / "static" / "catalog.js").read_text()
    used = set(re.findall(r"""t\(\s*"(catalog\.js\.[a-z_]+)""", script))
    assert len(used) > 15
    assert not used - set(i18n.catalog("ja"))
