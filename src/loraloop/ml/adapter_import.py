"""Checking a PEFT LoRA adapter made elsewhere against the base model it claims to fit.

    (adapter_archive.unpack) ──▶ folder/ adapter_config.json + adapter_model.safetensors
                                    │
    base model folder ──base_shapes──▶ {name: shape} ──inspect_adapter──▶ AdapterReport

Every check collects all of its problems instead of stopping at the first, so the person
uploading can fix everything in one go. Nothing here unpickles: only safetensors headers
and tensors are read, and pickle files are refused by name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from loraloop.ml.safety import PICKLE_SUFFIXES, UnsafeWeights, read_safetensors_header

__all__ = ["AdapterRejected", "AdapterReport", "base_shapes", "inspect_adapter"]

_CONFIG, _WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_ALLOWED_FILES = frozenset({_CONFIG, _WEIGHTS, "README.md", ".gitattributes"})
_MAX_CONFIG_BYTES = 1024**2
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
#: LoraConfig options that change what the adapter computes beyond ``B @ A * scale``; the
#: engine (``multilora``) cannot serve them, so they are refused at the door rather than later.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "lora_bias": "a bias on lora_B (lora_bias)",
    "modules_to_save": "fully trained modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
    "layer_replication": "layer replication (layer_replication)",
    "target_parameters": "LoRA on raw parameters (target_parameters)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "kasa_config": "KaSA (kasa_config)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
}
#: Initialisations that also rewrite the base weights: the adapter is only right on that
#: modified base, which loraloop does not have.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


class AdapterRejected(UnsafeWeights):
    """An adapter archive or folder that loraloop will not accept; ``problems`` lists why."""

    default_code = "invalid_adapter"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.message = "refused the adapter: " + "; ".join(problems)
        self.args = (self.message,)


@dataclass
class AdapterReport:
    """What :func:`inspect_adapter` found; the adapter is acceptable only when ``ok``."""

    problems: list[str] = field(default_factory=list)
    """Every problem found, each naming the file, option or tensor at fault."""
    rank: int | None = None
    """``r`` from adapter_config.json (None when it is missing or invalid)."""
    alpha: float | None = None
    """``lora_alpha`` from adapter_config.json (None when it is missing or invalid)."""
    targets: tuple[str, ...] = ()
    """Names of the base layers the tensors adapt (``q_proj``, ``v_proj``...), sorted."""
    tensor_count: int = 0
    """Tensors in adapter_model.safetensors."""
    parameters: int = 0
    """Values in all those tensors together."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`AdapterRejected` with every problem, if there are any."""
        if self.problems:
            raise AdapterRejected(self.problems)


# -- base model shapes -----------------------------------------------------------------------


def base_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every weight's shape in a base model folder, read from safetensors headers only.

    Follows ``model.safetensors.index.json`` when the weights are sharded. Raises
    :class:`~loraloop.ml.safety.UnsafeWeights` listing every unreadable file.
    """
    problems: list[str] = []
    index = model_dir / "model.safetensors.index.json"
    weight_map = _weight_map(index, problems) if index.is_file() else {}
    if index.is_file():
        files = sorted({model_dir / shard for shard in weight_map.values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            problems.append(f"{model_dir}: no .safetensors weights")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            header = read_safetensors_header(file)
        except UnsafeWeights as error:
            problems.extend(error.problems)
            continue
        for key, entry in header.items():
            if key != "__metadata__":
                shapes[key] = tuple(entry["shape"])
    problems += [
        f"{index.name}: {key} is not in {shard}"
        for key, shard in weight_map.items()
        if key not in shapes and (model_dir / shard) in files
    ]
    if problems:
        raise UnsafeWeights(problems)
    return shapes


def _weight_map(index: Path, problems: list[str]) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        problems.append(f"{index.name}: not JSON with a weight_map")
        return {}
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        problems.append(f"{index.name}: weight_map must map tensor names to shard files")
        return {}
    bad = set()
    for shard in sorted(set(weight_map.values())):  # one message per shard, not per tensor
        if not re.fullmatch(r"[\w.-]+\.safetensors", shard):
            problems.append(f"{index.name}: {shard!r} is not a .safetensors file in the folder")
            bad.add(shard)
        elif not (index.parent / shard).is_file():
            problems.append(f"{index.name}: {shard} is missing")
            bad.add(shard)
    good: dict[str, str] = {k: v for k, v in weight_map.items() if v not in bad}
    return good


# -- the adapter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Base:
    """The base model as far as LoRA is concerned, derived from its weight shapes."""

    linears: dict[str, tuple[int, int]]
    """Adaptable layers inside the numbered decoder blocks: module path -> (out, in)."""
    outside: frozenset[str]
    """2-D weights' modules outside the blocks (embeddings, lm_head): real, but not served."""
    modules: frozenset[str]
    """Every module path of the base, ancestors included."""

    @classmethod
    def of(cls, shapes: dict[str, tuple[int, ...]]) -> _Base:
        linears: dict[str, tuple[int, int]] = {}
        outside: set[str] = set()
        modules: set[str] = set()
        for key, shape in shapes.items():
            parts = key.split(".")[:-1]
            modules.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
            if not key.endswith(".weight") or len(shape) != 2:
                continue
            if any(part.isdigit() for part in parts):
                linears[".".join(parts)] = (shape[0], shape[1])
            else:
                outside.add(".".join(parts))
        return cls(linears, frozenset(outside), frozenset(modules))

    def has_module(self, name: str) -> bool:
        return any(m == name or m.endswith("." + name) for m in self.modules)

    def leaves(self) -> list[str]:
        return sorted({path.rsplit(".", 1)[-1] for path in self.linears})


