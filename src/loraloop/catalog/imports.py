"""Importing a PEFT adapter made elsewhere as a version, like one loraloop trained.

    archive (zip/tar) ──adapter_archive.unpack──┐
    hub repo@revision ──huggingface.download────┴─▶ incoming/ ──inspect_adapter(base shapes)
                                                                   │ any problem: 400, all listed
                                                                   ▼
                          <home>/imports/<sha256>-<n>/ ──▶ AdapterVersion (first one: champion)

The files are fetched and checked outside any transaction (a download can take minutes, and
SQLite's write lock must not wait for it); the version row is written in one short one at the
end. Where the adapter came from (upload or hub, repo, revision, commit, hashes) is kept in the
version's ``spec["import"]``, so anyone can tell an imported version from a trained one.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases, base_models, huggingface
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, AdapterVersion, User
from loraloop.errors import Conflict, InvalidRequest, PayloadTooLarge
from loraloop.ml.adapter_archive import unpack
from loraloop.ml.adapter_import import AdapterRejected, AdapterReport, base_shapes, inspect_adapter
from loraloop.storage import sha256_file

__all__ = ["HubSource", "Imported", "Target", "Upload", "import_adapter", "imports_dir"]

_WEIGHTS, _CONFIG, _CARD = "adapter_model.safetensors", "adapter_config.json", "README.md"
#: A model card larger than this is left behind (the adapter is still imported).
_CARD_BYTES = 1024**2
_CHUNK = 1024**2


@dataclass(frozen=True)
class Target:
    """Where the import lands: the next version of one of your adapters (``adapter_id``), or
    version 1 of a new adapter (``name`` on ``base_model_id``)."""

    adapter_id: int | None = None
    name: str | None = None
    base_model_id: int | None = None
    visibility: str = "private"
    licence: str = "apache-2.0"
    description: str = ""


@dataclass(frozen=True)
class Upload:
    """An uploaded archive; its ``filename`` (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``)
    decides how it is read."""

    filename: str
    chunks: Iterable[bytes] = field(repr=False)


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face repo at a revision; ``token`` (for a private repo) is used once."""

    repo_id: str
    revision: str
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Imported:
    adapter: Adapter
    version: AdapterVersion
    report: AdapterReport


class _DryRun(Exception):
    """Rolls back the transaction that tried creating the adapter before any file work."""


def imports_dir(settings: Settings) -> Path:
    return settings.home / "imports"


