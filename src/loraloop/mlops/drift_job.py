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

__all__ = ["run", "training_inputs", "validate"]

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


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from loraloop.ml import drift, embeddings

    report({"event": "started", "pid": os.getpid()})
    model = embeddings.load_minilm()
    cache = Path(payload["reference_cache"])
    if cache.exists():
        matrix = embeddings.load_matrix(cache)
    else:
        report({"event": "embedding_training_inputs"})
        matrix = model.embed(training_inputs(Path(payload["train_file"])))
        cache.parent.mkdir(parents=True, exist_ok=True)
        embeddings.save_matrix(cache, matrix)
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