@dataclass(frozen=True)
class _Settings:
    """The parts of adapter_config.json the tensors are checked against (None: unusable)."""

    rank: int | None = None
    alpha: float | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    targets: list[str] | str | None = None

    def rank_for(self, module: str) -> int | None:
        """``r``, or the ``rank_pattern`` entry matching ``module`` as PEFT matches it."""
        for pattern, rank in self.rank_pattern.items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                return rank
        return self.rank

    def targets_module(self, module: str) -> bool:
        """Whether ``target_modules`` selects ``module``, by PEFT's rules."""
        if isinstance(self.targets, str):
            return self.targets == "all-linear" or re.fullmatch(self.targets, module) is not None
        return any(module == t or module.endswith("." + t) for t in self.targets or ())


def inspect_adapter(
    folder: Path, shapes: dict[str, tuple[int, ...]], *, max_rank: int = 256
) -> AdapterReport:
    """Check the PEFT LoRA adapter in ``folder`` against a base model's weight ``shapes``
    (from :func:`base_shapes`) and report every problem; never raises for a bad adapter.

    The base's config is not needed: its weight shapes say which layers exist and their sizes.
    """
    report = AdapterReport()
    if not folder.is_dir():
        report.problems.append(f"{folder}: not a folder")
        return report
    base = _Base.of(shapes)
    report.problems += _file_problems(folder)
    config = _read_config(folder, report.problems)
    settings = (
        _config_settings(config, base, max_rank, report.problems)
        if config is not None
        else _Settings()
    )
    report.rank, report.alpha = settings.rank, settings.alpha
    _check_tensors(folder, base, settings, report)
    return report


def _file_problems(folder: Path) -> list[str]:
    problems = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            problems.append(f"{name}: is a symbolic link; an adapter holds plain files only")
        elif path.is_dir():
            continue
        elif path.suffix.lower() in PICKLE_SUFFIXES:
            problems.append(f"{name}: pickle files are never loaded; remove it")
        elif name not in _ALLOWED_FILES:
            problems.append(
                f"{name}: unexpected file; an adapter holds {_CONFIG} and {_WEIGHTS} "
                "(and optionally README.md, .gitattributes)"
            )
    problems += [f"{name} is missing" for name in (_CONFIG, _WEIGHTS) if not _plain(folder / name)]
    return problems