def import_adapter(
    db: Database, settings: Settings, user: User, source: Upload | HubSource, target: Target
) -> Imported:
    """Fetch, check and record an outside adapter. Refuses with one 400 listing every problem
    (:class:`~loraloop.ml.adapter_import.AdapterRejected`); nothing is kept then."""
    base_path, base_model_id = _prepare(db, settings, user, source, target)
    incoming = imports_dir(settings) / f".incoming-{secrets.token_hex(8)}"
    incoming.mkdir(parents=True)
    try:
        folder, provenance = _fetch(settings, source, incoming)
        report = inspect_adapter(folder, base_shapes(base_path))
        if not report.ok:
            raise AdapterRejected(_with_hints(report.problems, source))
        stored, provenance = _store(settings, folder, provenance)
        try:
            with db.session() as session:
                return _record(session, user, target, base_model_id, stored, report, provenance)
        except BaseException:
            shutil.rmtree(stored, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _prepare(
    db: Database, settings: Settings, user: User, source: Upload | HubSource, target: Target
) -> tuple[Path, int]:
    """Refuse a bad request before any byte is fetched; the base model's folder and id."""
    problems = []
    if isinstance(source, HubSource):
        problems += huggingface.repo_problems(
            source.repo_id, param="hub_repo", revision=source.revision
        )
        if source.token is not None and not 1 <= len(source.token) <= 512:
            problems.append("token: must be 1-512 characters (a hub access token)")
    if target.adapter_id is not None and (target.name or target.base_model_id):
        problems.append(
            "give adapter_id (a new version of your adapter) or name and base_model_id (a new "
            "adapter), not both"
        )
    elif target.adapter_id is None and not (target.name and target.base_model_id):
        problems.append(
            "name and base_model_id are required for a new adapter (or give adapter_id to add "
            "a version to one of yours)"
        )
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_import")
    with db.session() as session:
        if target.adapter_id is not None:
            base_id = adapters.get_own(session, user, target.adapter_id).base_model_id
        else:
            base_id = _dry_create(session, user, target)
        base = base_models.get(session, base_id)
        return base_models.absolute_path(settings, base), base_id


def _dry_create(session: Session, user: User, target: Target) -> int:
    """Check the new adapter exactly as creating it would (name, licence, base, a name
    already taken), then roll the row back: it is made only once the files pass."""
    assert target.base_model_id is not None
    try:
        with session.begin_nested():
            _create(session, user, target, target.base_model_id)
            raise _DryRun
    except _DryRun:
        pass
    return target.base_model_id


def _create(session: Session, user: User, target: Target, base_model_id: int) -> Adapter:
    return adapters.create(
        session,
        user,
        name=target.name or "",
        base_model_id=base_model_id,
        visibility=target.visibility,
        licence=target.licence,
        description=target.description,
    )


def _fetch(
    settings: Settings, source: Upload | HubSource, incoming: Path
) -> tuple[Path, dict[str, Any]]:
    """The folder holding the adapter's files, and what is known of where they came from."""
    if isinstance(source, HubSource):
        commit = huggingface.download_adapter(
            source.repo_id,
            source.revision,
            incoming / "adapter",
            endpoint=settings.hub_endpoint,
            cache_dir=settings.hub_cache or settings.home / "hub",
            offline=settings.hub_offline,
            token=source.token,
        )
        return incoming / "adapter", {
            "source": "hub",
            "endpoint": settings.hub_endpoint,
            "hub_repo": source.repo_id,
            "revision": source.revision,
            "commit": commit,
        }
    archive = incoming / "archive" / _safe_name(source.filename)
    archive.parent.mkdir()
    size = _receive(source.chunks, archive, settings.max_adapter_upload_bytes)
    root = unpack(archive, incoming / "unpacked", max_bytes=settings.max_adapter_upload_bytes)
    return root, {
        "source": "upload",
        "file_name": archive.name,
        "archive_bytes": size,
        "archive_sha256": sha256_file(archive),
    }


def _safe_name(filename: str) -> str:
    """The upload's own name without folders or odd characters; its suffix picks the format."""
    name = re.sub(r"[^\w.-]", "_", filename.replace("\\", "/").rsplit("/", 1)[-1])[-120:]
    return name.lstrip(".") or "upload"


def _receive(chunks: Iterable[bytes], path: Path, limit: int) -> int:
    size = 0
    with path.open("xb") as handle:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the archive is larger than the {limit} byte limit (max_adapter_upload_bytes)",
                    param="file",
                )
            handle.write(chunk)
    return size


def _with_hints(problems: list[str], source: Upload | HubSource) -> list[str]:
    if not isinstance(source, HubSource):
        return problems
    missing = f"{_WEIGHTS} is missing"
    return [
        f"{missing} in {source.repo_id}@{source.revision} (only safetensors weights are "
        "imported: save a .bin adapter again with PEFT's save_pretrained, which writes "
        "safetensors)"
        if problem == missing
        else problem
        for problem in problems
    ]


def _store(
    settings: Settings, folder: Path, provenance: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Move the checked files to their own folder under ``<home>/imports`` (a rename, no copy)."""
    sha = sha256_file(folder / _WEIGHTS)
    stored = imports_dir(settings) / f"{sha[:16]}-{secrets.token_hex(4)}"
    stored.mkdir(parents=True)
    shutil.move(folder / _WEIGHTS, stored / _WEIGHTS)
    shutil.move(folder / _CONFIG, stored / _CONFIG)
    card = folder / _CARD
    if card.is_file() and card.stat().st_size <= _CARD_BYTES:
        shutil.move(card, stored / _CARD)
    elif card.is_file():
        provenance = {**provenance, "card": f"left out: over {_CARD_BYTES} bytes"}
    return stored, {
        **provenance,
        "sha256": sha,
        "config_sha256": sha256_file(stored / _CONFIG),
    }


def _record(
    session: Session,
    user: User,
    target: Target,
    base_model_id: int,
    stored: Path,
    report: AdapterReport,
    provenance: dict[str, Any],
) -> Imported:
    if target.adapter_id is None:
        adapter = _create(session, user, target, base_model_id)
    else:
        adapter = adapters.get_own(session, user, target.adapter_id)
    latest = session.scalar(
        select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter.id)
    )
    row = AdapterVersion(
        adapter_id=adapter.id,
        version=(latest or 0) + 1,
        path=str(stored.resolve()),
        sha256=provenance["sha256"],
        spec={
            "import": provenance,
            "lora": {"rank": report.rank, "alpha": report.alpha, "targets": list(report.targets)},
        },
        metrics={"tensors": report.tensor_count, "parameters": report.parameters},
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"another version of adapter {adapter.id} was recorded at the same moment; import "
            "again",
            code="version_race",
        ) from None
    aliases.ensure_champion(session, row)
    return Imported(adapter, row, report)
