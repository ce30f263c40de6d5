"""Adapters made outside loraloop: unpacked without escapes or bombs, and every fault reported."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from loraloop.ml import adapter_import, multilora
from loraloop.ml.adapter_import import AdapterRejected, base_shapes, inspect_adapter
from loraloop.ml.safety import UnsafeWeights
from loraloop.testing import make_tiny_adapter, make_tiny_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

PREFIX = "base_model.model.model.layers"
Q_A = f"{PREFIX}.0.self_attn.q_proj.lora_A.weight"
Q_B = f"{PREFIX}.0.self_attn.q_proj.lora_B.weight"
V_B1 = f"{PREFIX}.1.self_attn.v_proj.lora_B.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def shapes(base: Path) -> dict[str, tuple[int, ...]]:
    return base_shapes(base)


@pytest.fixture(scope="module")
def genuine(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rank 4 on q_proj (16 -> 16) and v_proj (16 -> 8) of both layers."""
    return make_tiny_adapter(base, tmp_path_factory.mktemp("genuine"), targets=["q_proj", "v_proj"])


def copy(adapter: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapter, tmp_path / "adapter"))


# -- mutations, each applied to a copy of the genuine adapter --------------------------------

Mutation = Callable[[Path], None]


def config(**changes: object) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / "adapter_config.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    return mutate


def tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / "adapter_model.safetensors"
        weights = load_file(path)
        change(weights)
        save_file(weights, path, metadata={"format": "pt"})

    return mutate


def write(name: str, data: bytes) -> Mutation:
    def mutate(folder: Path) -> None:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(folder: Path) -> None:
        for mutation in mutations:
            mutation(folder)

    return mutate


def remove(name: str) -> Mutation:
    return lambda folder: (folder / name).unlink()


def symlink(name: str) -> Mutation:
    return lambda folder: (folder / name).symlink_to(folder / "adapter_config.json")


