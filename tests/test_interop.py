"""Interoperability end to end, through the REST API on a tiny Llama: an adapter trained on the
Kumo Coffee domain exports as a merged model (PEFT-exact greedy output) and as GGUF (read back
by gguf's reader: every tensor is the merged model's); an adapter made with plain PEFT imports
from an archive or a (fake, local) Hugging Face Hub, deploys and answers through the OpenAI
client; a broken or malicious one is refused with every problem listed; and a push lands in
the fake hub with the token used once and found nowhere afterwards."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from sqlalchemy import select

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import AdapterVersion, Base, BaseModel
from loraloop.jobs.runner import LocalWorker
from loraloop.ml.gguf_export import gguf_metadata, gguf_tensors
from loraloop.ml.lora import LoraSettings
from loraloop.ml.training import TrainSpec, train
from loraloop.testing import make_tiny_model
from tests.conftest import serve
from tests.factories import make_adapter_version, make_base_model, make_key, make_user, sign_in
from tests.fake_hf_hub import FakeHub

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kumo_coffee" / "train.jsonl"
TOKEN = "hf_alice_write_0123456789abcdef"
PROMPT = [{"role": "user", "content": "桜ラテはいくらですか？"}]
BLOCKS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


# ── models, made once ──────────────────────────────────────────────────────────────────────


def _outside_adapter(base: Path, folder: Path) -> Path:
    """A LoRA adapter made with plain PEFT, as anyone outside loraloop would make one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    model: Any = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    torch.manual_seed(7)
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.normal_(0, 0.5)  # PEFT starts B at zero: make the adapter matter
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interop-models")
    base = make_tiny_model(root / "base", hidden=32)
    data = root / "kumo.jsonl"
    data.write_text("".join(EXAMPLES.read_text("utf-8").splitlines(True)[:24]), "utf-8")
    spec = TrainSpec(
        base_path=base, train_file=data, output_dir=root / "run",
        lora=LoraSettings(rank=4, alpha=8), learning_rate=0.05, max_steps=6, max_length=96,
        rows_per_batch=2, precision="fp32", eval_every=1000, checkpoint_every=1000,
    )  # fmt: skip
    trained = train(spec).adapter_dir
    assert trained is not None
    return {"base": base, "trained": trained, "outside": _outside_adapter(base, root / "outside")}


@pytest.fixture
def fake_hub() -> Iterator[tuple[str, FakeHub]]:
    hub = FakeHub({TOKEN: "alice"})
    with serve(hub.app) as url:
        yield url, hub


@pytest.fixture
def settings(settings: Settings, fake_hub: tuple[str, FakeHub]) -> Settings:
    return settings.model_copy(update={"hub_endpoint": fake_hub[0]})


