"""The ``drift_check`` job: embed a window of a deployment's inputs with MiniLM and compare it
with the inputs the serving version was trained on, in the worker's child. No database.

The training inputs' embeddings are cached next to the artifacts (a safetensors file named by
the training file's hash), so each check embeds only its window.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest

__all__ = ["reference_cache", "reference_matrix", "run", "training_inputs", "validate"]

_NEEDS = ("train_file", "reference_cache", "texts")


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _NEEDS if k not in payload]
    if missing:
        raise InvalidRequest(f"drift_check payload lacks {', '.join(missing)}", param="payload")
    return payload


def training_inputs(path: Path) -> list[str]:
    """Every user turn of a normalised JSON Lines training file."""
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                texts.extend(
                    m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"
                )
    return texts


def reference_cache(home: Path, train_file: Path) -> Path:
    """Where a training file's input embeddings are kept (named by the file's hash)."""
    return home / "cache" / "embeddings" / f"{train_file.name}.safetensors"


def reference_matrix(
    train_file: Path, cache: Path, report: Callable[[dict[str, Any]], None] = lambda _e: None
) -> Any:
    """The MiniLM matrix of a training file's user turns: from the cache, or embedded once and
    cached."""
    from loraloop.ml import embeddings

    if cache.exists():
        return embeddings.load_matrix(cache)
    report({"event": "embedding_training_inputs"})
    matrix = embeddings.load_minilm().embed(training_inputs(train_file))
    cache.parent.mkdir(parents=True, exist_ok=True)
    embeddings.save_matrix(cache, matrix)
    return matrix


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from loraloop.ml import drift, embeddings

    report({"event": "started", "pid": os.getpid()})
    model = embeddings.load_minilm()
    matrix = reference_matrix(Path(payload["train_file"]), Path(payload["reference_cache"]), report)
    ref = drift.reference(matrix, seed=int(payload.get("seed", 0)))
    texts = list(payload["texts"])
    result = drift.input_drift(
        ref,
        model.embed(texts),
        texts,
        alpha=float(payload.get("alpha", 0.001)),
        permutations=int(payload.get("permutations", 1000)),
        seed=int(payload.get("seed", 0)),
    )
    return {"input": result.to_dict()}
