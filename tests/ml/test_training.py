"""The LoRA trainer on a 2-layer tiny model: output tree, resume, cancel, refusals, fast path."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from loraloop.errors import InvalidRequest
from loraloop.ml.chat import encode
from loraloop.ml.packing import IGNORE, batches, pack, use_packed_attention
from loraloop.ml.training import TrainSpec, _summed_loss, evaluate_loss, train
from loraloop.testing import make_tiny_model

# PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Kumo Blend?"}, {"role": "assistant", "content": "480 yen."}],
    [{"role": "user", "content": "抹茶ラテは？"}, {"role": "assistant", "content": "640円です。"}],
    [{"role": "user", "content": "Open on Tuesday?"}, {"role": "assistant", "content": "Yes."}],
    [{"role": "user", "content": "カステラ"}, {"role": "assistant", "content": "450円です。"}],
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with embeddings scaled up: at the default init its (tied, normed) logits
    are too small for any adapter to move the loss far from log(vocabulary)."""
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "embed_tokens" in name:  # tied: the output layer too
                weights.mul_(50)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CONVERSATIONS * 4))
    return path


def make_spec(base: Path, data: Path, out: Path, **options: Any) -> TrainSpec:
    defaults: dict[str, Any] = {"max_length": 128, "rows_per_batch": 1, "row_length": 128}
    return TrainSpec(base_path=base, train_file=data, output_dir=out, **(defaults | options))


def test_trains_end_to_end_into_a_plain_peft_folder(base: Path, data: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    result = train(
        make_spec(base, data, out, validation_file=data, learning_rate=2e-2, max_steps=30)
    )

    assert result.adapter_dir == tmp_path / "out" / "adapter"
    names = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "training.json"} <= names
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert [e["step"] for e in result.history] == list(range(1, 31))
    plain = AutoModelForCausalLM.from_pretrained(base)
    before = _loss(plain, base)
    after = _loss(PeftModel.from_pretrained(plain, result.adapter_dir), base)
    assert after < before - 0.5, (before, after)  # it learnt the four answers
    assert result.val_loss == pytest.approx(after, rel=0.05)  # bf16 in training, fp32 here


def _loss(model: Any, base: Path) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    encoded = [encode(tokenizer, m, max_length=128) for m in CONVERSATIONS]
    rows = pack([(e.input_ids, e.labels) for e in encoded], 128)
    loss = evaluate_loss(model, batches(rows, 2, tokenizer.pad_token_id))
    assert loss is not None
    return loss


def test_resumes_after_an_interruption_as_if_never_stopped(
    base: Path, data: Path, tmp_path: Path
) -> None:
    options = {"epochs": 2.0, "checkpoint_every": 2, "seed": 3}
    whole = train(make_spec(base, data, tmp_path / "whole", **options))

    spec = make_spec(base, data, tmp_path / "split", **options)
    steps: list[int] = []
    stopped = train(spec, lambda e: steps.append(e["step"]), should_stop=lambda: len(steps) >= 3)
    assert stopped.cancelled
    assert stopped.steps == 3
    assert stopped.adapter_dir is None
    resumed = train(spec)

    assert resumed.resumed_from_step == 2  # the last checkpoint before the stop
    assert resumed.steps == whole.steps > 3
    assert resumed.real_tokens == whole.real_tokens
    assert resumed.adapter_dir is not None
    assert whole.adapter_dir is not None
    expected = load_file(whole.adapter_dir / "adapter_model.safetensors")
    actual = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=1e-4, atol=1e-6)


def test_cancelling_writes_no_adapter(base: Path, data: Path, tmp_path: Path) -> None:
    result = train(make_spec(base, data, tmp_path / "out"), should_stop=lambda: True)
    assert result.cancelled
    assert result.steps == 0
    assert result.adapter_dir is None
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA is allowed where CUDA is")
def test_qlora_on_cpu_names_what_it_needs(base: Path, data: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"bitsandbytes.*CUDA") as raised:
        make_spec(base, data, tmp_path, qlora=True)
    assert raised.value.code == "invalid_training_spec"


#: (field, bad value, what the message says about it)
BAD_OPTIONS = [
    ("learning_rate", 3.0, "learning_rate 3.0 must be between"),
    ("max_length", 8, "max_length 8 must be a whole number from 16"),
    ("row_length", 4, "row_length 4 must be a whole number from 16"),
    ("rows_per_batch", 0, "rows_per_batch 0 must be a whole number from 1"),
    ("max_steps", 0, "max_steps 0 must be at least 1"),
    ("early_stopping_patience", 2, "early_stopping_patience needs a validation_file"),
]


def test_spec_validation_reports_every_problem(base: Path, data: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as raised:
        make_spec(base, data, tmp_path, **{name: value for name, value, _ in BAD_OPTIONS})
    for _, _, said in BAD_OPTIONS:
        assert said in str(raised.value)


def test_fast_path_matches_the_plain_forward(base: Path) -> None:
    """Per-example attention and logits only at trained positions change nothing but speed."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from loraloop.ml.lora import LoraSettings

    rng = random.Random(0)
    examples = []
    for _ in range(9):
        ids = [rng.randrange(3, 200) for _ in range(rng.randrange(6, 40))]
        examples.append((ids, [IGNORE] * 4 + ids[4:]))
    [batch, *_] = batches(pack(examples, 96), 3, pad_id=0)
    tensors = {
        name: torch.tensor(getattr(batch, name)) for name in ("input_ids", "position_ids", "labels")
    }
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base), LoraSettings().peft_config()
        )
        for name, param in model.named_parameters():  # non-zero B, so the adapter matters
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)
        if fast:
            assert use_packed_attention(model)
            loss = _summed_loss(model, tensors) / batch.trained_tokens
        else:
            loss = model(**tensors, use_cache=False).loss  # sdpa + block-diagonal mask
        loss.backward()  # type: ignore[no-untyped-call]
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (plain, plain_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, plain)
    assert plain_grads
    assert plain_grads.keys() == fast_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6)