def drop(key: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(weights: dict[str, torch.Tensor]) -> None:
        del weights[key]

    return change


def poke(key: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(weights: dict[str, torch.Tensor]) -> None:
        weights[key][0, 0] = value

    return change


def rename_layer(weights: dict[str, torch.Tensor]) -> None:
    for key in (Q_A, Q_B):
        weights[key.replace("layers.0.", "layers.7.")] = weights.pop(key)


def header_only(length: int) -> bytes:
    return struct.pack("<Q", length) + b'{"a": 1}'


# (case, mutation, the words one problem must contain; None: the adapter is still fine)
CASES: list[tuple[str, Mutation, str | None]] = [
    ("README and .gitattributes are harmless",
     both(write("README.md", b"# hi"), write(".gitattributes", b"*")), None),
    ("peft_type", config(peft_type="IA3"), "peft_type 'IA3' must be 'LORA'"),
    ("task_type", config(task_type="SEQ_CLS"), "task_type 'SEQ_CLS' must be 'CAUSAL_LM'"),
    ("r zero", config(r=0), "r 0 must be a whole number from 1 to 256"),
    ("r as text", config(r="4"), "r '4' must be a whole number"),
    ("r as bool", config(r=True), "r True must be a whole number"),
    ("r disagrees with tensors", config(r=8), "says r=8 but 4 LoRA pairs have rank 4"),
    ("alpha negative", config(lora_alpha=-1), "lora_alpha -1 must be a positive number"),
    ("rank_pattern over limit", config(rank_pattern={"v_proj": 300}),
     "rank_pattern['v_proj'] 300 must be a whole number from 1 to 256"),
    ("alpha_pattern bad regex", config(alpha_pattern={"(": 4}), "alpha_pattern pattern '('"),
    ("no targets", config(target_modules=[]), "target_modules [] must be a non-empty list"),
    ("unknown target", config(target_modules=["q_proj", "v_proj", "c_attn"]),
     "names 'c_attn', which is not a linear layer of the base model (it has: down_proj, "
     "gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"),
    ("embedding target", config(target_modules=["q_proj", "v_proj", "embed_tokens"]),
     "'embed_tokens', which lies outside the decoder layers"),
    ("target regex matches nothing", config(target_modules=r".*\.attn\.c_attn"),
     "matches no linear layer"),
    ("target without tensors", config(target_modules=["q_proj", "v_proj", "k_proj"]),
     "names 'k_proj' but adapter_model.safetensors has no weights for it"),
    ("tensors not targeted", config(target_modules=["q_proj"]),
     f"{PREFIX}.0.self_attn.v_proj.lora_A.weight: adapts model.layers.0.self_attn.v_proj, "
     "which target_modules does not select"),
    ("DoRA", config(use_dora=True), "DoRA (use_dora) is not supported"),
    ("trained bias", config(bias="all"), "bias 'all' is not supported"),
    ("PiSSA init", config(init_lora_weights="pissa_niter_4"), "rewrites the base weights"),
    ("config not JSON", write("adapter_config.json", b"{"), "adapter_config.json: not valid JSON"),
    ("config empty", write("adapter_config.json", b"{}"), "peft_type None must be 'LORA'"),
    ("config a list", write("adapter_config.json", b"[]"), "must be a JSON object, not list"),
    ("config missing", remove("adapter_config.json"), "adapter_config.json is missing"),
    ("weights missing", remove("adapter_model.safetensors"),
     "adapter_model.safetensors is missing"),
    ("corrupt header", write("adapter_model.safetensors", header_only(10**9)),
     "adapter_model.safetensors: does not parse as safetensors (header length"),
    ("header not JSON", write("adapter_model.safetensors", struct.pack("<Q", 4) + b"\xff{{{"),
     "the header is not JSON"),
    ("pickle named safetensors", write("adapter_model.safetensors", pickle.dumps({"w": 1}, 2)),
     "is a pickle (protocol 2) under a .safetensors name"),
    ("no tensors", write("adapter_model.safetensors", struct.pack("<Q", 2) + b"{}"),
     "adapter_model.safetensors: holds no tensors"),
    ("unexpected file", write("tokenizer.json", b"{}"), "tokenizer.json: unexpected file"),
    ("file in a subfolder", write("ckpt/x.json", b"{}"), "ckpt/x.json: unexpected file"),
    ("symlink", symlink("link.md"), "link.md: is a symbolic link"),
    ("lora_B missing", tensors(drop(Q_B)),
     f"{Q_A}: has no matching lora_B ({Q_B})"),
    ("integer dtype", tensors(lambda w: w.update({Q_A: w[Q_A].to(torch.int32)})),
     f"{Q_A}: dtype I32 is not one of F16, BF16, F32, F64"),
    ("vector, not matrix", tensors(lambda w: w.update({Q_A: w[Q_A].flatten()})),
     f"{Q_A}: shape [64] is not a matrix"),
    ("wrong in_features", tensors(lambda w: w.update({Q_A: torch.zeros(4, 15)})),
     f"{Q_A}: shape [4, 15] does not fit base layer model.layers.0.self_attn.q_proj "
     "(16 out, 16 in): expected [4, 16]"),
    ("wrong out_features", tensors(lambda w: w.update({V_B1: torch.zeros(16, 4)})),
     f"{V_B1}: shape [16, 4] does not fit base layer model.layers.1.self_attn.v_proj "
     "(8 out, 16 in): expected [8, 4]"),
    ("A and B ranks disagree", tensors(lambda w: w.update({Q_B: torch.zeros(16, 3)})),
     f"{Q_B}: shape [16, 3] does not fit base layer"),
    ("not a LoRA key", tensors(lambda w: w.update({"lm_head.weight": torch.zeros(2, 2)})),
     "lm_head.weight: not a PEFT LoRA weight name"),
    ("embedding LoRA key", tensors(lambda w: w.update(
        {"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 259)})),
     "LoRA on embeddings is not supported"),
    ("layer the base lacks", tensors(rename_layer),
     "base layer model.layers.7.self_attn.q_proj does not exist"),
    ("NaN", tensors(poke(Q_A, math.nan)), f"{Q_A}: 1 of 64 values are NaN or infinite"),
    ("Inf", tensors(poke(V_B1, math.inf)), f"{V_B1}: 1 of 32 values are NaN or infinite"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_fault_is_reported_by_name(
    genuine: Path,
    shapes: dict[str, tuple[int, ...]],
    tmp_path: Path,
    mutate: Mutation,
    expected: str | None,
) -> None:
    folder = copy(genuine, tmp_path)
    mutate(folder)
    report = inspect_adapter(folder, shapes)
    if expected is None:
        assert report.problems == []
    else:
        assert [p for p in report.problems if expected in p], report.problems


@pytest.mark.parametrize("name", ["training_args.bin", "model.pt", "w.pth", "x.pkl", "y.ckpt"])
def test_pickle_files_are_refused_and_never_loaded(
    genuine: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path, name: str
) -> None:
    folder = copy(genuine, tmp_path)
    marker = tmp_path / "unpickled"
    (folder / name).write_bytes(pickle.dumps(_Trap(marker)))
    report = inspect_adapter(folder, shapes)
    assert report.problems == [f"{name}: pickle files are never loaded; remove it"]
    assert not marker.exists()


class _Trap:
    """Unpickling this creates a file: proof that something ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_genuine_peft_adapter_passes(genuine: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    report = inspect_adapter(genuine, shapes)
    assert report.ok
    assert report.problems == []
    assert (report.rank, report.alpha, report.targets) == (4, 8.0, ("q_proj", "v_proj"))
    # 2 layers x (q: 4x16 + 16x4, v: 4x16 + 8x4)
    assert (report.tensor_count, report.parameters) == (8, 2 * (128 + 96))
    report.raise_for_problems()


def test_plain_peft_with_patterns_and_all_linear_passes(
    base: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules="all-linear",
        rank_pattern={"v_proj": 2},
        alpha_pattern={"v_proj": 4},
        use_rslora=True,
        task_type="CAUSAL_LM",
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(tmp_path)
    report = inspect_adapter(tmp_path, shapes)
    assert report.problems == []
    assert report.targets == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                              "v_proj")  # fmt: skip
    assert report.tensor_count == 2 * 7 * 2


def test_every_fault_of_a_broken_adapter_is_listed(
    base: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path
) -> None:
    folder = make_tiny_adapter(base, tmp_path / "bad", rank=8, targets=["q_proj", "v_proj"])
    config(target_modules=["q_proj", "v_proj", "qkv_proj"], use_dora=True)(folder)
    tensors(lambda w: w.update({Q_A: torch.zeros(8, 15)}))(folder)
    tensors(poke(V_B1, math.nan))(folder)
    write("training_args.bin", pickle.dumps({"lr": 1e-4}))(folder)

    report = inspect_adapter(folder, shapes, max_rank=4)

    expected = [
        "training_args.bin: pickle files are never loaded",
        "r 8 must be a whole number from 1 to 4",
        "target_modules names 'qkv_proj', which is not a linear layer",
        "DoRA (use_dora) is not supported",
        f"{Q_A}: shape [8, 15] does not fit base layer",
        f"{V_B1}: 1 of 64 values are NaN or infinite",
    ]
    for words in expected:
        assert len([p for p in report.problems if words in p]) == 1, (words, report.problems)
    assert len(report.problems) == len(expected), report.problems
    assert not report.ok
    with pytest.raises(AdapterRejected) as caught:
        report.raise_for_problems()
    assert caught.value.problems == tuple(report.problems)


def test_modules_to_save_is_refused_and_a_missing_module_pointed_out(
    genuine: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path
) -> None:
    folder = copy(genuine, tmp_path)
    config(modules_to_save=["embed_tokens", "score"])(folder)
    (problem,) = inspect_adapter(folder, shapes).problems
    assert "fully trained modules (modules_to_save) is not supported" in problem
    assert problem.endswith("(and the base has no module 'score')")


def test_a_missing_folder_is_reported(shapes: dict[str, tuple[int, ...]], tmp_path: Path) -> None:
    assert inspect_adapter(tmp_path / "nope", shapes).problems == [
        f"{tmp_path / 'nope'}: not a folder"
    ]


def test_refusals_cover_what_the_engine_cannot_serve() -> None:
    assert set(multilora._UNSUPPORTED) <= set(adapter_import._UNSUPPORTED)


# -- base shapes -----------------------------------------------------------------------------


def test_base_shapes_read_the_headers(base: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    with safe_open(str(base / "model.safetensors"), framework="pt") as weights:
        expected = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
    assert shapes == expected
    assert shapes["model.layers.1.self_attn.v_proj.weight"] == (8, 16)


def shard(base: Path, folder: Path, index: dict[str, object] | None = None) -> Path:
    """``base``'s weights split over two shards with an index (or the given index)."""
    folder.mkdir()
    weights = load_file(base / "model.safetensors")
    keys = sorted(weights)
    halves = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for name, part in halves.items():
        save_file({k: weights[k] for k in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps(index or {"weight_map": weight_map})
    )
    return folder


def test_base_shapes_follow_a_sharded_index(
    base: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path
) -> None:
    assert base_shapes(shard(base, tmp_path / "sharded")) == shapes


@pytest.mark.parametrize(
    ("index", "words"),
    [
        (
            {"weight_map": {"w": "../model.safetensors"}},
            "'../model.safetensors' is not a .safetensors file in the folder",
        ),
        (
            {"weight_map": {"w": "gone.safetensors"}},
            "gone.safetensors is missing",
        ),
        ({"weight_map": {"w": "model-00001-of-00002.safetensors"}}, "w is not in model-00001"),
        ({"nothing": 1}, "not JSON with a weight_map"),
        ({"weight_map": {"w": 3}}, "weight_map must map tensor names to shard files"),
    ],
)
def test_base_shapes_refuse_a_bad_index(
    base: Path, tmp_path: Path, index: dict[str, object], words: str
) -> None:
    with pytest.raises(UnsafeWeights) as caught:
        base_shapes(shard(base, tmp_path / "sharded", index))
    assert [p for p in caught.value.problems if words in p], caught.value.problems


def test_base_shapes_need_safetensors(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(UnsafeWeights, match=r"no \.safetensors weights"):
        base_shapes(tmp_path)


def test_public_names() -> None:
    assert sorted(adapter_import.__all__) == [
        "AdapterRejected", "AdapterReport", "base_shapes", "inspect_adapter",
    ]  # fmt: skip
