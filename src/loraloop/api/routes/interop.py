"""Interoperability: import an adapter made elsewhere, export versions, push to the hub.

::

    POST   /api/adapters/import                                   archive upload or hub repo
    POST   /api/adapters/{id}/versions/{v}/exports                {format: merged|gguf} -> job
    GET    /api/adapters/{id}/versions/{v}/exports[/{export_id}]  status and files
    GET    /api/adapters/{id}/versions/{v}/exports/{export_id}/download[?file=NAME]
    DELETE /api/adapters/{id}/versions/{v}/exports/{export_id}
    POST   /api/adapters/{id}/versions/{v}/push                   {repo_id, token} -> commit

The import is exempt from the global body limit (``api/app.py``) and enforces its own while
the archive streams in; its body is read here, after authentication. Every route but the
import works on an adapter of yours: another user's id is "not found", like a missing one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as FormFile
from starlette.types import Message, Receive

from loraloop.api.deps import AppDatabase, AppSettings, CurrentUser, DbSession
from loraloop.api.interop_schemas import (
    IMPORT_REQUEST_BODY,
    ExportCreate,
    ExportPublic,
    HubImport,
    ImportedPublic,
    PushPublic,
    PushRequest,
    UploadImport,
)
from loraloop.catalog import exports, imports, pushes
from loraloop.config import Settings
from loraloop.errors import InvalidRequest, PayloadTooLarge

router = APIRouter(prefix="/api/adapters", tags=["interop"])

_JSON_BYTES = 64 * 1024
_FORM_OVERHEAD = 64 * 1024
_FIELD_BYTES = 16 * 1024
_CHUNK = 1 << 20

FileName = Annotated[
    str | None, Query(max_length=200, description="One file of the export; default: a zip.")
]


@router.post("/import", status_code=201, openapi_extra=IMPORT_REQUEST_BODY)
async def import_adapter(
    request: Request, user: CurrentUser, db: AppDatabase, settings: AppSettings
) -> ImportedPublic:
    """Import a PEFT adapter made elsewhere as a new adapter, or as the next version of yours:
    a multipart upload of a .zip/.tar(.gz) archive (``file``), or JSON ``{hub_repo, revision}``
    for a Hugging Face repo. It is checked against the base model's shapes first; a 400 lists
    every problem, and nothing is kept."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with _upload_form(request, settings) as form:
            source = imports.Upload(form.file.filename or "upload", _chunks(form.file))
            result = await run_in_threadpool(
                imports.import_adapter, db, settings, user, source, form.target()
            )
    elif kind == "application/json":
        body = _validated(HubImport, await _small_body(request))
        token = body.token.get_secret_value() if body.token is not None else None
        hub = imports.HubSource(body.hub_repo, body.revision, token)
        result = await run_in_threadpool(
            imports.import_adapter, db, settings, user, hub, body.target()
        )
    else:
        raise InvalidRequest(
            "send the archive as multipart/form-data (field 'file'), or JSON "
            '{"hub_repo": "owner/name", "revision": "<commit>"} for a hub repo',
            code="unsupported_media_type",
            param="content-type",
        )
    return ImportedPublic.of(result)


@router.post("/{adapter_id}/versions/{version}/exports", status_code=201)
def create_export(
    adapter_id: int,
    version: int,
    body: ExportCreate,
    response: Response,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> ExportPublic:
    """Queue a merged-model or GGUF export of your version (follow its ``job_id``); the same
    export already made or on its way is returned instead, with 200."""
    view, created = exports.start(
        session,
        settings,
        user,
        adapter_id,
        version,
        format=body.format,
        dtype=body.dtype,
        system=body.system,
    )
    if not created:
        response.status_code = 200
    return ExportPublic.of(view)


@router.get("/{adapter_id}/versions/{version}/exports")
def list_exports(
    adapter_id: int, version: int, user: CurrentUser, session: DbSession
) -> list[ExportPublic]:
    """Exports of your version, oldest first, with their status and files."""
    views = exports.list_for_version(session, user, adapter_id, version)
    return [ExportPublic.of(v) for v in views]


@router.get("/{adapter_id}/versions/{version}/exports/{export_id}")
def get_export(
    adapter_id: int, version: int, export_id: int, user: CurrentUser, session: DbSession
) -> ExportPublic:
    """One export of your version."""
    return ExportPublic.of(exports.get(session, user, adapter_id, version, export_id))


@router.get(
    "/{adapter_id}/versions/{version}/exports/{export_id}/download", response_class=Response
)
def download_export(
    adapter_id: int,
    version: int,
    export_id: int,
    user: CurrentUser,
    session: DbSession,
    file: FileName = None,
) -> Response:
    """A ready export: one file with ``?file=NAME`` (the .gguf, the Modelfile...), or else all
    of them in one zip, streamed as it is made."""
    view = exports.get(session, user, adapter_id, version, export_id)
    if file is not None:
        path = exports.file_path(view, file)
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")
    name = f"{view.label}-{view.row.format}"
    return StreamingResponse(
        exports.zip_stream(view, name),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


@router.delete("/{adapter_id}/versions/{version}/exports/{export_id}", status_code=204)
def delete_export(
    adapter_id: int, version: int, export_id: int, user: CurrentUser, session: DbSession
) -> Response:
    """Delete an export and its files (cancel its job first while it runs)."""
    exports.delete(session, user, adapter_id, version, export_id)
    return Response(status_code=204)


@router.post("/{adapter_id}/versions/{version}/push")
def push_version(
    adapter_id: int,
    version: int,
    body: PushRequest,
    user: CurrentUser,
    db: AppDatabase,
    settings: AppSettings,
) -> PushPublic:
    """Push your version's PEFT adapter (or a ready export) to a Hugging Face repo with your
    token; the token is used for this request only and never stored or logged."""
    pushed = pushes.push(
        db,
        settings,
        user,
        adapter_id,
        version,
        repo_id=body.repo_id,
        token=body.token.get_secret_value(),
        private=body.private,
        export_id=body.export_id,
        commit_message=body.commit_message,
    )
    return PushPublic.of(pushed)


# ── reading the import's body ──────────────────────────────────────────────────────────────


_Body = TypeVar("_Body", HubImport, UploadImport)


def _validated(model: type[_Body], data: bytes | Mapping[str, object]) -> _Body:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None


async def _small_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _JSON_BYTES:
            raise PayloadTooLarge(f"a JSON import request has at most {_JSON_BYTES} bytes")
    return bytes(body)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than the {limit} byte limit (max_adapter_upload_bytes)",
        param="file",
    )


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses the request once its body passes ``limit`` bytes."""
    seen = 0

    async def limited_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit - _FORM_OVERHEAD)
        return message

    return limited_receive


@asynccontextmanager
async def _upload_form(request: Request, settings: Settings) -> AsyncIterator[UploadImport]:
    """The validated form; the archive waits in a spooled temporary file (on disk past 1 MiB)
    that is closed when the import is done."""
    limit = settings.max_adapter_upload_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(settings.max_adapter_upload_bytes)
    limited = Request(request.scope, _limited(request.receive, limit))
    async with limited.form(max_files=1, max_fields=8, max_part_size=_FIELD_BYTES) as form:
        fields = {key: value for key, value in form.multi_items() if value != ""}
        if not isinstance(fields.get("file"), FormFile):
            raise InvalidRequest(
                "the form needs the adapter archive as the file field 'file'", param="file"
            )
        yield _validated(UploadImport, fields)


def _chunks(file: UploadFile) -> Iterator[bytes]:
    return iter(lambda: file.file.read(_CHUNK), b"")
