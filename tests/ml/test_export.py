"""Exports: the PEFT folder and the merged safetensors model (PEFT-exact greedy output), on the
2-layer tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from loraloop.errors import InvalidRequest
from loraloop.ml.export import ADAPTER_FILES, export_peft, merge
from loraloop.ml.models import load
from loraloop.ml.safety import UnsafeWeights
from tests.ml.weights import safetensors_weights, sha256

# PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
PROMPT = [{"role": "user", "content": "How much is a matcha latte?"}]


# ── the PEFT folder ────────────────────────────────────────────────────────────────────────


def test_export_peft_copies_config_and_weights_only(adapter: Path, tmp_path: Path) -> None:
    assert (adapter / "README.md").is_file()  # PEFT's card is there, and is not copied
    result = export_peft(adapter, tmp_path / "out")
    assert [f.name for f in result.files] == sorted(ADAPTER_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ADAPTER_FILES)
    for file in result.files:
        copy = tmp_path / "out" / file.name
        assert file.sha256 == sha256(copy) == sha256(adapter / file.name)
        assert file.size == copy.stat().st_size


PICKLE = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."  # pickle.dumps(1)
#: (case, file to add or overwrite, its content, error, a word the message must hold)
REFUSED = [
    ("a pickle beside", "adapter_model.bin", PICKLE, UnsafeWeights, "adapter_model.bin"),
    ("a pickle below", "checkpoint-1/optimizer.pt", PICKLE, UnsafeWeights, "optimizer.pt"),
    ("a pickle in disguise", "adapter_model.safetensors", PICKLE, UnsafeWeights, "pickle"),
    ("no config", "adapter_config.json", None, InvalidRequest, "adapter_config.json"),
]


@pytest.mark.parametrize(("case", "name", "content", "error", "word"), REFUSED)
def test_export_peft_refuses_unsafe_or_incomplete_adapters(
    adapter: Path,
    tmp_path: Path,
    case: str,
    name: str,
    content: bytes | None,
    error: type[Exception],
    word: str,
) -> None:
    folder = shutil.copytree(adapter, tmp_path / "adapter")
    (folder / name).parent.mkdir(exist_ok=True)
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(content)
    with pytest.raises(error, match=word) as raised:
        export_peft(folder, tmp_path / "out")
    assert (error is UnsafeWeights) == isinstance(raised.value, UnsafeWeights)
    assert not (tmp_path / "out").exists()


def test_merge_refuses_pickles_in_the_adapter_or_the_base(
    base: Path, adapter: Path, tmp_path: Path
) -> None:
    unsafe_adapter = shutil.copytree(adapter, tmp_path / "adapter")
    (unsafe_adapter / "training_args.bin").write_bytes(PICKLE)
    unsafe_base = shutil.copytree(base, tmp_path / "base")
    (unsafe_base / "pytorch_model.bin").write_bytes(PICKLE)
    for folders, word in [
        ((base, unsafe_adapter), "training_args"),
        ((unsafe_base, adapter), "pytorch_model"),
    ]:
        with pytest.raises(UnsafeWeights, match=word):
            merge(*folders, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_that_is_not_empty(adapter: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidRequest, match="empty"):
        export_peft(adapter, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


# ── merged safetensors ─────────────────────────────────────────────────────────────────────


def test_merged_model_answers_exactly_as_base_plus_adapter(
    base: Path, adapter: Path, merged: Path
) -> None:
    from peft import PeftModel

    files = sorted(p.name for p in merged.iterdir())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(
        files
    )
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    plain, tokenizer = load(base)
    with_adapter = PeftModel.from_pretrained(load(base)[0], adapter).eval()
    merged_model, _ = load(merged)
    inputs = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    outputs = []
    with torch.no_grad():
        for model in (with_adapter, merged_model):
            outputs.append(model.generate(**inputs, max_new_tokens=12, do_sample=False)[0])
        logits = [m(**inputs).logits for m in (plain, with_adapter, merged_model)]
    assert outputs[0].shape[0] > inputs["input_ids"].shape[1]
    assert outputs[0].tolist() == outputs[1].tolist()
    assert torch.allclose(logits[1], logits[2], atol=1e-5)
    assert (logits[0] - logits[2]).abs().max() > 1e-2  # the adapter changes the answer


def test_merge_changes_exactly_the_adapted_weights(base: Path, merged: Path) -> None:
    before, after = safetensors_weights(base), safetensors_weights(merged)
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapted = {n for n in before if n.split(".")[-2] in ATTENTION}
    assert changed == adapted
    assert len(adapted) == 8  # q, k, v, o in each of the 2 layers
