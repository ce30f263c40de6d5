"""LoRA / QLoRA fine-tuning: a :class:`TrainSpec` in, a PEFT adapter folder and metrics out.

Pure engine code: no database, no web. The same function runs inside the local worker's
child process and on a remote provider's machine. Progress goes to a ``report`` callback;
checkpoints (safetensors + JSON, never pickle) make a killed run resume where it stopped::

    examples ──encode (loss on assistant tokens)──▶ pack rows ──▶ micro-batches
        ──forward/backward (bf16 base weights where fast)──▶ AdamW step ──▶ eval / checkpoint

Where the time goes on a CPU, and what is done about it: the base weights are stored in bf16
(no autocast: LoRA weights stay fp32 and PEFT casts around them); attention runs per example
rather than over whole packed rows (:func:`~loraloop.ml.packing.use_packed_attention`); the
output layer (the vocabulary-sized matmul) runs only at positions that carry a label; LoRA
dropout draws its mask with one ``rand`` instead of ``bernoulli``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from loraloop.errors import InvalidRequest
from loraloop.ml import checkpoints
from loraloop.ml.chat import encode
from loraloop.ml.lora import LoraSettings
from loraloop.ml.packing import IGNORE, Batch, PackedRow, batches, pack, use_packed_attention

__all__ = ["TrainResult", "TrainSpec", "read_examples", "train"]

Report = Callable[[dict[str, Any]], None]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs. Validated on construction, all problems at once."""

    base_path: Path
    """Local folder of the base model (safetensors, config, tokenizer)."""
    train_file: Path
    """JSON Lines, one ``{"messages": [...]}`` per line (loraloop's normalised form)."""
    output_dir: Path
    """Receives ``adapter/`` (the PEFT folder), ``checkpoints/`` and ``metrics.json``."""
    validation_file: Path | None = None
    """Held-out conversations for validation loss; none means no validation."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming up linearly from zero."""
    epochs: float = 1.0
    """Passes over the training set (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    max_length: int = 1024
    """Longer conversations are truncated to this many tokens."""
    row_length: int | None = None
    """Tokens per packed row (None: ``max_length``); a longer example gets a row to itself."""
    rows_per_batch: int = 2
    """Packed rows per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    eval_every: int = 50
    """Validation loss every N steps (and at the end)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement."""
    checkpoint_every: int = 50
    """Checkpoint every N steps, for resuming after a crash."""
    seed: int = 0
    """Seeds data order, LoRA initialisation and dropout."""
    precision: Precision = "auto"
    """bf16 base weights where the hardware does bf16 fast, else fp32 (LoRA weights: fp32)."""
    qlora: bool = False
    """Load the base in 4 bits (bitsandbytes; CUDA only)."""
    pack: bool = True
    """Pack several conversations per row (no cross-attention between them)."""
    keep_checkpoints: bool = False
    """Keep every checkpoint after the run (a provider's audit trail) instead of removing
    them once the adapter is written."""
    stop_at_step: int | None = None
    """Checkpoint and stop at this step without writing the adapter (replaying one segment of
    someone else's run; the schedule still runs to the full length)."""

    def __post_init__(self) -> None:
        problems = []
        for name, low, high in (
            ("learning_rate", 1e-7, 1.0),
            ("warmup_ratio", 0.0, 0.5),
            ("epochs", 0.01, 100.0),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                problems.append(f"{name} {value} must be between {low} and {high}")
        for name, low, high in (
            ("max_length", 16, 32768),
            ("rows_per_batch", 1, 512),
            ("grad_accum", 1, 1024),
            ("eval_every", 1, 10**6),
            ("checkpoint_every", 1, 10**6),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                problems.append(f"{name} {value} must be a whole number from {low} to {high}")
        if self.row_length is not None and not 16 <= self.row_length <= 32768:
            problems.append(f"row_length {self.row_length} must be a whole number from 16 to 32768")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps {self.max_steps} must be at least 1")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            problems.append(f"stop_at_step {self.stop_at_step} must be at least 1")
        if self.early_stopping_patience is not None and self.validation_file is None:
            problems.append("early_stopping_patience needs a validation_file")
        if self.qlora and not torch.cuda.is_available():
            problems.append(
                "QLoRA loads the base model in 4 bits with bitsandbytes, which needs a CUDA GPU; "
                "this machine has none: train plain LoRA (qlora=false) or use a GPU worker"
            )
        if problems:
            raise InvalidRequest("; ".join(problems), code="invalid_training_spec")


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path | None
    steps: int
    real_tokens: int
    seconds: float
    tokens_per_second: float
    train_loss: float | None
    val_loss: float | None
    stopped_early: bool
    cancelled: bool
    resumed_from_step: int
    history: list[dict[str, Any]]


def read_examples(path: Path) -> list[list[dict[str, str]]]:
    """Conversations from a normalised JSON Lines file."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["messages"] for line in handle if line.strip()]


def _use_bf16(precision: Precision) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _load(spec: TrainSpec, bf16: bool) -> tuple[Any, Any]:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True}
    if spec.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    else:
        kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(spec.base_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(spec.base_path, **kwargs)
    if spec.qlora:
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=False
        )
    torch.manual_seed(spec.seed)  # LoRA A matrices start the same on every run
    model = get_peft_model(model, spec.lora.peft_config())
    model.config.use_cache = False
    if next(model.parameters()).device.type == "cpu":
        use_packed_attention(model)  # measured on CPU; GPUs keep their fused sdpa kernels
    _use_fast_dropout(model)
    return model, tokenizer


class _Dropout(torch.nn.Module):
    """Inverted dropout with the mask from ``rand``: about 1.6x faster than ``bernoulli`` here."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))


def _use_fast_dropout(model: Any) -> None:
    """Swap PEFT's LoRA dropout modules (stateless, so the saved adapter is unchanged)."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, layer in dropouts.items():
                if isinstance(layer, torch.nn.Dropout) and layer.p > 0:
                    dropouts[name] = _Dropout(layer.p)


def _encode_all(
    tokenizer: Any, examples: Sequence[list[dict[str, str]]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    encoded = []
    for messages in examples:
        item = encode(tokenizer, messages, max_length=max_length)
        if any(label != IGNORE for label in item.labels):
            encoded.append((item.input_ids, item.labels))
    return encoded


def _row_length(spec: TrainSpec, *sets: Sequence[tuple[list[int], list[int]]]) -> int:
    longest = max((len(ids) for encoded in sets for ids, _ in encoded), default=1)
    return max(spec.row_length or spec.max_length, longest)


def _epoch_batches(
    spec: TrainSpec,
    encoded: Sequence[tuple[list[int], list[int]]],
    epoch: int,
    pad_id: int,
    width: int,
) -> list[Batch]:
    order = list(range(len(encoded)))
    random.Random(spec.seed * 7919 + epoch).shuffle(order)  # noqa: S311 - data order, not secrets
    shuffled = [encoded[i] for i in order]
    if spec.pack:
        rows = pack(shuffled, width)
    else:
        rows = [
            PackedRow(ids, [IGNORE, *labels[1:]], list(range(len(ids))), 1)
            for ids, labels in shuffled
        ]
    return batches(rows, spec.rows_per_batch, pad_id)


def _tensors(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor(batch.input_ids, device=device),
        "position_ids": torch.tensor(batch.position_ids, device=device),
        "labels": torch.tensor(batch.labels, device=device),
    }


def _lr_lambda(spec: TrainSpec, total: int) -> Callable[[int], float]:
    warmup = max(1, int(total * spec.warmup_ratio)) if spec.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if spec.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if spec.schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


#: ``model_type``s whose logits are exactly ``lm_head(hidden)`` (no soft-capping or scaling).
_PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _summed_loss(model: Any, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy summed over trained tokens, with logits computed only where trained.

    With a 49k vocabulary the output layer is about a fifth of the model's work, and only about
    a third of the positions carry a label; other architectures take the full forward pass.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = tensors["labels"][:, 1:]
    trained = targets != IGNORE
    inputs = {"input_ids": tensors["input_ids"], "position_ids": tensors["position_ids"]}
    if inner.config.model_type in _PLAIN_HEAD:
        hidden = inner.get_decoder()(**inputs, use_cache=False).last_hidden_state
        logits = inner.get_output_embeddings()(hidden[:, :-1][trained])
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1][trained]
    return torch.nn.functional.cross_entropy(logits.float(), targets[trained], reduction="sum")


def evaluate_loss(model: Any, data: Sequence[Batch], *, bf16: bool = False) -> float | None:
    """Mean cross-entropy per trained token over ``data`` (no gradients).

    ``bf16`` runs under bf16 autocast, for a model loaded in fp32.
    """
    if not data:
        return None
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.train(False)  # inference mode
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in data:
            if batch.trained_tokens:
                total += float(_summed_loss(model, _tensors(batch, device)))
                count += batch.trained_tokens
    model.train(was_training)
    return total / count if count else None


def _adapter_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state: dict[str, torch.Tensor] = get_peft_model_state_dict(model)
    return state


def _micro_batches(
    per_epoch: Callable[[int], list[Batch]], start_epoch: int, skip: int
) -> Iterator[tuple[int, int, Batch]]:
    epoch = start_epoch
    while True:
        for index, batch in enumerate(per_epoch(epoch)):
            if epoch == start_epoch and index < skip:
                continue
            yield epoch, index, batch
        epoch += 1


def train(
    spec: TrainSpec, report: Report | None = None, should_stop: Callable[[], bool] | None = None
) -> TrainResult:
    """Train, checkpointing as it goes; resumes from ``output_dir/checkpoints`` if present."""
    report = report or (lambda _event: None)
    should_stop = should_stop or (lambda: False)
    bf16 = _use_bf16(spec.precision) and not spec.qlora
    model, tokenizer = _load(spec, bf16)  # bf16 weights, so no autocast anywhere below
    device = next(model.parameters()).device
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    encoded = _encode_all(tokenizer, read_examples(spec.train_file), spec.max_length)
    if not encoded:
        raise InvalidRequest("no training example has an assistant turn left after truncation")
    val_encoded = []
    if spec.validation_file is not None:
        val_encoded = _encode_all(tokenizer, read_examples(spec.validation_file), spec.max_length)
    width = _row_length(spec, encoded, val_encoded)
    val_batches = batches(pack(val_encoded, width), spec.rows_per_batch, pad_id)
    cache: dict[int, list[Batch]] = {}

    def per_epoch(epoch: int) -> list[Batch]:
        if epoch not in cache:
            cache.clear()
            cache[epoch] = _epoch_batches(spec, encoded, epoch, pad_id, width)
        return cache[epoch]

    steps_per_epoch = math.ceil(len(per_epoch(0)) / spec.grad_accum)
    total_steps = spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(spec, total_steps))
    ckpt_root = spec.output_dir / "checkpoints"
    state = checkpoints.TrainState(0, 0, 0, 0, None, 0, [])
    resumed = checkpoints.latest(ckpt_root)
    if resumed is not None:
        from peft import set_peft_model_state_dict

        state = checkpoints.read_state(resumed)
        set_peft_model_state_dict(model, checkpoints.load_adapter(resumed))
        checkpoints.load_optimizer(resumed, optimizer, scheduler)
        report({"event": "resumed", "step": state.step})
    resumed_step = state.step
    model.train()
    started = time.monotonic()
    session_tokens = 0
    stream = _micro_batches(per_epoch, state.epoch, state.batch_in_epoch)
    losses: list[float] = []
    stopped_early = cancelled = paused = False
    while state.step < total_steps:
        if should_stop():
            cancelled = True
            break
        torch.manual_seed(spec.seed * 100_003 + state.step)  # dropout replays after a resume
        group = [next(stream) for _ in range(spec.grad_accum)]
        trained = sum(b.trained_tokens for _, _, b in group) or 1
        step_loss = 0.0
        for _epoch, _index, batch in group:
            loss = _summed_loss(model, _tensors(batch, device)) / trained
            loss.backward()  # type: ignore[no-untyped-call]
            step_loss += float(loss.detach())
            session_tokens += batch.real_tokens
            state.real_tokens += batch.real_tokens
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        epoch, index, _ = group[-1]
        state.step += 1
        state.epoch, state.batch_in_epoch = (epoch, index + 1)
        if state.batch_in_epoch >= len(per_epoch(epoch)):
            state.epoch, state.batch_in_epoch = epoch + 1, 0
        losses.append(step_loss)
        elapsed = time.monotonic() - started
        event: dict[str, Any] = {
            "step": state.step,
            "total_steps": total_steps,
            "epoch": round(state.step / steps_per_epoch, 3),
            "loss": round(step_loss, 4),
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": round(session_tokens / elapsed, 1) if elapsed else None,
            "eta_s": round(elapsed / (state.step - resumed_step) * (total_steps - state.step), 1),
        }
        if val_batches and (state.step % spec.eval_every == 0 or state.step == total_steps):
            val = evaluate_loss(model, val_batches)
            event["val_loss"] = round(val, 4) if val is not None else None
            if val is not None and (state.best_val_loss is None or val < state.best_val_loss):
                state.best_val_loss, state.evals_without_improvement = val, 0
            else:
                state.evals_without_improvement += 1
        state.history.append(event)
        report(event)
        patience = spec.early_stopping_patience
        if patience is not None and state.evals_without_improvement >= patience:
            stopped_early = True
        paused = spec.stop_at_step is not None and state.step >= spec.stop_at_step
        if (
            (state.step % spec.checkpoint_every == 0 or paused)
            and state.step < total_steps
            and not stopped_early
        ):
            checkpoints.save(
                ckpt_root / f"step-{state.step:06d}",
                adapter=_adapter_state(model),
                optimizer=optimizer,
                scheduler=scheduler,
                state=state,
            )
        if stopped_early or (paused and state.step < total_steps):
            break
        paused = False
    seconds = time.monotonic() - started
    adapter_dir = None
    val_loss = None
    if not cancelled and not paused:
        val_loss = evaluate_loss(model, val_batches)
        adapter_dir = _write_adapter(model, spec, state, val_loss)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=state.step,
        real_tokens=state.real_tokens,
        seconds=seconds,
        tokens_per_second=session_tokens / seconds if seconds else 0.0,
        train_loss=sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        val_loss=val_loss,
        stopped_early=stopped_early,
        cancelled=cancelled,
        resumed_from_step=resumed_step,
        history=state.history,
    )


def _write_adapter(
    model: Any, spec: TrainSpec, state: checkpoints.TrainState, val_loss: float | None
) -> Path:
    """Save the PEFT folder atomically and drop the checkpoints it supersedes."""
    final = spec.output_dir / "adapter"
    tmp = spec.output_dir / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    metrics = {
        "steps": state.step,
        "real_tokens": state.real_tokens,
        "val_loss": val_loss,
        "best_val_loss": state.best_val_loss,
    }
    (tmp / "training.json").write_text(
        json.dumps({"spec": _spec_json(spec), "metrics": metrics}, indent=2)
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if not spec.keep_checkpoints:
        shutil.rmtree(spec.output_dir / "checkpoints", ignore_errors=True)
    return final


def _spec_json(spec: TrainSpec) -> dict[str, Any]:
    data = asdict(spec)
    return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