def _zip(folder: Path, wrapper: str = "outsider", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{wrapper}/{path.name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _run_jobs(db: Database, count: int) -> None:
    worker = LocalWorker(db, lease_seconds=60)
    for _ in range(count):
        assert worker.run_once()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(folder / "model.safetensors", framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def _gguf_name(hf_name: str) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, block, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{block}.{BLOCKS[module]}.{kind}"


def _unpermute(ggml: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """GGML's rotary row order back to Hugging Face's: within a head of size d, GGML row
    ``2i + j`` is HF row ``j * d/2 + i``."""
    size = ggml.shape[0] // heads
    order = [h * size + 2 * i + j for h in range(heads) for j in range(2) for i in range(size // 2)]
    unpermuted: np.ndarray[Any, Any] = ggml[np.array(order)]
    return unpermuted


def _greedy(model: Any, tokenizer: Any, max_new_tokens: int = 12) -> list[int]:
    inputs = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return list(out[0, inputs["input_ids"].shape[1] :].tolist())


def _everything_stored(db: Database) -> str:
    """Every row of every table, as text: where a leaked secret would show."""
    with db.session() as session:
        tables = Base.metadata.sorted_tables
        return "\n".join(repr(tuple(row)) for t in tables for row in session.execute(select(t)))


# ── export: merged and GGUF ────────────────────────────────────────────────────────────────


def test_a_trained_adapter_exports_as_merged_and_gguf_and_pushes(
    client: TestClient,
    db: Database,
    settings: Settings,
    models: dict[str, Path],
    fake_hub: tuple[str, FakeHub],
) -> None:
    from peft import PeftModel

    from loraloop.ml.models import load

    user = make_user(db)
    version = make_adapter_version(
        db, user, make_base_model(db, models["base"]), models["trained"], name="kumo"
    )
    sign_in(client, user)
    exports = f"/api/adapters/{version.adapter_id}/versions/1/exports"
    merged = client.post(exports, json={"format": "merged"})
    gguf = client.post(exports, json={"format": "gguf", "system": "Kumo Coffee のスタッフです。"})
    assert (merged.status_code, gguf.status_code) == (201, 201), gguf.text
    assert client.post(exports, json={"format": "merged"}).json()["id"] == merged.json()["id"]
    early = client.get(f"{exports}/{gguf.json()['id']}/download")
    assert early.status_code == 409
    assert f"follow job {gguf.json()['job_id']}" in early.json()["error"]["message"]

    _run_jobs(db, 2)
    listed = {e["format"]: e for e in client.get(exports).json()}
    assert {e["status"] for e in listed.values()} == {"ready"}, listed
    assert [f["name"] for f in listed["gguf"]["files"]] == ["Modelfile", "kumo-v1.gguf"]

    # the merged model: a plain safetensors folder, greedy-exact against base + adapter
    zipped = client.get(listed["merged"]["download_url"])
    assert zipped.status_code == 200
    assert 'filename="kumo-v1-merged.zip"' in zipped.headers["content-disposition"]
    folder = Path(settings.home) / "unzipped"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert all(n.startswith("kumo-v1-merged/") for n in archive.namelist())
        archive.extractall(folder)
    folder = folder / "kumo-v1-merged"
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    tokenizer = load(models["base"])[1]
    adapted = PeftModel.from_pretrained(load(models["base"])[0], models["trained"]).eval()
    merged_model, _ = load(folder)
    assert _greedy(merged_model, tokenizer) == _greedy(adapted, tokenizer)
    merged_weights = _weights(folder)
    base_weights = _weights(models["base"])
    changed = {n for n in base_weights if not torch.equal(base_weights[n], merged_weights[n])}
    assert changed
    assert all(n.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in changed)

    # the GGUF: gguf's reader finds every merged tensor (q/k in GGML's rotary order)
    download = client.get(
        f"{exports}/{listed['gguf']['id']}/download", params={"file": "kumo-v1.gguf"}
    )
    assert download.status_code == 200
    path = Path(settings.home) / "kumo-v1.gguf"
    path.write_bytes(download.content)
    stored = gguf_tensors(path)
    assert set(stored) == {_gguf_name(n) for n in merged_weights}
    for name, tensor in merged_weights.items():
        got, expected = stored[_gguf_name(name)], tensor.numpy()
        kind = _gguf_name(name).split(".")[-2]
        if kind in ("attn_q", "attn_k"):
            got = _unpermute(got, 2 if kind == "attn_q" else 1)
        np.testing.assert_array_equal(got, expected.astype(got.dtype), err_msg=name)
    meta = gguf_metadata(path)
    assert (meta["general.architecture"], meta["general.name"]) == ("llama", "kumo-v1")
    modelfile = client.get(
        f"{exports}/{listed['gguf']['id']}/download", params={"file": "Modelfile"}
    )
    assert modelfile.text.startswith("FROM ./kumo-v1.gguf\n")
    assert 'SYSTEM """Kumo Coffee のスタッフです。"""' in modelfile.text
    sha = {f["name"]: f["sha256"] for f in listed["gguf"]["files"]}
    assert hashlib.sha256(download.content).hexdigest() == sha["kumo-v1.gguf"]

    # a ready export goes to the hub as it is, with a model card
    pushed = client.post(
        f"/api/adapters/{version.adapter_id}/versions/1/push",
        json={"repo_id": "alice/kumo-gguf", "token": TOKEN, "export_id": listed["gguf"]["id"]},
    )
    assert pushed.status_code == 200, pushed.text
    files = fake_hub[1].files("alice/kumo-gguf")
    assert files["kumo-v1.gguf"] == download.content
    assert files["Modelfile"] == modelfile.content
    assert "ollama create kumo -f Modelfile" in files["README.md"].decode()

    # deleting an export removes its files
    export_dir = Path(settings.home) / "exports" / f"export-{listed['merged']['id']}"
    assert export_dir.is_dir()
    assert client.delete(f"{exports}/{listed['merged']['id']}").status_code == 204
    assert not export_dir.exists()
    assert client.get(f"{exports}/{listed['merged']['id']}").status_code == 404


def test_export_requests_are_checked(
    client: TestClient, db: Database, models: dict[str, Path]
) -> None:
    user = make_user(db)
    llama = make_base_model(db, models["base"])
    version = make_adapter_version(db, user, llama, models["trained"], name="kumo")
    qwen = make_base_model(db, models["base"])
    with db.session() as session:
        row = session.get(BaseModel, qwen.id)
        assert row is not None
        row.architecture, row.model_type = "Qwen2ForCausalLM", "qwen2"
    other = make_adapter_version(db, user, qwen, models["trained"], name="qwen")
    sign_in(client, user)
    exports = f"/api/adapters/{version.adapter_id}/versions/1/exports"
    cases = [
        (exports, {"format": "onnx"}, 400, "format"),
        (exports, {"format": "gguf", "dtype": "q4_0"}, 400, "dtype 'q4_0' must be one of f16, f32"),
        (exports, {"format": "merged", "system": "hi"}, 400, "only for format gguf"),
        (f"/api/adapters/{other.adapter_id}/versions/1/exports", {"format": "gguf"}, 400,
         "GGUF export writes Llama models; base"),
        (f"/api/adapters/{version.adapter_id}/versions/9/exports", {"format": "merged"}, 404,
         "has no version 9"),
    ]  # fmt: skip
    for url, body, status, words in cases:
        response = client.post(url, json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["error"]["message"]
    queued = client.post(exports, json={"format": "merged"}).json()
    assert queued["status"] == "queued"
    page = client.get(f"/jobs/{queued['job_id']}", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "エクスポート（統合モデルまたは GGUF）" in page.text  # ja is the default locale
    refused = client.delete(f"{exports}/{queued['id']}")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "export_running")
    client.post(f"/api/jobs/{queued['job_id']}/cancel")
    assert client.get(f"{exports}/{queued['id']}").json()["status"] == "cancelled"
    assert client.post(exports, json={"format": "merged"}).json()["id"] != queued["id"]


#: (case, what the job reports of a 5-byte model.safetensors)
MISREPORTED = [
    ("wrong size", [{"name": "model.safetensors", "size": 6, "sha256": "a" * 64}]),
    ("outside the folder", [{"name": "../model.safetensors", "size": 5, "sha256": "a" * 64}]),
    ("not there", [{"name": "gone.safetensors", "size": 5, "sha256": "a" * 64}]),
    ("no hash", [{"name": "model.safetensors", "size": 5, "sha256": ""}]),
    ("no files", []),
]


@pytest.mark.parametrize(("case", "files"), MISREPORTED, ids=[c[0] for c in MISREPORTED])
def test_an_export_is_recorded_only_as_its_job_reported_it(
    db: Database, settings: Settings, models: dict[str, Path], case: str, files: list[Any]
) -> None:
    from loraloop.catalog import exports
    from loraloop.db.tables import Job
    from loraloop.errors import InvalidRequest

    user = make_user(db)
    version = make_adapter_version(db, user, make_base_model(db, models["base"]), models["trained"])
    with db.session() as session:
        view, _ = exports.start(session, settings, user, version.adapter_id, 1, format="merged")
    folder = Path(view.row.path)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"12345")
    with db.session() as session:
        job = session.get(Job, view.row.job_id)
        assert job is not None
        job.result = {"files": files}
        with pytest.raises(InvalidRequest, match="not as reported"):
            exports.export_succeeded(session, job)
        job.result = {"files": [{"name": "model.safetensors", "size": 5, "sha256": "a" * 64}]}
        assert exports.export_succeeded(session, job).files == job.result["files"]


# ── import: an adapter made elsewhere ──────────────────────────────────────────────────────


def _import(client: TestClient, data: bytes, filename: str = "outsider.zip", **fields: Any) -> Any:
    return client.post(
        "/api/adapters/import",
        files={"file": (filename, data, "application/zip")},
        data={k: str(v) for k, v in fields.items()},
    )


def test_an_outside_peft_adapter_imports_deploys_and_answers(
    client: TestClient, db: Database, live_server: str, models: dict[str, Path]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    user = make_user(db)
    base = make_base_model(db, models["base"])
    sign_in(client, user)
    data = _zip(models["outside"], extra={"__MACOSX/._README.md": b"junk"})
    imported = _import(client, data, name="outsider", base_model_id=base.id)
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["adapter"]["name"] == "outsider"
    assert body["report"] == {
        "rank": 8, "alpha": 16.0, "targets": ["q_proj", "v_proj"], "tensors": 8,
        "parameters": body["report"]["parameters"],
    }  # fmt: skip
    provenance = body["version"]["spec"]["import"]
    assert provenance["source"] == "upload"
    assert provenance["file_name"] == "outsider.zip"
    assert provenance["archive_sha256"] == hashlib.sha256(data).hexdigest()
    assert provenance["sha256"] == body["version"]["sha256"]
    with db.session() as session:
        row = session.scalars(select(AdapterVersion)).one()
    stored = sorted(p.name for p in Path(row.path).iterdir())
    assert stored == ["README.md", "adapter_config.json", "adapter_model.safetensors"]

    deployed = client.post(
        "/api/deployments",
        json={"name": "outsider", "adapter_id": body["adapter"]["id"], "version": 1},
    )
    plain = client.post("/api/deployments", json={"name": "plain", "base_model_id": base.id})
    assert (deployed.status_code, plain.status_code) == (201, 201), deployed.text
    api = openai.OpenAI(base_url=f"{live_server}/v1", api_key=make_key(db, user), max_retries=0)
    answers = {}
    for model in ("outsider", "plain"):
        reply = api.chat.completions.create(
            model=model,
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=12,
            temperature=0,
        )
        answers[model] = reply.choices[0].message.content
    api.close()
    assert answers["outsider"]
    assert answers["outsider"] != answers["plain"]
    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(models["base"]), models["outside"]
    )
    expected = tokenizer.decode(_greedy(peft.eval(), tokenizer), skip_special_tokens=True)
    assert answers["outsider"] == expected

    # the same archive again is the adapter's version 2
    again = _import(client, data, adapter_id=body["adapter"]["id"])
    assert again.status_code == 201, again.text
    assert again.json()["version"]["version"] == 2


def _broken(outside: Path) -> bytes:
    """Every fault at once: a pickle beside, a config that lies about r and names a layer
    the base lacks, and weights with a NaN."""
    from safetensors.torch import load_file, save

    weights = load_file(str(outside / "adapter_model.safetensors"))
    weights[next(k for k in sorted(weights) if "lora_A" in k)][0, 0] = float("nan")
    config = json.loads((outside / "adapter_config.json").read_text())
    config.update(r=4, target_modules=["q_proj", "v_proj", "qkv_proj"])
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("adapter_config.json", json.dumps(config))
        archive.writestr("adapter_model.bin", b"\x80\x04K\x01.")  # pickle.dumps(1)
        archive.writestr("adapter_model.safetensors", save(weights))
    return raw.getvalue()


def test_a_broken_adapter_is_refused_with_every_problem(
    client: TestClient, db: Database, settings: Settings, models: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, models["base"])
    sign_in(client, user)
    broken = _broken(models["outside"])
    refused = _import(client, broken, filename="broken.zip", name="broken", base_model_id=base.id)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_adapter"
    for words in (
        "adapter_model.bin: pickle files are never loaded",
        "target_modules names 'qkv_proj', which is not a linear layer of the base model",
        "adapter_config.json says r=4 but 4 LoRA pairs have rank 8",
        "values are NaN or infinite",
    ):
        assert words in error["message"], error["message"]
    assert client.get("/api/adapters").json() == []  # no adapter was made
    assert not [p for p in (settings.home / "imports").iterdir()]


#: (case, archive members, words the refusal must hold)
MALICIOUS = [
    ("zip slip", [("adapter_config.json", b"{}"), ("../../evil.py", b"import os")],
     "'../../evil.py': climbs out of the destination"),
    ("absolute", [("adapter_config.json", b"{}"), ("/etc/cron.d/x", b"* * * * *")],
     "'/etc/cron.d/x': is an absolute path"),
    ("bomb", [("adapter_config.json", b"{}"), ("z", bytes(3000))], "declares over 2048 bytes"),
    ("not an archive", None, "cannot be read as an archive"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "members", "words"), MALICIOUS, ids=[c[0] for c in MALICIOUS])
def test_a_malicious_archive_is_refused(
    client: TestClient, db: Database, settings: Settings, models: dict[str, Path],
    case: str, members: list[tuple[str, bytes]] | None, words: str,
) -> None:  # fmt: skip
    user = make_user(db)
    base = make_base_model(db, models["base"])
    sign_in(client, user)
    raw = io.BytesIO()
    if members is None:
        raw.write(b"PK\x03\x04 not really")
    else:
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    # a small limit, so a bomb is cheap to build (this test's app is its own)
    limited = settings.model_copy(update={"max_adapter_upload_bytes": 2048})
    client.app.state.settings = limited  # type: ignore[attr-defined]
    refused = _import(client, raw.getvalue(), name="evil", base_model_id=base.id)
    assert refused.status_code == 400, refused.text
    assert words in refused.json()["error"]["message"]
    assert not (settings.home.parent / "evil.py").exists()
    assert not list((settings.home / "imports").iterdir())


def test_import_requests_are_checked(
    client: TestClient, db: Database, models: dict[str, Path]
) -> None:
    user = make_user(db)
    base = make_base_model(db, models["base"])
    sign_in(client, user)
    data = _zip(models["outside"])
    assert client.post("/api/adapters", json={"name": "taken", "base_model_id": base.id}).is_success
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"base_model_id": base.id}, 400, "name and base_model_id are required"),
        ({"name": "x", "base_model_id": base.id, "adapter_id": 3}, 400, "not both"),
        ({"name": "bad name!", "base_model_id": base.id}, 400, "name 'bad name!' must be"),
        ({"name": "x", "base_model_id": 999}, 404, "base model 999 not found"),
        ({"adapter_id": 999}, 404, "adapter 999 not found"),
        ({"name": "taken", "base_model_id": base.id}, 409, "already have an adapter named taken"),
    ]
    for fields, status, words in cases:
        response = _import(client, data, **fields)
        assert response.status_code == status, (fields, response.text)
        assert words in response.json()["error"]["message"]
    wrong = client.post(
        "/api/adapters/import", content=b"x", headers={"content-type": "text/plain"}
    )
    assert (wrong.status_code, wrong.json()["error"]["param"]) == (400, "content-type")
    no_file = client.post("/api/adapters/import", data={"name": "x"}, files={"other": ("a", b"")})
    assert no_file.status_code == 400


# ── the Hugging Face Hub ───────────────────────────────────────────────────────────────────


def _hub_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_an_adapter_imports_from_the_hub_at_a_pinned_revision(
    client: TestClient, db: Database, settings: Settings, models: dict[str, Path],
    fake_hub: tuple[str, FakeHub],
) -> None:  # fmt: skip
    url, hub = fake_hub
    files = {**_hub_files(models["outside"]), "adapter_model.bin": b"\x80\x04K\x01."}
    commit = hub.add_repo("bob/kumo-lora", files)
    user = make_user(db)
    base = make_base_model(db, models["base"])
    sign_in(client, user)
    body = {
        "hub_repo": "bob/kumo-lora",
        "revision": commit,
        "name": "kumo",
        "base_model_id": base.id,
    }
    imported = client.post("/api/adapters/import", json=body)
    assert imported.status_code == 201, imported.text
    provenance = imported.json()["version"]["spec"]["import"]
    assert {k: provenance[k] for k in ("source", "hub_repo", "revision", "commit", "endpoint")} == {
        "source": "hub", "hub_repo": "bob/kumo-lora", "revision": commit, "commit": commit,
        "endpoint": url,
    }  # fmt: skip
    assert not [s for s in hub.seen if s.path.endswith("adapter_model.bin")]  # never fetched
    assert all(s.authorization is None for s in hub.seen)  # no token of the server's is lent

    # a private repo needs a token that may read it; and mistakes are named by field
    hub.add_repo("alice/private-lora", _hub_files(models["outside"]), private=True)
    adapter_id = imported.json()["adapter"]["id"]
    cases = [
        ({"hub_repo": "alice/private-lora", "revision": "main"}, "hub_repo", "or it is private"),
        ({"hub_repo": "bob/nope", "revision": "main"}, "hub_repo", "has no repo 'bob/nope'"),
        ({"hub_repo": "bob/kumo-lora", "revision": "f" * 40}, "revision", "has no revision"),
        ({"hub_repo": "not a repo", "revision": "main"}, None, "is not a hub repo id"),
        ({"hub_repo": "bob/kumo-lora", "revision": "../x"}, None, "is not a git revision"),
    ]
    for fields, param, words in cases:
        response = client.post("/api/adapters/import", json={**fields, "adapter_id": adapter_id})
        assert response.status_code == 400, (fields, response.text)
        assert words in response.json()["error"]["message"]
        if param:
            assert response.json()["error"]["param"] == param
    private = {"hub_repo": "alice/private-lora", "revision": "main", "token": TOKEN}
    with_token = client.post("/api/adapters/import", json={**private, "adapter_id": adapter_id})
    assert with_token.status_code == 201, with_token.text
    assert with_token.json()["version"]["version"] == 2
    assert TOKEN not in _everything_stored(db)


def test_an_offline_server_imports_from_its_hub_cache(
    db: Database, settings: Settings, models: dict[str, Path], fake_hub: tuple[str, FakeHub]
) -> None:
    from loraloop.catalog import imports

    hub = fake_hub[1]
    commit = hub.add_repo("bob/kumo-lora", _hub_files(models["outside"]))
    user = make_user(db)
    base = make_base_model(db, models["base"])
    source = imports.HubSource("bob/kumo-lora", commit)
    first = imports.import_adapter(
        db, settings, user, source, imports.Target(name="kumo", base_model_id=base.id)
    )
    offline = settings.model_copy(
        update={"hub_offline": True, "hub_endpoint": "http://127.0.0.1:9"}
    )
    seen = len(hub.seen)
    second = imports.import_adapter(
        db, offline, user, source, imports.Target(adapter_id=first.adapter.id)
    )
    assert len(hub.seen) == seen  # nothing asked of the hub
    assert (second.version.version, second.version.sha256) == (2, first.version.sha256)
    missing = imports.HubSource("bob/never-fetched", commit)
    with pytest.raises(Exception, match="not in the hub cache, and hub_offline is on"):
        imports.import_adapter(
            db, offline, user, missing, imports.Target(adapter_id=first.adapter.id)
        )


def test_a_push_lands_on_the_hub_and_the_token_is_kept_nowhere(
    client: TestClient, db: Database, models: dict[str, Path], fake_hub: tuple[str, FakeHub],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _, hub = fake_hub
    caplog.set_level(logging.DEBUG)
    user = make_user(db)
    version = make_adapter_version(
        db, user, make_base_model(db, models["base"]), models["outside"], name="kumo"
    )
    sign_in(client, user)
    push = f"/api/adapters/{version.adapter_id}/versions/1/push"
    pushed = client.post(push, json={"repo_id": "alice/kumo-lora", "token": TOKEN})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["commit_url"].endswith(pushed.json()["commit"])
    files = hub.files("alice/kumo-lora")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == (models["outside"] / name).read_bytes()
    assert hub.repos["alice/kumo-lora"].private  # private unless asked otherwise
    writes = [s for s in hub.seen if s.method == "POST"]
    assert writes
    assert all(s.authorization == f"Bearer {TOKEN}" for s in writes)

    refusals = [
        ({"repo_id": "alice/kumo-lora", "token": "hf_wrong"}, "hub_unauthorized"),
        ({"repo_id": "carol/kumo-lora", "token": TOKEN}, "hub_forbidden"),
        ({"repo_id": "no-owner", "token": TOKEN}, "invalid_push"),
        ({"repo_id": "alice/x", "token": ""}, "invalid_push"),
    ]
    for body, code in refusals:
        response = client.post(push, json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), (
            response.text
        )
        assert TOKEN not in response.text
    assert TOKEN not in caplog.text
    assert TOKEN not in _everything_stored(db)
