"""Adapters and their versions: who may see them, starting training, recording results.

A version row exists only for a training job that succeeded (``record_version`` runs inside
the completing transaction), so a cancelled or crashed run never leaves a half version.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from loraloop.catalog import base_models, facets
from loraloop.config import Settings
from loraloop.db.tables import Adapter, AdapterVersion, Dataset, DatasetVersion, Job, User
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.jobs import queue
from loraloop.ml.safety import check_weights_file
from loraloop.storage import Storage, sha256_file

__all__ = [
    "LICENCES",
    "PRESETS",
    "create",
    "get_any",
    "get_own",
    "get_version",
    "get_visible",
    "list_own",
    "list_visible",
    "record_version",
    "start_training",
    "update",
    "versions",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VISIBILITIES = ("private", "public")
LICENCES = facets.LICENCE_IDS

#: Training presets: what "quick / balanced / thorough" mean. Explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1.0, "learning_rate": 3e-4, "lora": {"rank": 8, "alpha": 16}},
    "balanced": {"epochs": 3.0, "learning_rate": 2e-4, "lora": {"rank": 16, "alpha": 32}},
    "thorough": {
        "epochs": 5.0,
        "learning_rate": 1e-4,
        "lora": {"rank": 32, "alpha": 64, "targets": "all-linear"},
        "early_stopping_patience": 3,
    },
}


def _check(
    name: str | None = None,
    visibility: str | None = None,
    licence: str | None = None,
    *,
    language: str | None = None,
    task: str | None = None,
) -> None:
    problems = []
    if name is not None and not _NAME.match(name):
        problems.append(f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if visibility is not None and visibility not in VISIBILITIES:
        problems.append(f"visibility {visibility!r} must be one of {', '.join(VISIBILITIES)}")
    problems += facets.problems(licence=licence, language=language, task=task)
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_adapter")


def create(
    session: Session,
    owner: User,
    *,
    name: str,
    base_model_id: int,
    visibility: str = "private",
    licence: str = "apache-2.0",
    description: str = "",
    language: str = "other",
    task: str = "other",
    forked_from_version_id: int | None = None,
) -> Adapter:
    """A new adapter of ``owner``; ``forked_from_version_id`` is set by the hub's fork."""
    _check(name, visibility, licence, language=language, task=task)
    base_models.get(session, base_model_id)
    if session.scalar(select(Adapter.id).where(Adapter.owner_id == owner.id, Adapter.name == name)):
        raise Conflict(f"you already have an adapter named {name}", code="adapter_exists")
    adapter = Adapter(
        owner_id=owner.id,
        name=name,
        base_model_id=base_model_id,
        visibility=visibility,
        licence=licence,
        description=description,
        language=language,
        task=task,
        forked_from_version_id=forked_from_version_id,
    )
    session.add(adapter)
    session.flush()
    return adapter


def list_own(session: Session, user: User) -> list[Adapter]:
    """The user's own adapters (the ones they may train, deploy and change)."""
    query = select(Adapter).where(Adapter.owner_id == user.id)
    return list(session.scalars(query.order_by(Adapter.id)))


def list_visible(session: Session, user: User) -> list[Adapter]:
    """The user's own adapters and everyone's public ones."""
    query = select(Adapter).where(or_(Adapter.owner_id == user.id, Adapter.visibility == "public"))
    return list(session.scalars(query.order_by(Adapter.id)))


def get_visible(session: Session, user: User, adapter_id: int) -> Adapter:
    adapter = session.get(Adapter, adapter_id)
    if adapter is None or (adapter.owner_id != user.id and adapter.visibility != "public"):
        raise NotFound(f"adapter {adapter_id} not found", param="adapter_id")
    return adapter


def get_any(session: Session, adapter_id: int) -> Adapter:
    """The adapter whoever owns it: for the platform's own work (the loop), never for a user."""
    adapter = session.get(Adapter, adapter_id)
    if adapter is None:
        raise NotFound(f"adapter {adapter_id} not found", param="adapter_id")
    return adapter


def get_own(session: Session, user: User, adapter_id: int) -> Adapter:
    """Changing an adapter needs ownership; others (even of public ones) see "not found"."""
    adapter = session.get(Adapter, adapter_id)
    if adapter is None or adapter.owner_id != user.id:
        raise NotFound(f"adapter {adapter_id} not found", param="adapter_id")
    return adapter


def update(
    session: Session,
    user: User,
    adapter_id: int,
    *,
    visibility: str | None = None,
    licence: str | None = None,
    description: str | None = None,
    language: str | None = None,
    task: str | None = None,
) -> Adapter:
    adapter = get_own(session, user, adapter_id)
    _check(None, visibility, licence, language=language, task=task)
    if visibility is not None:
        adapter.visibility = visibility
    if licence is not None:
        adapter.licence = licence
    if description is not None:
        adapter.description = description
    if language is not None:
        adapter.language = language
    if task is not None:
        adapter.task = task
    return adapter


