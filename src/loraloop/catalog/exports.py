"""Exports of adapter versions: what an owner takes away to run elsewhere.

    peft    ──peft_zip (at once)──────────────▶ NAME-vN.zip: adapter_model.safetensors + config
    merged  ──start ─▶ ``export`` job ─▶ files ─▶ zip_stream / file_path (one folder, or a file)
    gguf    ──start ─▶ ``export`` job ─▶ NAME-vN.gguf + Modelfile (``ollama create``)

The PEFT zip loads with ``PeftModel.from_pretrained`` once unpacked and is there for anyone who
can see the version. Merged models and GGUF files take seconds to minutes, so a job writes
them, and only the adapter's owner may start, list, download or delete them: anyone else's id
is "not found", exactly like a missing one. Only safetensors and GGUF leave; never a pickle.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, base_models, export_job
from loraloop.config import Settings
from loraloop.db.engine import utcnow
from loraloop.db.tables import Adapter, AdapterExport, AdapterVersion, Job, User
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.jobs import queue
from loraloop.jobs.states import ACTIVE, Status
from loraloop.storage import contained

__all__ = [
    "PEFT_FILES",
    "ExportView",
    "delete",
    "export_succeeded",
    "exports_dir",
    "file_path",
    "get",
    "list_for_version",
    "peft_zip",
    "ready_files",
    "start",
    "zip_stream",
]

PEFT_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md", "training.json")
_CHUNK = 1 << 20
_LLAMA = ("LlamaForCausalLM", "llama")


@dataclass(frozen=True)
class ExportView:
    """An export with what its job says about it."""

    row: AdapterExport
    version: int
    label: str
    """``NAME-vN``: what the files and their zip are called."""
    status: str
    """``ready`` once its files are recorded; before that the job's status."""
    error: str | None

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.row.files or [])


def exports_dir(settings: Settings) -> Path:
    return settings.home / "exports"


def peft_zip(session: Session, user: User, adapter_id: int, version: int) -> tuple[str, bytes]:
    """``(file name, zip bytes)`` of a version you can see."""
    row = adapters.get_version(session, user, adapter_id, version)
    adapter = session.get(Adapter, adapter_id)
    assert adapter is not None
    folder = Path(row.path)
    if not (folder / "adapter_model.safetensors").is_file():
        raise NotFound(f"the files of version {version} are gone from {folder.name}")
    name = f"{adapter.name}-v{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in PEFT_FILES:
            if (folder / file).is_file():
                archive.write(folder / file, f"{name}/{file}")
    return f"{name}.zip", buffer.getvalue()


def start(
    session: Session,
    settings: Settings,
    user: User,
    adapter_id: int,
    version: int,
    *,
    format: str,
    dtype: str | None = None,
    system: str | None = None,
) -> tuple[ExportView, bool]:
    """Queue an export of your version, or return the same one already made or on its way;
    ``(export, whether it is new)``."""
    adapter, row = _own_version(session, user, adapter_id, version)
    _check_options(format, dtype, system)
    base = base_models.get(session, adapter.base_model_id)
    if format == "gguf" and (base.architecture, base.model_type) != _LLAMA:
        raise InvalidRequest(
            f"GGUF export writes Llama models; base {base.name} is {base.architecture} "
            f"(model_type {base.model_type!r}): export format 'merged' instead",
            code="unsupported_model",
            param="format",
        )
    default = "f16" if format == "gguf" else "float32"
    options: dict[str, Any] = {"dtype": dtype or default}
    if format == "gguf" and system:
        options["system"] = system
    for existing in _views(session, adapter, row):
        if (existing.row.format, existing.row.options) == (format, options) and (
            existing.status not in (Status.failed, Status.cancelled)
        ):
            return existing, False
    export = AdapterExport(
        adapter_id=adapter.id, version_id=row.id, format=format, options=options, path=""
    )
    session.add(export)
    session.flush()
    folder = exports_dir(settings) / f"export-{export.id}"
    payload = {
        "export_id": export.id,
        "format": format,
        "name": f"{adapter.name}-v{version}",
        **options,
        "base_path": str(base_models.absolute_path(settings, base)),
        "base_default": base.is_default,
        "models_dir": str(base_models.models_dir(settings)),
        "adapter_dir": row.path,
        "output_dir": str(folder),
    }
    job = queue.enqueue(session, user, "export", payload, submitted=False, max_attempts=2)
    export.job_id, export.path = job.id, str(folder)
    session.flush()
    return ExportView(export, version, payload["name"], Status.queued, None), True


def list_for_version(
    session: Session, user: User, adapter_id: int, version: int
) -> list[ExportView]:
    """Your exports of one version, oldest first."""
    adapter, row = _own_version(session, user, adapter_id, version)
    return _views(session, adapter, row)


def get(session: Session, user: User, adapter_id: int, version: int, export_id: int) -> ExportView:
    adapter, row = _own_version(session, user, adapter_id, version)
    export = session.get(AdapterExport, export_id)
    if export is None or export.version_id != row.id:
        raise NotFound(f"export {export_id} not found", param="export_id")
    return _view(session, export, f"{adapter.name}-v{row.version}", row.version)


def file_path(view: ExportView, name: str | None) -> Path:
    """One file of a ready export (``name`` None: its first, the one the format is about)."""
    files = [f["name"] for f in _ready(view)]
    wanted = name or _primary(view)
    if wanted not in files:
        raise NotFound(
            f"export {view.row.id} has no file {wanted!r}; it has: {', '.join(files)}",
            param="file",
        )
    path = Path(view.row.path) / wanted
    if not contained(Path(view.row.path), path) or not path.is_file():
        raise NotFound(f"the files of export {view.row.id} are gone", param="export_id")
    return path


