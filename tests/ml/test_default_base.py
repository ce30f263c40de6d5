"""The real default base: the packaged GGUF becomes safetensors once, reloads, and answers.

Slow (about half a minute here), so marked: deselect with ``-m "not slow"`` for a quick loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loraloop.ml.models import DEFAULT_BASE, ensure_default_base, load, weights_sha256

pytestmark = pytest.mark.slow


def test_default_base_is_converted_once_and_knows_tokyo(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    info = ensure_default_base(models_dir)
    assert (info.name, info.source, info.path) == (
        DEFAULT_BASE,
        "package",
        models_dir / DEFAULT_BASE,
    )
    assert (info.architecture, info.model_type, info.dtype) == (
        "LlamaForCausalLM",
        "llama",
        "float32",
    )
    assert round(info.parameters / 1e6, 1) == 134.5
    assert info.context_length == 8192
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert "<|im_end|>" in info.chat_template
    assert info.sha256 == weights_sha256(info.path)

    model, tokenizer = load(info.path)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Japan?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Tokyo" in answer

    weights = info.path / "model.safetensors"
    written = (weights.stat().st_mtime_ns, weights.stat().st_ino)
    record = json.loads((info.path / "loraloop-model.json").read_text())
    assert ensure_default_base(models_dir) == info
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == written
    assert json.loads((info.path / "loraloop-model.json").read_text()) == record
    assert [p.name for p in models_dir.iterdir()] == [DEFAULT_BASE]
