"""Bodies of the interoperability routes: importing an outside adapter, exports, hub pushes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from fastapi import UploadFile
from pydantic import BaseModel, Field, SecretStr

from loraloop.api.catalog_schemas import AdapterPublic, VersionPublic
from loraloop.api.schemas import Strict
from loraloop.catalog.exports import ExportView
from loraloop.catalog.huggingface import Pushed
from loraloop.catalog.imports import Imported, Target

__all__ = [
    "IMPORT_REQUEST_BODY",
    "ExportCreate",
    "ExportFilePublic",
    "ExportPublic",
    "HubImport",
    "ImportReportPublic",
    "ImportedPublic",
    "PushPublic",
    "PushRequest",
    "UploadImport",
]


class _TargetFields(Strict):
    """Where the import lands: ``adapter_id`` for a new version of your adapter, or ``name``
    and ``base_model_id`` for a new adapter."""

    adapter_id: int | None = Field(default=None, ge=1, description="Add a version to this one.")
    name: str | None = Field(
        default=None, max_length=64, description="A new adapter's name (1-64 letters, digits, .-_)."
    )
    base_model_id: int | None = Field(default=None, ge=1, description="The new adapter's base.")
    visibility: Literal["private", "public"] = "private"
    licence: str = Field(default="apache-2.0", max_length=40)
    description: str = Field(default="", max_length=4000)

    def target(self) -> Target:
        return Target(
            adapter_id=self.adapter_id,
            name=self.name,
            base_model_id=self.base_model_id,
            visibility=self.visibility,
            licence=self.licence,
            description=self.description,
        )


class UploadImport(_TargetFields):
    """The multipart form: the archive as ``file``, plus where it lands."""

    file: UploadFile = Field(description="A .zip, .tar, .tar.gz or .tgz of a PEFT adapter folder.")


class HubImport(_TargetFields):
    """A Hugging Face repo holding ``adapter_config.json`` and ``adapter_model.safetensors``."""

    hub_repo: str = Field(max_length=200, description="owner/name on the hub.")
    revision: str = Field(
        max_length=200, description="A commit hash (pins it; recommended) or a tag or branch."
    )
    token: SecretStr | None = Field(
        default=None, description="A read token for a private repo; used once, never stored."
    )


class ImportReportPublic(BaseModel):
    rank: int | None
    alpha: float | None
    targets: list[str] = Field(description="Base layers the adapter changes (q_proj, ...).")
    tensors: int
    parameters: int


class ImportedPublic(BaseModel):
    adapter: AdapterPublic
    version: VersionPublic
    report: ImportReportPublic

    @classmethod
    def of(cls, imported: Imported) -> ImportedPublic:
        report = imported.report
        return cls(
            adapter=AdapterPublic.model_validate(imported.adapter),
            version=VersionPublic.model_validate(imported.version),
            report=ImportReportPublic(
                rank=report.rank,
                alpha=report.alpha,
                targets=list(report.targets),
                tensors=report.tensor_count,
                parameters=report.parameters,
            ),
        )


class ExportCreate(Strict):
    format: Literal["merged", "gguf"] = Field(
        description="merged: a full safetensors model; gguf: one GGUF file and a Modelfile."
    )
    dtype: str | None = Field(
        default=None,
        max_length=16,
        description="merged: float32 (default), bfloat16 or float16; gguf: f16 (default) or f32.",
    )
    system: str | None = Field(
        default=None, max_length=4000, description="gguf only: the Modelfile's SYSTEM prompt."
    )


class ExportFilePublic(BaseModel):
    name: str
    size: int
    sha256: str
    url: str = Field(description="Download this file alone.")


class ExportPublic(BaseModel):
    id: int
    adapter_id: int
    version: int
    format: str
    options: dict[str, Any]
    status: str = Field(description="queued, leased, running, failed, cancelled or ready.")
    error: str | None
    job_id: int | None = Field(description="Follow it at /api/jobs/{job_id}.")
    files: list[ExportFilePublic]
    download_url: str | None = Field(description="Every file in one zip, once ready.")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, view: ExportView) -> ExportPublic:
        row = view.row
        base = f"/api/adapters/{row.adapter_id}/versions/{view.version}/exports/{row.id}/download"
        return cls(
            id=row.id,
            adapter_id=row.adapter_id,
            version=view.version,
            format=row.format,
            options=row.options,
            status=view.status,
            error=view.error,
            job_id=row.job_id,
            files=[
                ExportFilePublic(**f, url=f"{base}?file={quote(f['name'])}") for f in view.files
            ],
            download_url=base if view.status == "ready" else None,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


class PushRequest(Strict):
    repo_id: str = Field(max_length=200, description="owner/name; created if it does not exist.")
    token: SecretStr = Field(
        description="A hub token with write access; used for this push only, never stored."
    )
    private: bool = Field(default=True, description="A new repo is private unless this is false.")
    export_id: int | None = Field(
        default=None, ge=1, description="Push this ready export instead of the PEFT adapter."
    )
    commit_message: str | None = Field(default=None, min_length=1, max_length=500)


class PushPublic(BaseModel):
    repo_id: str
    url: str
    commit_url: str
    commit: str

    @classmethod
    def of(cls, pushed: Pushed) -> PushPublic:
        return cls(
            repo_id=pushed.repo_id,
            url=pushed.url,
            commit_url=pushed.commit_url,
            commit=pushed.commit,
        )


_TARGET_PROPERTIES: dict[str, Any] = {
    "adapter_id": {"type": "integer", "minimum": 1},
    "name": {"type": "string", "maxLength": 64},
    "base_model_id": {"type": "integer", "minimum": 1},
    "visibility": {"type": "string", "enum": ["private", "public"], "default": "private"},
    "licence": {"type": "string", "maxLength": 40, "default": "apache-2.0"},
    "description": {"type": "string", "maxLength": 4000, "default": ""},
}

#: The import's two bodies in the OpenAPI document (the route reads them itself, after
#: authentication, so an archive is never spooled for an anonymous caller).
IMPORT_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **_TARGET_PROPERTIES,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["hub_repo", "revision"],
                    "properties": {
                        "hub_repo": {"type": "string", "maxLength": 200},
                        "revision": {"type": "string", "maxLength": 200},
                        "token": {"type": "string", "format": "password", "writeOnly": True},
                        **_TARGET_PROPERTIES,
                    },
                }
            },
        },
    }
}