def zip_stream(view: ExportView, prefix: str) -> Iterator[bytes]:
    """Every file of a ready export inside ``prefix/``, zipped while it is sent (stored, not
    compressed: weights do not shrink) so a model is never held in memory or written twice.
    A missing file is refused here, before the first byte goes out."""
    return _zipped(ready_files(view), prefix)


def ready_files(view: ExportView) -> list[Path]:
    """Every file of a ready export (a ``Conflict`` naming the job while it is not ready)."""
    return [file_path(view, f["name"]) for f in _ready(view)]


def delete(session: Session, user: User, adapter_id: int, version: int, export_id: int) -> None:
    """Remove an export and its files; one still being written must be cancelled first."""
    view = get(session, user, adapter_id, version, export_id)
    if view.status in (Status.queued, *ACTIVE):
        raise Conflict(
            f"export {export_id} is still being made (job {view.row.job_id} is {view.status}); "
            "cancel the job first",
            code="export_running",
        )
    folder = Path(view.row.path)
    if folder.name == f"export-{view.row.id}":  # only ever the export's own folder
        shutil.rmtree(folder, ignore_errors=True)
    session.delete(view.row)
    session.flush()


def export_succeeded(session: Session, job: Job) -> AdapterExport:
    """Success hook of ``export`` jobs: every reported file is there, in the export's folder,
    at its reported size. The hashes are the worker's: re-hashing gigabytes here would hold the
    database's write lock for as long, and ``export`` jobs only ever run on trusted workers
    (never on a provider node, see ``providers.work.REMOTE_KINDS``)."""
    export = session.scalar(select(AdapterExport).where(AdapterExport.job_id == job.id))
    if export is None:
        raise NotFound(f"job {job.id} belongs to no export (it was deleted)")
    files = list((job.result or {}).get("files") or [])
    folder = Path(export.path)
    problems = [
        f"{item.get('name')!r} does not match what the job reported"
        for item in files
        if not _matches(folder, item)
    ]
    if not files or problems:
        raise InvalidRequest("the export's files are not as reported: " + "; ".join(problems))
    export.files = [{k: item[k] for k in ("name", "size", "sha256")} for item in files]
    export.finished_at = utcnow()
    session.flush()
    return export


# ── helpers ────────────────────────────────────────────────────────────────────────────────


def _zipped(paths: list[Path], prefix: str) -> Iterator[bytes]:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths:
            name = f"{prefix}/{path.name}"
            with archive.open(name, "w", force_zip64=True) as entry, path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    entry.write(chunk)
                    yield pipe.take()
    yield pipe.take()


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink: ``zipfile`` then writes data descriptors after each
    member instead of seeking back, and what it wrote is taken out chunk by chunk."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _check_options(format: str, dtype: str | None, system: str | None) -> None:
    problems = []
    if format not in export_job.FORMATS:
        problems.append(f"format {format!r} must be one of {', '.join(export_job.FORMATS)}")
    dtypes = export_job.GGUF_DTYPES if format == "gguf" else export_job.MERGE_DTYPES
    if dtype is not None and dtype not in dtypes:
        problems.append(f"dtype {dtype!r} must be one of {', '.join(dtypes)} for {format}")
    if system and format != "gguf":
        problems.append("system is the Ollama Modelfile's system prompt: only for format gguf")
    if system and '"""' in system:
        problems.append('system may not contain """ (it would end the Modelfile string)')
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_export", param="format")


def _own_version(
    session: Session, user: User, adapter_id: int, version: int
) -> tuple[Adapter, AdapterVersion]:
    adapter = adapters.get_own(session, user, adapter_id)
    return adapter, adapters.get_version(session, user, adapter_id, version)


def _views(session: Session, adapter: Adapter, row: AdapterVersion) -> list[ExportView]:
    query = select(AdapterExport).where(AdapterExport.version_id == row.id)
    label = f"{adapter.name}-v{row.version}"
    rows = session.scalars(query.order_by(AdapterExport.id))
    return [_view(session, export, label, row.version) for export in rows]


def _view(session: Session, export: AdapterExport, label: str, version: int) -> ExportView:
    if export.files is not None:
        return ExportView(export, version, label, "ready", None)
    job = session.get(Job, export.job_id) if export.job_id is not None else None
    if job is None:
        return ExportView(export, version, label, Status.failed, "its job was deleted")
    # a succeeded job whose hook refused the files is failed, so "succeeded" never shows here
    return ExportView(export, version, label, job.status, job.error)


def _ready(view: ExportView) -> list[dict[str, Any]]:
    if view.status != "ready":
        raise Conflict(
            f"export {view.row.id} is not ready (its job is {view.status}); follow job "
            f"{view.row.job_id}",
            code="export_not_ready",
        )
    return view.files


def _primary(view: ExportView) -> str:
    names = [str(f["name"]) for f in view.files]
    if view.row.format == "gguf":
        return next((n for n in names if n.endswith(".gguf")), names[0])
    return next((n for n in names if n == "model.safetensors"), names[0])


def _matches(folder: Path, item: dict[str, Any]) -> bool:
    name = str(item.get("name", ""))
    path = folder / name
    if "/" in name or not name or not path.is_file() or not contained(folder, path):
        return False
    sha = str(item.get("sha256", ""))
    return path.stat().st_size == item.get("size") and len(sha) == 64
