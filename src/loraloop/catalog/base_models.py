"""Base models: the packaged default, and any hub model or local folder an admin registers.

Rows point at safetensors folders under ``<home>/models``; the engine (``ml/models``) does the
converting, downloading and describing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import BaseModel, User
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.ml import models
from loraloop.ml.models import BaseModelInfo

__all__ = ["absolute_path", "get", "get_by_name", "list_all", "register", "register_default"]


def models_dir(settings: Settings) -> Path:
    return settings.home / "models"


def absolute_path(settings: Settings, row: BaseModel) -> Path:
    path = Path(row.path)
    return path if path.is_absolute() else settings.home / path


def _relative(settings: Settings, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(settings.home.resolve()))
    except ValueError:
        return str(path.resolve())


def _upsert(
    session: Session,
    settings: Settings,
    info: BaseModelInfo,
    *,
    hub_id: str | None,
    by: User | None,
    default: bool = False,
) -> BaseModel:
    row = session.scalar(select(BaseModel).where(BaseModel.name == info.name))
    if row is None:
        row = BaseModel(name=info.name, created_by=by.id if by else None)
        session.add(row)
    row.source, row.hub_id, row.revision = info.source, hub_id, info.revision
    row.path = _relative(settings, info.path)
    row.architecture, row.model_type = info.architecture, info.model_type
    row.parameters, row.context_length = info.parameters, info.context_length
    row.chat_template, row.sha256, row.is_default = info.chat_template, info.sha256, default
    session.flush()
    return row


def register_default(db: Database, settings: Settings) -> BaseModel:
    """Convert the packaged SmolLM2 once (about 30 s the first time) and record it. The
    conversion runs outside any transaction so it never holds the database's write lock."""
    info = models.ensure_default_base(models_dir(settings))
    with db.session() as session:
        return _upsert(session, settings, info, hub_id=None, by=None, default=True)


def register(
    session: Session,
    settings: Settings,
    admin: User,
    *,
    hub_id: str | None = None,
    revision: str | None = None,
    local_path: str | None = None,
    offline: bool = True,
) -> BaseModel:
    """Register a hub model (pinned revision, safetensors only) or a local folder."""
    if bool(hub_id) == bool(local_path):
        raise InvalidRequest("give either hub_id (with revision) or local_path", param="hub_id")
    if hub_id:
        if not revision:
            raise InvalidRequest("a hub model needs a pinned revision", param="revision")
        folder = models.resolve_hub(hub_id, revision, models_dir(settings) / "hub", offline=offline)
        info = models.describe(folder, name=hub_id, source="hub", revision=revision)
    else:
        folder = Path(local_path or "")
        if not folder.is_dir():
            raise InvalidRequest(f"local_path {local_path!r} is not a folder", param="local_path")
        info = models.register_local(folder)
    if session.scalar(select(BaseModel.id).where(BaseModel.name == info.name)) is not None:
        raise Conflict(f"a base model named {info.name} is already registered")
    return _upsert(session, settings, info, hub_id=hub_id, by=admin)


def list_all(session: Session) -> list[BaseModel]:
    return list(
        session.scalars(select(BaseModel).order_by(BaseModel.is_default.desc(), BaseModel.name))
    )


def get(session: Session, base_id: int) -> BaseModel:
    row = session.get(BaseModel, base_id)
    if row is None:
        raise NotFound(f"base model {base_id} not found", param="base_id")
    return row


def get_by_name(session: Session, name: str) -> BaseModel:
    row = session.scalar(select(BaseModel).where(BaseModel.name == name))
    if row is None:
        names = ", ".join(r.name for r in list_all(session)) or "none yet"
        raise NotFound(f"no base model named {name!r}; registered: {names}", param="base")
    return row
