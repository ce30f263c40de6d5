"""Refusing weights that could be unpickled: only well-formed safetensors ever get in.

A ``.bin``/``.pt``/``.ckpt`` file is a pickle (or a zip of pickles, which is what
``torch.save`` writes) and loading one runs arbitrary code. Every model folder and adapter
that enters loraloop passes through :func:`check_model_folder` or :func:`check_weights_file`
first. Reading a header never touches tensor data and never imports torch.

Safetensors layout (https://github.com/huggingface/safetensors#format)::

    [8 bytes: header length N, u64 little-endian][N bytes: JSON header][tensor data ...]
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, TypeGuard

from loraloop.errors import InvalidRequest

__all__ = [
    "PICKLE_SUFFIXES",
    "UnsafeWeights",
    "check_model_folder",
    "check_weights_file",
    "read_safetensors_header",
]

#: Weight files that are pickles (or zips of pickles) under their usual names.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})

#: The same ceiling the safetensors library puts on a header.
_MAX_HEADER = 100_000_000

_ITEMSIZE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


class UnsafeWeights(InvalidRequest):
    """Weights that are, or may be, a pickle; or that do not parse as safetensors."""

    default_code = "unsafe_weights"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("refused unsafe or malformed weights: " + "; ".join(problems))
        self.problems = tuple(problems)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file, validated against the file's size.

    Raises :class:`UnsafeWeights` naming the file (and saying "pickle" or "zip" when the
    content is one) if the file is anything other than well-formed safetensors.
    """
    header = _parse(path)
    if isinstance(header, str):
        raise UnsafeWeights([f"{path.name}: {header}"])
    return header


def check_weights_file(path: Path) -> None:
    """Accept ``path`` only if it is named ``*.safetensors`` and parses as safetensors."""
    suffix = path.suffix.lower()
    if suffix != ".safetensors":
        kind = "a pickle format" if suffix in PICKLE_SUFFIXES else "not safetensors"
        shown = suffix or "no suffix"
        raise UnsafeWeights([f"{path.name}: only .safetensors are accepted ({shown} is {kind})"])
    read_safetensors_header(path)


def check_model_folder(path: Path) -> list[Path]:
    """Refuse a folder holding pickle weights anywhere or no top-level safetensors file.

    Every ``*.safetensors`` file under ``path`` is validated; every problem is collected and
    reported in one :class:`UnsafeWeights`. Returns the safetensors files, sorted.
    """
    if not path.is_dir():
        raise UnsafeWeights([f"{path}: not a folder"])
    problems: list[str] = []
    weights: list[Path] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name, suffix = file.relative_to(path).as_posix(), file.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            problems.append(f"{name}: {suffix} weights are pickles; only .safetensors are accepted")
        elif suffix == ".safetensors":
            weights.append(file)
            header = _parse(file)
            if isinstance(header, str):
                problems.append(f"{name}: {header}")
    if not any(file.parent == path for file in weights):
        problems.append(f"{path}: no .safetensors weight file in the folder")
    if problems:
        raise UnsafeWeights(problems)
    return weights


def _parse(path: Path) -> dict[str, Any] | str:
    """The header, or what is wrong with the file (one line, without the file's name)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            sniffed = _sniff(prefix)
            if sniffed:
                return sniffed
            if len(prefix) < 8:
                return f"too short to be safetensors ({size} bytes)"
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > min(_MAX_HEADER, size - 8):
                return f"does not parse as safetensors (header length {length} is impossible)"
            raw = handle.read(length)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "does not parse as safetensors (the header is not JSON)"
    if not isinstance(header, dict):
        return "does not parse as safetensors (the header is not a JSON object)"
    problem = _layout_problem(header, size - 8 - length)
    return f"does not parse as safetensors ({problem})" if problem else header


def _sniff(prefix: bytes) -> str | None:
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return (
            f"is a pickle (protocol {prefix[1]}) under a .safetensors name; "
            "loading it could run arbitrary code"
        )
    if prefix.startswith(b"PK\x03\x04"):
        return (
            "is a zip archive (the format torch.save writes, which holds pickles), not safetensors"
        )
    return None


def _layout_problem(header: dict[str, Any], data_size: int) -> str | None:
    """Check every tensor entry and that the entries tile the data buffer with no holes."""
    spans: list[tuple[int, int]] = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return "__metadata__ must map strings to strings"
            continue
        if not isinstance(entry, dict):
            return f"tensor {key!r} is not an object"
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ITEMSIZE_BITS:
            return f"tensor {key!r} has unknown dtype {dtype!r}"
        if not _ints(shape, 0) or not _ints(offsets, 2):
            return f"tensor {key!r} needs an integer shape and two data_offsets"
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            return f"tensor {key!r} lies outside the file"
        if end - begin != math.ceil(math.prod(shape) * _ITEMSIZE_BITS[dtype] / 8):
            return f"tensor {key!r} has {end - begin} bytes for shape {shape} of {dtype}"
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            return "tensor data overlaps or leaves holes"
        position = end
    if position != data_size:
        return f"{data_size - position} bytes after the last tensor"
    return None


def _ints(value: object, length: int) -> TypeGuard[list[int]]:
    """A list of non-negative ints (of exactly ``length`` items when ``length`` is non-zero)."""
    return (
        isinstance(value, list)
        and (not length or len(value) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )
