"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder ``step-000050/`` holds the adapter weights, the optimizer moments and a
``state.json`` written last; a folder without ``state.json`` is an interrupted save and is
ignored (and removed) on resume. Folders are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["TrainState", "latest", "load_optimizer", "save"]

_STATE = "state.json"


@dataclass
class TrainState:
    step: int
    epoch: int
    batch_in_epoch: int
    real_tokens: int
    best_val_loss: float | None
    evals_without_improvement: int
    history: list[dict[str, Any]]


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                number = value.item() if isinstance(value, torch.Tensor) else value
                scalars["state"].setdefault(str(index), {})[name] = number
    return tensors, scalars


def save(
    folder: Path,
    *,
    adapter: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
) -> Path:
    """Write ``folder`` atomically (temporary name, then rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in adapter.items()}, tmp / "adapter.safetensors"
    )
    tensors, scalars = _optimizer_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(scalars))
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    (tmp / _STATE).write_text(json.dumps(asdict(state)))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``; incomplete ones are removed."""
    if not root.is_dir():
        return None
    complete = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and (folder / _STATE).is_file() and not folder.name.endswith(".tmp"):
            complete.append(folder)
        elif folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return complete[-1] if complete else None


def read_state(folder: Path) -> TrainState:
    return TrainState(**json.loads((folder / _STATE).read_text()))


def load_adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter.safetensors")


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    tensors = load_file(folder / "optimizer.safetensors")
    scalars = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, slots in scalars["state"].items():
        for name, value in slots.items():
            state.setdefault(int(index), {})[name] = torch.tensor(float(value))
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
