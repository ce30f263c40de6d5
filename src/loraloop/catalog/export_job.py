"""The ``export`` job: an adapter version as a merged safetensors model, or as one GGUF file
with its Ollama Modelfile. It runs in the worker's child process with plain paths, no database.

    base/ + adapter/ ──ml.export.merge──▶ output_dir/  model.safetensors, config, tokenizer
                      └─merge (work dir)─▶ ml.gguf_export.to_gguf ──▶ output_dir/ NAME.gguf
                                                                                   Modelfile

``validate`` runs on the server when the job is queued (a bad payload is a 400 at once). A
retried attempt starts from an empty ``output_dir``, and the files land there only once they
are complete, so a failed attempt never leaves half a model behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest
from loraloop.ml.export import ExportedFile

__all__ = ["FORMATS", "GGUF_DTYPES", "MERGE_DTYPES", "MODELFILE", "run", "validate"]

FORMATS = ("merged", "gguf")
GGUF_DTYPES = ("f16", "f32")
MERGE_DTYPES = ("float32", "bfloat16", "float16")
MODELFILE = "Modelfile"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_FOLDER = re.compile(r"^export-\d+$")
_FIELDS = {
    "format", "name", "dtype", "system", "base_path", "adapter_dir", "output_dir",
    "base_default", "models_dir", "export_id",
}  # fmt: skip


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    """Every problem of the payload at once, or the payload."""
    problems = []
    kind = payload.get("format")
    if kind not in FORMATS:
        problems.append(f"format {kind!r} must be one of {', '.join(FORMATS)}")
    dtypes = GGUF_DTYPES if kind == "gguf" else MERGE_DTYPES
    if payload.get("dtype") not in dtypes:
        problems.append(f"dtype {payload.get('dtype')!r} must be one of {', '.join(dtypes)}")
    if not _NAME.match(str(payload.get("name", ""))):
        problems.append(f"name {payload.get('name')!r} must be 1-80 letters, digits, '.-_'")
    system = payload.get("system")
    if system is not None and (not isinstance(system, str) or len(system) > 4000):
        problems.append("system must be text of at most 4000 characters")
    for key in ("base_path", "adapter_dir", "output_dir"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            problems.append(f"{key} must be a folder path")
    if isinstance(payload.get("output_dir"), str) and not _FOLDER.match(
        Path(payload["output_dir"]).name
    ):
        problems.append("output_dir must be an export-<id> folder")  # it is emptied on a retry
    if unknown := sorted(set(payload) - _FIELDS):
        problems.append(f"unknown payload fields: {', '.join(unknown)}")
    if problems:
        raise InvalidRequest("; ".join(problems), param="payload")
    return payload


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from loraloop.ml.export import merge

    report({"event": "started", "pid": os.getpid()})
    if payload.get("base_default"):
        from loraloop.ml.models import ensure_default_base

        report({"event": "preparing_base", "message": "converting the default base model (once)"})
        ensure_default_base(Path(payload["models_dir"]))
    base, adapter = Path(payload["base_path"]), Path(payload["adapter_dir"])
    out = Path(payload["output_dir"])
    work = out.with_name(f".{out.name}.work")
    for leftover in (out, work):  # an earlier attempt's
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        report({"event": "merging", "message": "folding the adapter into the base weights"})
        if payload["format"] == "merged":
            files = list(merge(base, adapter, work, dtype=payload["dtype"]).files)
        else:
            merge(base, adapter, work / "merged")
            files = _gguf(work, payload, report)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # the names, sizes and hashes the writers measured as they wrote (not a second read)
    files.sort(key=lambda f: f.name)
    report({"event": "done", "files": len(files), "bytes": sum(f.size for f in files)})
    return {
        "format": payload["format"],
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files],
    }


def _gguf(
    work: Path, payload: dict[str, Any], report: Callable[[dict[str, Any]], None]
) -> list[ExportedFile]:
    """Turn ``work/merged`` into ``work/NAME.gguf`` and ``work/Modelfile``; drop the merge."""
    from loraloop.ml.gguf_export import ollama_modelfile, to_gguf

    name = payload["name"]
    report({"event": "writing_gguf", "message": f"writing {name}.gguf ({payload['dtype']})"})
    result = to_gguf(work / "merged", work / f"{name}.gguf", name=name, dtype=payload["dtype"])
    shutil.rmtree(work / "merged")
    modelfile = ollama_modelfile(result.path.name, system=payload.get("system"))
    (work / MODELFILE).write_text(modelfile, encoding="utf-8")
    return [result.file, ExportedFile.of(work / MODELFILE)]
