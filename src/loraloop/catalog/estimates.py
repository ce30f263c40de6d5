"""How long a training run will take on this machine, and what each preset means.

The estimate is processed tokens over a throughput, plus a fixed start-up::

    seconds ≈ startup(parameters) + tokens_per_epoch × epochs × padding ÷ tokens_per_s

``tokens_per_s`` is the median of this server's own finished runs on the same base model when
there are any; otherwise a rule of thumb: a LoRA step costs about 4 × parameters FLOPs per
token (forward 2N, backward through the frozen weights 2N; the small LoRA matrices are left
out), and this machine does a known share of its peak (per CPU core, or one GPU). It is an
estimate: the page says so and shows a range.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import base_models
from loraloop.catalog.adapters import PRESETS
from loraloop.config import Settings
from loraloop.datasets import service as datasets
from loraloop.db.tables import Adapter, AdapterVersion, BaseModel, User
from loraloop.errors import InvalidRequest
from loraloop.ml.lora import LoraSettings
from loraloop.ml.training import TrainSpec
from loraloop.storage import Storage

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "Estimate",
    "Machine",
    "estimate",
    "for_training",
    "measured_tokens_per_s",
    "preset_settings",
    "tokens_per_second",
]

#: FLOPs per processed token and parameter of a LoRA training step.
FLOPS_PER_TOKEN_AND_PARAMETER = 4.0
#: Sustained training FLOP/s: per CPU core (bf16/fp32 matmuls, small batches) and per GPU.
CPU_FLOPS_PER_CORE = 1.0e10
GPU_FLOPS = 3.0e13
#: Every linear layer with an adapter costs a little more than the attention projections only.
ALL_LINEAR_FACTOR = 1.15
#: Packed rows are not full: some padding is computed too.
PADDING_FACTOR = 1.1
#: Loading the base, tokenizing, validating and saving: seconds, plus seconds per parameter.
STARTUP_SECONDS = 10.0
STARTUP_SECONDS_PER_PARAMETER = 3e-8
#: How far off the estimate may be: (low, high) multipliers, measured vs rule of thumb.
MEASURED_RANGE = (0.75, 1.35)
RULE_RANGE = (0.5, 2.0)
#: Finished runs looked at for a measured throughput (the most recent first).
MEASURED_RUNS = 20
DEFAULT_MAX_LENGTH = TrainSpec.__dataclass_fields__["max_length"].default

_DEFAULTS: dict[str, Any] = {
    "epochs": TrainSpec.__dataclass_fields__["epochs"].default,
    "learning_rate": TrainSpec.__dataclass_fields__["learning_rate"].default,
    "max_length": DEFAULT_MAX_LENGTH,
    "early_stopping_patience": None,
}
_LORA_DEFAULTS = LoraSettings()


@dataclass(frozen=True)
class Machine:
    """What trains here: CPU cores, and whether a CUDA GPU is there."""

    cpus: int
    gpu: bool

    @staticmethod
    def detect() -> Machine:
        """This machine (looked at once)."""
        return _this_machine()


@cache
def _this_machine() -> Machine:
    import torch

    return Machine(cpus=len(os.sched_getaffinity(0)) or 1, gpu=bool(torch.cuda.is_available()))


@dataclass(frozen=True)
class Estimate:
    """Seconds a run is expected to take, with a range; ``runs`` measured runs back it (0: the
    rule of thumb)."""

    seconds: float
    low: float
    high: float
    tokens: int
    tokens_per_s: float
    runs: int


def preset_settings(preset: str) -> dict[str, Any]:
    """Everything a preset sets, defaults filled in: epochs, learning_rate, max_length,
    early_stopping_patience, rank, alpha, dropout, targets."""
    if preset not in PRESETS:
        raise InvalidRequest(
            f"preset {preset!r} must be one of {', '.join(PRESETS)}", param="preset"
        )
    chosen = PRESETS[preset]
    lora = {
        "rank": _LORA_DEFAULTS.rank,
        "alpha": _LORA_DEFAULTS.alpha,
        "dropout": _LORA_DEFAULTS.dropout,
        "targets": _LORA_DEFAULTS.targets,
        **chosen.get("lora", {}),
    }
    plain = {key: value for key, value in chosen.items() if key != "lora"}
    return {**_DEFAULTS, **plain, **lora}


def tokens_per_second(parameters: int, machine: Machine, *, targets: str = "attention") -> float:
    """The rule of thumb's training throughput for a model of ``parameters`` on ``machine``."""
    flops = GPU_FLOPS if machine.gpu else CPU_FLOPS_PER_CORE * max(1, machine.cpus)
    per_token = FLOPS_PER_TOKEN_AND_PARAMETER * max(1, parameters)
    if targets == "all-linear":
        per_token *= ALL_LINEAR_FACTOR
    return flops / per_token


