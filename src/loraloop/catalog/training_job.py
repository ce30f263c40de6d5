"""The ``train`` job: runs in the worker's child process with plain paths, no database.

``validate`` runs on the server when the job is queued (so a bad spec is a 400 at once);
``run`` trains with ``ml.training`` and writes the model card next to the PEFT files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest
from loraloop.ml.lora import LoraSettings
from loraloop.ml.training import TrainResult, TrainSpec, train
from loraloop.storage import sha256_file

__all__ = ["run", "spec_from_payload", "validate"]

_PATHS = ("base_path", "train_file", "output_dir")


def spec_from_payload(payload: dict[str, Any]) -> TrainSpec:
    missing = [k for k in (*_PATHS, "spec") if k not in payload]
    if missing:
        raise InvalidRequest(f"train job payload lacks {', '.join(missing)}", param="payload")
    options = dict(payload["spec"])
    lora = LoraSettings(**options.pop("lora", {}))
    validation = payload.get("validation_file")
    return TrainSpec(
        base_path=Path(payload["base_path"]),
        train_file=Path(payload["train_file"]),
        output_dir=Path(payload["output_dir"]),
        validation_file=Path(validation) if validation else None,
        lora=lora,
        **options,
    )


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        spec_from_payload(payload)
    except TypeError as exc:  # an unknown option
        raise InvalidRequest(f"unknown training option: {exc}", param="spec") from exc
    return payload


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    report({"event": "started", "pid": os.getpid()})
    if payload.get("base_default"):
        from loraloop.ml.models import ensure_default_base

        report({"event": "preparing_base", "message": "converting the default base model (once)"})
        ensure_default_base(Path(payload["models_dir"]))
    spec = spec_from_payload(payload)
    result = train(spec, report)
    if result.adapter_dir is None:
        raise RuntimeError("training stopped before it finished")
    metrics = _metrics(result)
    _write_card(result.adapter_dir, payload, metrics)
    return {
        "adapter_dir": str(result.adapter_dir),
        "sha256": sha256_file(result.adapter_dir / "adapter_model.safetensors"),
        "metrics": metrics,
    }


def _metrics(result: TrainResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "real_tokens": result.real_tokens,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "seconds": round(result.seconds, 1),
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from_step,
    }


def _write_card(folder: Path, payload: dict[str, Any], metrics: dict[str, Any]) -> None:
    dataset = payload.get("dataset", {})
    lines = [
        "---",
        f"base_model: {payload.get('base_name', 'unknown')}",
        "library_name: peft",
        f"license: {payload.get('licence', 'apache-2.0')}",
        "tags: [lora, loraloop]",
        "---",
        "",
        f"# {payload.get('adapter_name', 'adapter')}",
        "",
        f"A LoRA adapter for `{payload.get('base_name')}` trained with loraloop.",
        "",
        "## Training data",
        "",
        f"- dataset: {dataset.get('name')} version {dataset.get('version')}",
        f"- content hash (sha256): `{dataset.get('content_hash')}`",
        f"- training examples: {dataset.get('train_examples')}, "
        f"validation examples: {dataset.get('validation_examples')}",
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(payload["spec"], indent=2, ensure_ascii=False),
        "```",
        "",
        "## Metrics",
        "",
        *(f"- {key}: {value}" for key, value in metrics.items()),
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "base = AutoModelForCausalLM.from_pretrained('<base model folder>')",
        "model = PeftModel.from_pretrained(base, '<this folder>')",
        "```",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
