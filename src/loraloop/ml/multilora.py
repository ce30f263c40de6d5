"""Many LoRA adapters over one base model in one batch, as grouped low-rank products.

Weights are never merged. Every wrapped linear layer computes ``base(x)`` once for all tokens,
then adds each token's own adapter (S-LoRA, https://arxiv.org/abs/2311.03285; Punica,
https://arxiv.org/abs/2310.18547). The engine orders a step's tokens as::

    [ decode rows, one token per request, any adapters | prefill A A A A | prefill B B ]

The decode rows use the adapters of the step concatenated along the rank (``A_cat``,
``B_cat``, kept until the set of adapters changes) and a mask that keeps, for each row, only
its own adapter's ranks, scaled; base-only rows have an all-zero mask::

    out[:D] += ((x[:D] @ A_cat.T) * mask) @ B_cat.T        three ops, however many adapters

Each prefill segment (many tokens, one adapter) adds ``(x_seg @ A.T) @ B.T * scale``. A step
where no token has an adapter costs exactly the base layer.

Adapters load from a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``) into
an :class:`AdapterCache`, least recently used first out, bounded by bytes.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loraloop.errors import InvalidRequest
from loraloop.ml.safety import UnsafeWeights, check_model_folder, check_weights_file

__all__ = ["Adapter", "AdapterCache", "LoraPlan", "LoraWeights", "MultiLoraLinear", "wrap_linears"]

_WEIGHTS, _CONFIG = "adapter_model.safetensors", "adapter_config.json"
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")
#: LoraConfig fields that change what the adapter computes beyond ``B @ A * scale``.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "lora_bias": "a bias on lora_B (lora_bias)",
    "modules_to_save": "fully trained modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
    "layer_replication": "layer replication",
    "target_parameters": "target_parameters",
    "use_qalora": "QA-LoRA (use_qalora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "kasa_config": "KaSA (kasa_config)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
}


@dataclass(frozen=True)
class LoraWeights:
    """One adapted linear layer: ``delta = (x @ a_t) @ b_t * scale``."""

    a_t: torch.Tensor
    """``lora_A.T``: (in_features, rank)."""
    b_t: torch.Tensor
    """``lora_B.T``: (rank, out_features)."""
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a_t.shape[1])


@dataclass(eq=False)
class Adapter:
    """A loaded adapter: its weights per module name (``model.layers.0.self_attn.q_proj``)."""

    key: str
    modules: dict[str, LoraWeights]
    nbytes: int


def load_adapter(
    key: str,
    path: Path,
    shapes: dict[str, tuple[int, int]],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> Adapter:
    """Read and check a PEFT LoRA folder against the base's linear layers (``shapes``).

    ``shapes`` maps each wrapped module name to its (in_features, out_features). Every problem
    (unsupported options, unknown modules, wrong shapes) is collected into one error.
    """
    from safetensors.torch import load_file

    config = _config(path)
    tensors = load_file(path / _WEIGHTS, device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    problems = _config_problems(config)
    for name, tensor in tensors.items():
        match = _KEY.match(name)
        if match is None:
            problems.append(f"{name}: not a LoRA weight (only lora_A / lora_B are supported)")
            continue
        pairs.setdefault(match["module"], {})[match["side"]] = tensor
    modules: dict[str, LoraWeights] = {}
    for module, pair in sorted(pairs.items()):
        problem = _pair_problem(module, pair, shapes)
        if problem:
            problems.append(problem)
            continue
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]
        alpha = _alpha(config, module)
        scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
        modules[module] = LoraWeights(
            a_t=a.to(device=device, dtype=dtype).T.contiguous(),
            b_t=b.to(device=device, dtype=dtype).T.contiguous(),
            scale=float(scale),
        )
    if not modules and not problems:
        problems.append(f"{_WEIGHTS} holds no LoRA weights")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise InvalidRequest(
            f"cannot serve the adapter in {path.name}: " + "; ".join(shown),
            code="invalid_adapter",
            param="adapter",
        )
    nbytes = sum(w.a_t.nbytes + w.b_t.nbytes for w in modules.values())
    return Adapter(key=key, modules=modules, nbytes=nbytes)


def _config(path: Path) -> dict[str, Any]:
    try:
        check_model_folder(path)
        check_weights_file(path / _WEIGHTS)
    except UnsafeWeights as error:
        raise InvalidRequest(
            f"cannot serve the adapter in {path.name}: {error.message}",
            code="invalid_adapter",
            param="adapter",
        ) from error
    try:
        config = json.loads((path / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(
            f"cannot serve the adapter in {path.name}: {_CONFIG} is missing or not JSON",
            code="invalid_adapter",
            param="adapter",
        ) from error
    if not isinstance(config, dict):
        raise InvalidRequest(
            f"cannot serve the adapter in {path.name}: {_CONFIG} is not a JSON object",
            code="invalid_adapter",
            param="adapter",
        )
    return config


def _config_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config.get('bias')!r}: trained biases are not supported")
    for option, what in _UNSUPPORTED.items():
        if config.get(option):
            problems.append(f"{what} is not supported")
    alpha = config.get("lora_alpha", 8)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        problems.append(f"lora_alpha {alpha!r} must be a positive number")
    return problems


def _pair_problem(
    module: str, pair: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]]
) -> str | None:
    if module not in shapes:
        return f"{module}: no such linear layer in the base model's decoder (wrong base model?)"
    if set(pair) != {"A", "B"}:
        return f"{module}: lora_{'B' if 'A' in pair else 'A'} is missing"
    a, b = pair["A"], pair["B"]
    in_features, out_features = shapes[module]
    if not a.is_floating_point() or not b.is_floating_point():
        return f"{module}: LoRA weights must be floating point"
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
        return f"{module}: lora_A {list(a.shape)} and lora_B {list(b.shape)} do not pair up"
    if a.shape[1] != in_features or b.shape[0] != out_features:
        return (
            f"{module}: lora_A {list(a.shape)} / lora_B {list(b.shape)} do not fit the base "
            f"layer ({in_features} in, {out_features} out; wrong base model?)"
        )
    return None


def _alpha(config: dict[str, Any], module: str) -> float:
    """``lora_alpha``, or the ``alpha_pattern`` entry matching ``module`` as PEFT matches it."""
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(alpha)
    return float(config.get("lora_alpha", 8))


class AdapterCache:
    """Loaded adapters by key, least recently used dropped first beyond ``limit_bytes``.

    Requests hold on to their :class:`Adapter`, so dropping one from the cache never
    disturbs a request that is running with it. Thread-safe.
    """

    def __init__(self, limit_bytes: int, loader: Callable[[str, Path], Adapter]) -> None:
        self.limit_bytes = limit_bytes
        self._loader = loader
        self._items: OrderedDict[str, Adapter] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, path: Path) -> Adapter:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per key, however many requests ask at once
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            try:
                adapter = self._loader(key, path)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            self._insert(adapter, path)
            return adapter

    def _insert(self, adapter: Adapter, path: Path) -> None:
        if adapter.nbytes > self.limit_bytes:
            raise InvalidRequest(
                f"the adapter in {path.name} needs {adapter.nbytes:,} bytes, more than the whole "
                f"adapter cache ({self.limit_bytes:,} bytes); raise the cache size",
                code="adapter_too_large",
                param="adapter",
            )
        with self._lock:
            self._items[adapter.key] = adapter
            self._bytes += adapter.nbytes
            while self._bytes > self.limit_bytes:
                self._bytes -= self._items.popitem(last=False)[1].nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of the cached adapters' weights."""
        return self._bytes

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._items)