def estimate(
    tokens: int,
    epochs: float,
    parameters: int,
    machine: Machine,
    *,
    targets: str = "attention",
    measured: list[float] | None = None,
) -> Estimate:
    """The time to train ``epochs`` passes over ``tokens`` tokens; ``measured`` holds the
    tokens/s of earlier runs of the same base model here (used instead of the rule)."""
    if tokens < 0 or epochs <= 0:
        raise ValueError(f"tokens must be >= 0 and epochs > 0, got {tokens} and {epochs}")
    runs = [value for value in measured or [] if value > 0]
    speed = (
        statistics.median(runs) if runs else tokens_per_second(parameters, machine, targets=targets)
    )
    low, high = MEASURED_RANGE if runs else RULE_RANGE
    work = tokens * epochs * PADDING_FACTOR / speed
    startup = STARTUP_SECONDS + STARTUP_SECONDS_PER_PARAMETER * parameters
    seconds = startup + work
    return Estimate(
        seconds=round(seconds, 1),
        low=round(startup + work * low, 1),
        high=round(startup + work * high, 1),
        tokens=tokens,
        tokens_per_s=round(speed, 1),
        runs=len(runs),
    )


def measured_tokens_per_s(session: Session, base_model_id: int) -> list[float]:
    """Tokens/s of the latest finished runs on this server that trained ``base_model_id``."""
    query = (
        select(AdapterVersion.metrics)
        .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
        .where(Adapter.base_model_id == base_model_id, AdapterVersion.job_id.is_not(None))
        .order_by(AdapterVersion.id.desc())
        .limit(MEASURED_RUNS)
    )
    found = []
    for metrics in session.scalars(query):
        value = (metrics or {}).get("tokens_per_second")
        if isinstance(value, int | float) and value > 0:
            found.append(float(value))
    return found


#: (train file, base model, its sha256, max_length) -> processed tokens per epoch. Versions
#: never change, so a count stays right; the newest few are kept.
_TOKENS: OrderedDict[tuple[str, int, str, int], int] = OrderedDict()
_TOKENS_KEPT = 64
_TOKENS_LOCK = threading.Lock()  # requests run in a thread pool


def _tokens_per_epoch(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner: User,
    base: BaseModel,
    dataset_id: int,
    version: int,
    max_length: int,
) -> int:
    found = datasets.get_version_own(session, owner, dataset_id, version)
    key = (found.train_sha256, base.id, base.sha256, max_length)
    with _TOKENS_LOCK:
        if key in _TOKENS:
            _TOKENS.move_to_end(key)
            return _TOKENS[key]
    stats = datasets.version_stats(
        session, settings, storage, owner, dataset_id, version, base=base.id, max_length=max_length
    )
    # lengths are before truncation; a longer example is cut to max_length
    tokens = min(stats.total_tokens, stats.count * max_length)
    with _TOKENS_LOCK:
        _TOKENS[key] = tokens
        while len(_TOKENS) > _TOKENS_KEPT:
            _TOKENS.popitem(last=False)
    return tokens


def for_training(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner: User,
    *,
    base_model_id: int,
    dataset_id: int,
    dataset_version: int,
    preset: str,
    epochs: float | None = None,
    max_length: int | None = None,
    targets: str | None = None,
    machine: Machine | None = None,
) -> Estimate:
    """The estimate for training ``base_model_id`` on a version of one of the owner's datasets
    with ``preset``, where ``epochs``, ``max_length`` and ``targets`` override it."""
    chosen = preset_settings(preset)
    epochs = epochs if epochs is not None else float(chosen["epochs"])
    max_length = max_length if max_length is not None else int(chosen["max_length"])
    targets = targets if targets is not None else str(chosen["targets"])
    problems = []
    if not 0 < epochs <= 100:
        problems.append(f"epochs {epochs} must be more than 0 and at most 100")
    if not 16 <= max_length <= 32768:
        problems.append(f"max_length {max_length} must be a whole number from 16 to 32768")
    if targets not in ("attention", "all-linear"):
        problems.append(f"targets {targets!r} must be attention or all-linear")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_estimate")
    base = base_models.get(session, base_model_id)
    tokens = _tokens_per_epoch(
        session, settings, storage, owner, base, dataset_id, dataset_version, max_length
    )
    return estimate(
        tokens,
        epochs,
        base.parameters,
        machine or Machine.detect(),
        targets=targets,
        measured=measured_tokens_per_s(session, base.id),
    )