def _plain(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _read_config(folder: Path, problems: list[str]) -> dict[str, Any] | None:
    path = folder / _CONFIG
    if not _plain(path):
        return None
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        problems.append(f"{_CONFIG}: {path.stat().st_size} bytes is far too large for a config")
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{_CONFIG}: not valid JSON ({error})")
        return None
    if not isinstance(config, dict):
        problems.append(f"{_CONFIG}: must be a JSON object, not {type(config).__name__}")
        return None
    return config


def _config_settings(
    config: dict[str, Any], base: _Base, max_rank: int, problems: list[str]
) -> _Settings:
    if config.get("peft_type") != "LORA":
        problems.append(f"{_CONFIG}: peft_type {config.get('peft_type')!r} must be 'LORA'")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        problems.append(f"{_CONFIG}: task_type {config['task_type']!r} must be 'CAUSAL_LM'")
    rank = _rank(config.get("r"), "r", max_rank, problems)
    alpha = config.get("lora_alpha")
    if not _positive(alpha):
        problems.append(f"{_CONFIG}: lora_alpha {alpha!r} must be a positive number")
    rank_pattern = _patterns(config, "rank_pattern", max_rank, problems)
    _patterns(config, "alpha_pattern", None, problems)
    targets = _targets(config.get("target_modules"), base, problems)
    problems += _option_problems(config, base)
    return _Settings(
        rank=rank,
        alpha=float(alpha) if _positive(alpha) else None,
        rank_pattern=rank_pattern,
        targets=targets,
    )


def _positive(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _rank(value: object, name: str, max_rank: int, problems: list[str]) -> int | None:
    """A usable rank (kept when over ``max_rank``, so the tensors are still compared with it)."""
    problem = f"{_CONFIG}: {name} {value!r} must be a whole number from 1 to {max_rank}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        if value > max_rank:
            problems.append(problem)
        return value
    problems.append(problem)
    return None


def _patterns(
    config: dict[str, Any], option: str, max_rank: int | None, problems: list[str]
) -> dict[str, int]:
    """``rank_pattern`` (checked as ranks) or ``alpha_pattern`` (positive numbers)."""
    patterns = config.get(option) or {}
    if not isinstance(patterns, dict):
        problems.append(f"{_CONFIG}: {option} must map module patterns to numbers")
        return {}
    good: dict[str, int] = {}
    for pattern, value in patterns.items():
        try:
            re.compile(pattern)
        except re.error as error:
            problems.append(f"{_CONFIG}: {option} pattern {pattern!r} is not a regex ({error})")
            continue
        if max_rank is None:
            if not _positive(value):
                problems.append(f"{_CONFIG}: {option}[{pattern!r}] {value!r} must be positive")
        elif (rank := _rank(value, f"{option}[{pattern!r}]", max_rank, problems)) is not None:
            good[pattern] = rank
    return good


def _targets(value: object, base: _Base, problems: list[str]) -> list[str] | str | None:
    if isinstance(value, str):
        if value == "all-linear":
            return value
        try:
            if any(re.fullmatch(value, module) for module in base.linears):
                return value
        except re.error as error:
            problems.append(f"{_CONFIG}: target_modules {value!r} is not a regex ({error})")
            return None
        problems.append(
            f"{_CONFIG}: target_modules {value!r} matches no linear layer of the base's decoder"
        )
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        problems.append(f"{_CONFIG}: target_modules {value!r} must be a non-empty list of names")
        return None
    found = []
    for target in value:
        if any(m == target or m.endswith("." + target) for m in base.linears):
            found.append(target)
        elif any(m == target or m.endswith("." + target) for m in base.outside):
            problems.append(
                f"{_CONFIG}: target_modules names {target!r}, which lies outside the decoder "
                "layers; loraloop serves LoRA on the decoder's linear layers only"
            )
        else:
            problems.append(
                f"{_CONFIG}: target_modules names {target!r}, which is not a linear layer of the "
                f"base model (it has: {', '.join(base.leaves()) or 'none'}; wrong base model?)"
            )
    return found or None


def _option_problems(config: dict[str, Any], base: _Base) -> list[str]:
    """Options the engine cannot honour. ``modules_to_save`` is refused whatever it names
    (a full copy of a module is not a low-rank update); names the base lacks are pointed out."""
    problems = []
    if config.get("bias", "none") != "none":
        problems.append(f"{_CONFIG}: bias {config['bias']!r} is not supported (trained biases)")
    for option, what in _UNSUPPORTED.items():
        value = config.get(option)
        if not value:
            continue
        problem = f"{_CONFIG}: {what} is not supported; loraloop serves plain low-rank updates"
        if option == "modules_to_save":
            names = value if isinstance(value, list) else [value]
            missing = [repr(n) for n in names if not base.has_module(str(n))]
            if missing:
                problem += f" (and the base has no module {', '.join(missing)})"
        problems.append(problem)
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(
            f"{_CONFIG}: init_lora_weights {init!r} also rewrites the base weights; save it as a "
            "plain LoRA first (PEFT: path_initial_model_for_weight_conversion)"
        )
    return problems


def _check_tensors(folder: Path, base: _Base, settings: _Settings, report: AdapterReport) -> None:
    path, problems = folder / _WEIGHTS, report.problems
    if not _plain(path):
        return
    try:
        header = read_safetensors_header(path)
    except UnsafeWeights as error:
        problems.extend(error.problems)
        return
    entries = {key: entry for key, entry in header.items() if key != "__metadata__"}
    report.tensor_count = len(entries)
    report.parameters = sum(math.prod(entry["shape"]) for entry in entries.values())
    if not entries:
        problems.append(f"{_WEIGHTS}: holds no tensors")
        return
    pairs: dict[str, dict[str, str]] = {}  # module -> "A"/"B" -> key
    for key in sorted(entries):
        match = _KEY.match(key)
        if match is None:
            problems.append(_key_problem(key))
        else:
            pairs.setdefault(match["module"], {})[match["side"]] = key
    wrong_rank: dict[tuple[int, int], list[str]] = {}
    for module, pair in sorted(pairs.items()):
        problems += _pair_problems(module, pair, entries, base, settings, wrong_rank)
    for (configured, found), keys in sorted(wrong_rank.items()):
        problems.append(
            f"{_CONFIG} says r={configured} but {len(keys)} LoRA pairs have rank {found}: "
            + _few(keys)
        )
    problems += _coverage_problems(pairs, base, settings)
    report.targets = tuple(sorted({m.rsplit(".", 1)[-1] for m in pairs if m in base.linears}))
    problems += _value_problems(
        path, [k for k, e in entries.items() if e["dtype"] in _FLOAT_DTYPES]
    )


def _key_problem(key: str) -> str:
    if ".lora_embedding_" in key:
        return f"{key}: LoRA on embeddings is not supported (decoder linear layers only)"
    if ".lora_magnitude_vector" in key:
        return f"{key}: DoRA magnitude vectors are not supported"
    return (
        f"{key}: not a PEFT LoRA weight name "
        "(expected base_model.model.<module>.lora_A.weight or .lora_B.weight)"
    )


def _pair_problems(
    module: str,
    pair: dict[str, str],
    entries: dict[str, Any],
    base: _Base,
    settings: _Settings,
    wrong_rank: dict[tuple[int, int], list[str]],
) -> list[str]:
    """One module's lora_A/lora_B: dtype, partner, shapes against the base layer, rank."""
    problems = []
    shapes: dict[str, list[int]] = {}
    for side, key in sorted(pair.items()):
        dtype, shape = entries[key]["dtype"], entries[key]["shape"]
        if dtype not in _FLOAT_DTYPES:
            problems.append(f"{key}: dtype {dtype} is not one of {', '.join(_FLOAT_DTYPES)}")
        if len(shape) == 2:
            shapes[side] = shape
        else:
            problems.append(f"{key}: shape {shape} is not a matrix")
    if module not in base.linears:
        where = "lies outside the decoder layers" if module in base.outside else "does not exist"
        return problems + [f"{key}: base layer {module} {where}" for key in pair.values()]
    for side, other in (("A", "B"), ("B", "A")):
        if other not in pair:
            expected = pair[side].replace(f".lora_{side}.", f".lora_{other}.")
            problems.append(f"{pair[side]}: has no matching lora_{other} ({expected})")
    if not shapes:
        return problems
    configured = settings.rank_for(module)
    ranks = [shapes["A"][0]] if "A" in shapes else []
    ranks += [shapes["B"][1]] if "B" in shapes else []
    # A disagreeing pair is measured against the config's rank; an agreeing one against itself,
    # so an adapter whose config lies about r gets one message, not one per tensor.
    rank = configured if len(set(ranks)) > 1 and configured in ranks else ranks[0]
    out_features, in_features = base.linears[module]
    expected_shapes = {"A": [rank, in_features], "B": [out_features, rank]}
    for side, shape in sorted(shapes.items()):
        if shape != expected_shapes[side]:
            problems.append(
                f"{pair[side]}: shape {shape} does not fit base layer {module} "
                f"({out_features} out, {in_features} in): expected {expected_shapes[side]}"
            )
    if configured is not None and rank != configured:
        wrong_rank.setdefault((configured, rank), []).append(pair.get("A") or pair["B"])
    return problems


def _coverage_problems(
    pairs: dict[str, dict[str, str]], base: _Base, settings: _Settings
) -> list[str]:
    """Config and tensors must agree on which layers are adapted."""
    if settings.targets is None:
        return []
    problems = [
        f"{pair.get('A') or pair['B']}: adapts {module}, which target_modules does not select"
        for module, pair in sorted(pairs.items())
        if module in base.linears and not settings.targets_module(module)
    ]
    if isinstance(settings.targets, list):
        problems += [
            f"{_CONFIG}: target_modules names {target!r} but {_WEIGHTS} has no weights for it"
            for target in settings.targets
            if not any(m == target or m.endswith("." + target) for m in pairs)
        ]
    return problems


def _value_problems(path: Path, keys: list[str]) -> list[str]:
    """NaN or infinite values, read one tensor at a time (safetensors only, never pickle)."""
    import torch
    from safetensors import SafetensorError, safe_open

    problems = []
    try:
        with safe_open(str(path), framework="pt") as tensors:
            for key in keys:
                values = tensors.get_tensor(key)
                bad = int((~torch.isfinite(values)).sum())
                if bad:
                    problems.append(f"{key}: {bad} of {values.numel()} values are NaN or infinite")
    except (SafetensorError, OSError, RuntimeError) as error:
        problems.append(f"{_WEIGHTS}: its tensors cannot be read ({error})")
    return problems


def _few(names: list[str], shown: int = 3) -> str:
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")