def versions(session: Session, user: User, adapter_id: int) -> list[AdapterVersion]:
    get_visible(session, user, adapter_id)
    query = select(AdapterVersion).where(AdapterVersion.adapter_id == adapter_id)
    return list(session.scalars(query.order_by(AdapterVersion.version)))


def get_version(session: Session, user: User, adapter_id: int, version: int) -> AdapterVersion:
    get_visible(session, user, adapter_id)
    row = session.scalar(
        select(AdapterVersion).where(
            AdapterVersion.adapter_id == adapter_id, AdapterVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"adapter {adapter_id} has no version {version}", param="version")
    return row


def _merge(preset: str, options: dict[str, Any]) -> dict[str, Any]:
    if preset not in PRESETS:
        raise InvalidRequest(
            f"preset {preset!r} must be one of {', '.join(PRESETS)}", param="preset"
        )
    merged = {**PRESETS[preset], **{k: v for k, v in options.items() if k != "lora"}}
    merged["lora"] = {**PRESETS[preset].get("lora", {}), **options.get("lora", {})}
    return merged


def start_training(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner: User,
    adapter_id: int,
    *,
    dataset_id: int,
    dataset_version: int | None = None,
    preset: str = "balanced",
    options: dict[str, Any] | None = None,
    parent_version: int | None = None,
    train_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Job:
    """Queue a training job for a new version of the adapter on one of the owner's datasets.

    ``train_sha256`` replaces the version's training split by another stored file (the
    maintenance loop's split plus accepted corrections); ``extra`` joins the payload."""
    adapter = get_own(session, owner, adapter_id)
    data = _dataset_version(session, owner, dataset_id, dataset_version)
    base = base_models.get(session, adapter.base_model_id)
    parent = get_version(session, owner, adapter_id, parent_version).id if parent_version else None
    runs = settings.home / "runs"
    payload: dict[str, Any] = {
        "adapter_id": adapter.id,
        "adapter_name": adapter.name,
        "licence": adapter.licence,
        "base_name": base.name,
        "base_path": str(base_models.absolute_path(settings, base)),
        "base_default": base.is_default,
        "models_dir": str(base_models.models_dir(settings)),
        "train_file": str(storage.path(train_sha256 or data.train_sha256)),
        "validation_file": str(storage.path(data.validation_sha256))
        if data.validation_sha256
        else None,
        "output_dir": str(runs / "pending"),
        "dataset": {
            "id": data.id,
            "name": _dataset_name(session, data),
            "version": data.version,
            "content_hash": data.content_hash,
            "train_examples": data.train_examples,
            "validation_examples": data.validation_examples,
        },
        "parent_version_id": parent,
        "spec": _merge(preset, options or {}),
        **(extra or {}),
    }
    job = queue.enqueue(session, owner, "train", payload, submitted=False, max_attempts=3)
    job.payload = {**payload, "output_dir": str(runs / f"job-{job.id}")}
    session.flush()
    return job


def _dataset_version(
    session: Session, owner: User, dataset_id: int, version: int | None
) -> DatasetVersion:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != owner.id:
        raise NotFound(f"dataset {dataset_id} not found", param="dataset_id")
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
    if version is not None:
        query = query.where(DatasetVersion.version == version)
    row = session.scalar(query.order_by(DatasetVersion.version.desc()).limit(1))
    if row is None:
        raise NotFound(
            f"dataset {dataset_id} has no version {version or ''}".strip(), param="dataset_version"
        )
    return row


def _dataset_name(session: Session, version: DatasetVersion) -> str:
    dataset = session.get(Dataset, version.dataset_id)
    return dataset.name if dataset else "?"


def record_version(session: Session, job: Job) -> AdapterVersion:
    """Success hook of ``train`` jobs: verify the artifact and add the next version."""
    result, payload = job.result or {}, job.payload
    folder = Path(result.get("adapter_dir", ""))
    weights = folder / "adapter_model.safetensors"
    check_weights_file(weights)
    if sha256_file(weights) != result.get("sha256"):
        raise InvalidRequest("the adapter file does not match the reported sha256")
    latest = session.scalar(
        select(func.max(AdapterVersion.version)).where(
            AdapterVersion.adapter_id == payload["adapter_id"]
        )
    )
    row = AdapterVersion(
        adapter_id=payload["adapter_id"],
        version=(latest or 0) + 1,
        job_id=job.id,
        dataset_version_id=payload["dataset"]["id"],
        parent_version_id=payload.get("parent_version_id"),
        path=str(folder),
        sha256=result["sha256"],
        spec=payload["spec"],
        metrics=result.get("metrics", {}),
    )
    session.add(row)
    session.flush()
    from loraloop.catalog import aliases  # aliases builds on this module

    aliases.ensure_champion(session, row)
    return row
