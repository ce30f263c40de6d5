"""The ``verify_train`` job: check a provider's uploaded adapter before anything trusts it.
Runs on a trusted worker's child process with plain paths, no database.

- **Hidden evaluation.** The answer loss of the held-out validation conversations (which the
  provider never received) with the adapter, against the base model alone. Honest training
  lowers it; a forged adapter (random weights, or an untrained one) does not. The adapter
  passes when it lowers the loss by at least ``min_gain`` (relative) and its loss is finite.
- **Replay.** One segment of the run, drawn by the server after the upload (from the start or
  a checkpoint to the next checkpoint or the end), is trained again here from the provider's
  own checkpoint with the same spec and data; the weights must land within ``tolerance``
  (relative distance) of the provider's next checkpoint or final adapter. Faking a run means
  faking every segment consistently, which costs as much as doing the work.
- **Measured work.** The tokens the training set holds for this spec (each conversation
  truncated to ``max_length``, times the epochs), counted with the base's tokenizer, and the
  base model's parameter count: compute credit is paid on these, never on claimed time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest

__all__ = ["run", "validate"]

_NEEDS = ("base_path", "adapter_dir", "validation_file", "train_file", "spec")


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _NEEDS if k not in payload]
    if missing:
        raise InvalidRequest(f"verify_train payload lacks {', '.join(missing)}", param="payload")
    return payload


def _conversations(path: Path) -> list[list[dict[str, str]]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["messages"] for line in handle if line.strip()]


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from peft import PeftModel

    from loraloop.ml import evaluation
    from loraloop.ml.chat import encode
    from loraloop.ml.models import ensure_default_base, load
    from loraloop.ml.safety import check_weights_file

    report({"event": "started", "pid": os.getpid()})
    if payload.get("base_default"):
        ensure_default_base(Path(payload["models_dir"]))
    spec = payload["spec"]
    max_length = int(spec.get("max_length", 1024))
    held_out = _conversations(Path(payload["validation_file"]))
    base, tokenizer = load(Path(payload["base_path"]))
    params = sum(p.numel() for p in base.parameters())
    base_losses = evaluation.answer_losses(base, tokenizer, held_out, max_length=max_length)
    report({"event": "progress", "step": "base"})
    folder = Path(payload["adapter_dir"])
    try:
        check_weights_file(folder / "adapter_model.safetensors")
        model = PeftModel.from_pretrained(base, folder)
    except Exception as exc:  # a malformed upload is a failed verification, not a crash
        return _verdict(False, f"the adapter does not load: {exc}", math.nan, math.nan, 0, params)
    adapter_losses = evaluation.answer_losses(model, tokenizer, held_out, max_length=max_length)
    base_loss, adapter_loss = _mean(base_losses), _mean(adapter_losses)
    tokens = sum(
        len(encode(tokenizer, m, max_length=max_length).input_ids)
        for m in _conversations(Path(payload["train_file"]))
    )
    epochs = float(spec.get("epochs", 1.0))
    measured = int(tokens * (epochs if not spec.get("max_steps") else 1.0))
    min_gain = float(payload.get("min_gain", 0.01))
    gain = (base_loss - adapter_loss) / base_loss if base_loss > 0 else 0.0
    if not math.isfinite(adapter_loss):
        return _verdict(
            False, "the adapter's loss is not finite", base_loss, adapter_loss, measured, params
        )
    if gain < min_gain:
        return _verdict(
            False,
            f"on held-out data the adapter's loss is {adapter_loss:.4f} against the base's "
            f"{base_loss:.4f} (gain {gain:+.1%}, at least {min_gain:+.1%} expected of real "
            "training)",
            base_loss,
            adapter_loss,
            measured,
            params,
        )
    del model, base
    replay = payload.get("replay")
    checked = _replay(payload, replay, report) if replay else None
    if checked is not None and not checked["passed"]:
        failed = _verdict(
            False,
            f"replaying steps {checked['from']}→{checked['to'] or 'end'} does not reproduce the "
            f"uploaded weights ({_distance(checked)}; at most {checked['tolerance']:.0%} "
            "allowed): the run is not what it claims",
            base_loss,
            adapter_loss,
            measured,
            params,
        )
        return {**failed, "replay": checked}
    replayed = (
        f"; replayed steps {checked['from']}→{checked['to'] or 'end'} ({_distance(checked)})"
        if checked
        else ""
    )
    passed = _verdict(
        True,
        f"held-out loss {adapter_loss:.4f} against the base's {base_loss:.4f} ({gain:+.1%})"
        + replayed,
        base_loss,
        adapter_loss,
        measured,
        params,
    )
    return {**passed, "replay": checked}


def _replay(
    payload: dict[str, Any], replay: dict[str, Any], report: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Train the drawn segment again; its distance to the provider's weights."""
    import shutil
    import tempfile

    import torch
    from safetensors.torch import load_file

    from loraloop.catalog.training_job import spec_from_payload
    from loraloop.ml.training import train

    start, end = int(replay["from"]), replay.get("to")
    trail = Path(replay["checkpoints"])
    claimed_path = (
        trail / f"step-{int(end):06d}" / "adapter.safetensors"
        if end is not None
        else Path(payload["adapter_dir"]) / "adapter_model.safetensors"
    )
    failed: dict[str, Any] = {
        "from": start,
        "to": end,
        "tolerance": float(replay["tolerance"]),
        "distance": None,
        "passed": False,
    }
    work = Path(tempfile.mkdtemp(prefix="loraloop-replay-"))
    try:
        if start:
            shutil.copytree(trail / f"step-{start:06d}", work / "checkpoints" / f"step-{start:06d}")
        spec = spec_from_payload(
            {
                "base_path": payload["base_path"],
                "train_file": payload["train_file"],
                "output_dir": str(work),
                "spec": {**payload["spec"], "stop_at_step": end},
            }
        )
        report({"event": "replaying", "from": start, "to": end})
        train(spec, report)
        replayed_path = (
            work / "checkpoints" / f"step-{int(end):06d}" / "adapter.safetensors"
            if end is not None
            else work / "adapter" / "adapter_model.safetensors"
        )
        replayed, claimed = load_file(replayed_path), load_file(claimed_path)
    except (OSError, ValueError) as exc:
        return {**failed, "problem": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if set(replayed) != set(claimed):
        return {**failed, "problem": "the uploaded weights hold other tensors than the run makes"}
    gap = sum(float(torch.sum((replayed[k].float() - claimed[k].float()) ** 2)) for k in claimed)
    size = sum(float(torch.sum(claimed[k].float() ** 2)) for k in claimed)
    if not size:
        return {**failed, "problem": "the uploaded weights are all zero"}
    distance = math.sqrt(gap) / math.sqrt(size)
    return {
        **failed,
        "distance": round(distance, 8),
        "passed": distance <= float(replay["tolerance"]),
    }


def _distance(checked: dict[str, Any]) -> str:
    if checked["distance"] is None:
        return str(checked.get("problem", "no comparable weights"))
    return f"{checked['distance']:.2%} away"


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _verdict(
    passed: bool, reason: str, base_loss: float, adapter_loss: float, tokens: int, params: int
) -> dict[str, Any]:
    def finite(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "passed": passed,
        "reason": reason,
        "base_loss": finite(base_loss),
        "adapter_loss": finite(adapter_loss),
        "tokens": tokens,
        "params": params,
    }