# --- the wrapped layers -----------------------------------------------------------------------


@dataclass
class _Concat:
    """The decode block's adapters for one module, concatenated along the rank."""

    a_t: torch.Tensor  # (in, R)
    b_t: torch.Tensor  # (R, out)
    layout: tuple[tuple[int, int, float], ...]  # (adapter index, rank, scale) per block
    owners: torch.Tensor  # (R,) the adapter index of each rank
    scales: torch.Tensor  # (R,) that adapter's scale


@dataclass
class LoraPlan:
    """Which tokens of the current step use which adapter (see the module docstring)."""

    decode_rows: int = 0
    decode_adapters: tuple[Adapter, ...] = ()
    """The distinct adapters of the decode rows, in a fixed order."""
    row_adapter: torch.Tensor | None = None
    """(decode_rows,) index into ``decode_adapters`` per row, -1 for the base model alone."""
    single: Adapter | None = None
    """Set when every decode row uses this one adapter (no mask needed)."""
    segments: list[tuple[int, int, Adapter]] = field(default_factory=list)
    """(start, end, adapter) of the prefill segments that have an adapter."""
    _concats: dict[str, _Concat | None] = field(default_factory=dict)
    _masks: dict[tuple[tuple[int, int, float], ...], torch.Tensor] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.decode_adapters and not self.segments

    def reuse(self, previous: LoraPlan) -> None:
        """Keep ``previous``'s concatenated weights when the decode adapters are the same."""
        if previous.decode_adapters == self.decode_adapters:
            self._concats = previous._concats

    def concat(self, name: str) -> _Concat | None:
        if name not in self._concats:
            self._concats[name] = _build_concat(name, self.decode_adapters)
        return self._concats[name]

    def mask(self, block: _Concat) -> torch.Tensor:
        """(decode_rows, R): each row's own adapter's scale over its ranks, 0 elsewhere."""
        mask = self._masks.get(block.layout)
        if mask is None:
            assert self.row_adapter is not None
            mask = (self.row_adapter[:, None] == block.owners[None, :]) * block.scales
            self._masks[block.layout] = mask
        return mask


