"""Exports of a trained adapter: the PEFT folder and a merged safetensors model.

    adapter/ ───────────export_peft──▶ out/ adapter_config.json + adapter_model.safetensors
    base/ + adapter/ ───merge────────▶ out/ model.safetensors + config + tokenizer + generation

A merged Llama goes on to GGUF in :mod:`loraloop.ml.gguf_export`. Only safetensors are read;
pickles are refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest
from loraloop.ml.models import Dtype, load
from loraloop.ml.safety import PICKLE_SUFFIXES, UnsafeWeights, read_safetensors_header

__all__ = ["ADAPTER_FILES", "ExportedFile", "FolderExport", "export_peft", "merge"]

#: What a PEFT adapter folder is made of, and all that leaves it.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class ExportedFile:
    """One written file, with the hash a downloader can check."""

    name: str
    size: int
    sha256: str

    @classmethod
    def of(cls, file: Path) -> ExportedFile:
        with file.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return cls(file.name, file.stat().st_size, digest)


@dataclass(frozen=True)
class FolderExport:
    """A written folder (PEFT adapter or merged model) and every file in it, sorted by name."""

    path: Path
    files: tuple[ExportedFile, ...]


def export_peft(adapter_dir: Path, out_dir: Path) -> FolderExport:
    """Copy the adapter's config and safetensors weights, and nothing else, into ``out_dir``.

    Refuses (:class:`~loraloop.ml.safety.UnsafeWeights`) a folder holding any pickle file, so
    an export never launders one; ``out_dir`` must be empty or absent.
    """
    _check_adapter(adapter_dir)
    with _writing(out_dir):
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / name, out_dir / name)
    return FolderExport(out_dir, _describe_files(out_dir))


def merge(
    base_dir: Path, adapter_dir: Path, out_dir: Path, *, dtype: Dtype = "float32"
) -> FolderExport:
    """Fold the adapter into the base (``W + B·A·alpha/r``) and save a plain model in ``out_dir``.

    The result loads without PEFT: ``model.safetensors`` (tied embeddings stored once), config,
    generation config and tokenizer. Both inputs must be safetensors-only folders.
    """
    from peft import PeftModel

    _check_adapter(adapter_dir)
    model, tokenizer = load(base_dir, dtype=dtype)
    adapted: Any = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    merged = adapted.merge_and_unload()
    with _writing(out_dir):
        merged.save_pretrained(out_dir, safe_serialization=True)  # with generation_config.json
        tokenizer.save_pretrained(out_dir)
    return FolderExport(out_dir, _describe_files(out_dir))


# ── checks ─────────────────────────────────────────────────────────────────────────────────


def _check_adapter(path: Path) -> None:
    """Refuse anything but a PEFT folder of safetensors weights and a JSON config."""
    if not path.is_dir():
        raise InvalidRequest(f"{path} is not a folder", code="invalid_adapter", param="adapter_dir")
    unsafe = [
        f"{file.relative_to(path).as_posix()}: {file.suffix.lower()} files are pickles; "
        "only .safetensors are accepted"
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.suffix.lower() in PICKLE_SUFFIXES
    ]
    problems = []
    config, weights = path / ADAPTER_FILES[0], path / ADAPTER_FILES[1]
    if not weights.is_file():
        problems.append(f"{path.name}: {weights.name} is missing")
    else:
        try:
            read_safetensors_header(weights)
        except UnsafeWeights as error:
            unsafe.extend(error.problems)
    if not isinstance(_read_json(config), dict):
        problems.append(f"{path.name}: {config.name} is missing or is not a JSON object")
    if unsafe:
        raise UnsafeWeights(unsafe + problems)
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_adapter", param="adapter_dir")


@contextmanager
def _writing(out_dir: Path) -> Iterator[None]:
    """Create (or take the empty) ``out_dir``; on failure remove it, since it held nothing."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidRequest(f"{out_dir} must be an empty folder or not exist", param="out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _describe_files(folder: Path) -> tuple[ExportedFile, ...]:
    return tuple(ExportedFile.of(f) for f in sorted(folder.iterdir(), key=lambda f: f.name))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
