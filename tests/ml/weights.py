"""Reading what an export wrote: a merged model's tensors and a file's sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open


def safetensors_weights(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(folder / "model.safetensors", framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