def _build_concat(name: str, adapters: Sequence[Adapter]) -> _Concat | None:
    parts = [(i, a.modules[name]) for i, a in enumerate(adapters) if name in a.modules]
    if not parts:
        return None
    a_t = torch.cat([w.a_t for _, w in parts], dim=1)
    owners = [i for i, w in parts for _ in range(w.rank)]
    scales = [w.scale for _, w in parts for _ in range(w.rank)]
    return _Concat(
        a_t=a_t,
        b_t=torch.cat([w.b_t for _, w in parts], dim=0),
        layout=tuple((i, w.rank, w.scale) for i, w in parts),
        owners=torch.tensor(owners, device=a_t.device),
        scales=torch.tensor(scales, dtype=a_t.dtype, device=a_t.device),
    )


class _PlanHolder:
    """Shared by every wrapped layer of one model: the plan of the step being computed."""

    plan: LoraPlan | None = None


class MultiLoraLinear(torch.nn.Module):
    """A base ``nn.Linear`` plus, per token, that token's adapter (or none)."""

    def __init__(self, base: torch.nn.Linear, name: str, holder: _PlanHolder) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.in_features, self.out_features = base.in_features, base.out_features
        self.name = name
        self._holder = holder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        plan = self._holder.plan
        if plan is None or plan.empty:
            return out
        flat_x, flat = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
        rows = plan.decode_rows
        if rows < flat.shape[0]:  # prompt tokens follow: keep to the decode rows
            decode_x, decode = flat_x[:rows], flat[:rows]
        else:
            decode_x, decode = flat_x, flat
        if plan.single is not None:
            weights = plan.single.modules.get(self.name)
            if weights is not None:
                decode.addmm_(decode_x @ weights.a_t, weights.b_t, alpha=weights.scale)
        elif plan.decode_adapters:
            block = plan.concat(self.name)
            if block is not None:
                low = (decode_x @ block.a_t).mul_(plan.mask(block))
                decode.addmm_(low, block.b_t)
        for start, end, adapter in plan.segments:
            weights = adapter.modules.get(self.name)
            if weights is not None:
                part = flat_x[start:end] @ weights.a_t
                flat[start:end].addmm_(part, weights.b_t, alpha=weights.scale)
        return out

    def extra_repr(self) -> str:
        return f"{self.name}: in_features={self.in_features}, out_features={self.out_features}"


def wrap_linears(decoder_layers: Any, prefix: str) -> tuple[_PlanHolder, dict[str, Any]]:
    """Replace every ``nn.Linear`` inside ``decoder_layers`` with a :class:`MultiLoraLinear`.

    ``prefix`` is the layers' path in the model (``model.layers``), so names match PEFT's keys.
    Returns the shared plan holder and (in_features, out_features) per wrapped module name.
    """
    holder = _PlanHolder()
    shapes: dict[str, Any] = {}
    for index, layer in enumerate(decoder_layers):
        for name, module in list(layer.named_modules()):
            if isinstance(module, torch.nn.Linear) and name:
                full = f"{prefix}.{index}.{name}"
                parent_name, _, child = name.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, child, MultiLoraLinear(module, full, holder))
                shapes[full] = (module.in_features, module.out_features)
    return holder, shapes
