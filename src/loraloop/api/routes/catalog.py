"""Base models and adapters: browse, register, create, train."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from loraloop.api.catalog_schemas import (
    AdapterCreate,
    AdapterPublic,
    AdapterUpdate,
    BaseModelCreate,
    BaseModelPublic,
    SuggestionPublic,
    TrainRequest,
    VersionPublic,
)
from loraloop.api.deps import AdminUser, AppSettings, AppStorage, CurrentUser, DbSession
from loraloop.api.schemas import JobPublic
from loraloop.catalog import adapters, base_models, exports
from loraloop.ml.models import SUGGESTED_MODELS

router = APIRouter(prefix="/api", tags=["catalog"])


@router.get("/base-models")
def list_base_models(user: CurrentUser, session: DbSession) -> list[BaseModelPublic]:
    """Registered base models, the default first."""
    return [BaseModelPublic.model_validate(b) for b in base_models.list_all(session)]


@router.get("/base-models/suggestions")
def suggested_base_models(user: CurrentUser) -> list[SuggestionPublic]:
    """Well-known Japanese-capable open models an admin with hub access may register."""
    return [SuggestionPublic.model_validate(s) for s in SUGGESTED_MODELS]


@router.get("/base-models/{base_id}")
def get_base_model(base_id: int, user: CurrentUser, session: DbSession) -> BaseModelPublic:
    """One base model (base models are shared by every user)."""
    return BaseModelPublic.model_validate(base_models.get(session, base_id))


@router.post("/base-models", status_code=201)
def register_base_model(
    body: BaseModelCreate, admin: AdminUser, session: DbSession, settings: AppSettings
) -> BaseModelPublic:
    """Register a hub model at a pinned revision, or a local safetensors folder (admins)."""
    row = base_models.register(
        session,
        settings,
        admin,
        hub_id=body.hub_id,
        revision=body.revision,
        local_path=body.local_path,
    )
    return BaseModelPublic.model_validate(row)


@router.post("/adapters", status_code=201)
def create_adapter(body: AdapterCreate, user: CurrentUser, session: DbSession) -> AdapterPublic:
    """Create an adapter (a named line of versions) on a base model."""
    adapter = adapters.create(
        session,
        user,
        name=body.name,
        base_model_id=body.base_model_id,
        visibility=body.visibility,
        licence=body.licence,
        description=body.description,
        language=body.language,
        task=body.task,
    )
    return AdapterPublic.model_validate(adapter)


@router.get("/adapters")
def list_adapters(user: CurrentUser, session: DbSession) -> list[AdapterPublic]:
    """Your adapters and everyone's public ones."""
    return [AdapterPublic.model_validate(a) for a in adapters.list_visible(session, user)]


@router.get("/adapters/{adapter_id}")
def get_adapter(adapter_id: int, user: CurrentUser, session: DbSession) -> AdapterPublic:
    """An adapter you own or a public one."""
    return AdapterPublic.model_validate(adapters.get_visible(session, user, adapter_id))


@router.patch("/adapters/{adapter_id}")
def update_adapter(
    adapter_id: int, body: AdapterUpdate, user: CurrentUser, session: DbSession
) -> AdapterPublic:
    """Change visibility, licence, description, language or task of your adapter."""
    adapter = adapters.update(
        session,
        user,
        adapter_id,
        visibility=body.visibility,
        licence=body.licence,
        description=body.description,
        language=body.language,
        task=body.task,
    )
    return AdapterPublic.model_validate(adapter)


@router.get("/adapters/{adapter_id}/versions")
def list_versions(adapter_id: int, user: CurrentUser, session: DbSession) -> list[VersionPublic]:
    """Trained versions, oldest first, with their metrics and lineage."""
    return [VersionPublic.model_validate(v) for v in adapters.versions(session, user, adapter_id)]


@router.get("/adapters/{adapter_id}/versions/{version}")
def get_version(
    adapter_id: int, version: int, user: CurrentUser, session: DbSession
) -> VersionPublic:
    """One version of an adapter you can see."""
    return VersionPublic.model_validate(adapters.get_version(session, user, adapter_id, version))


@router.get("/adapters/{adapter_id}/versions/{version}/download", response_class=Response)
def download_version(
    adapter_id: int, version: int, user: CurrentUser, session: DbSession
) -> Response:
    """The version's PEFT folder as a zip (safetensors weights, config, model card)."""
    name, data = exports.peft_zip(session, user, adapter_id, version)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/adapters/{adapter_id}/train", status_code=201)
def train_adapter(
    adapter_id: int,
    body: TrainRequest,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
    storage: AppStorage,
) -> JobPublic:
    """Queue training of a new version on one of your datasets; follow it as a job."""
    job = adapters.start_training(
        session,
        settings,
        storage,
        user,
        adapter_id,
        dataset_id=body.dataset_id,
        dataset_version=body.dataset_version,
        preset=body.preset,
        options=body.options.chosen(),
        parent_version=body.parent_version,
        extra={"remote_ok": True} if body.community_compute else None,
    )
    return JobPublic.model_validate(job)
