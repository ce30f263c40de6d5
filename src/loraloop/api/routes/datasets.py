"""Datasets of the signed-in user: upload a JSON Lines file as a new version, then browse it.

The upload is exempt from the global body limit (``api/app.py``) and enforces its own, larger
one while the body streams in. The form is read here, after authentication, rather than by
FastAPI's ``File()`` parameters, which would spool the whole body before anyone is known.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import Message, Receive

from loraloop.api.dataset_schemas import (
    UPLOAD_REQUEST_BODY,
    DatasetDetail,
    DatasetSummary,
    DatasetUpload,
    DatasetVersionPublic,
    PreviewPublic,
    RowsPage,
    TokenStatsPublic,
)
from loraloop.api.deps import AppSettings, AppStorage, CurrentUser, DbSession
from loraloop.datasets import service
from loraloop.datasets.service import SplitName
from loraloop.errors import PayloadTooLarge

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

#: Room for the multipart framing and the small fields on top of the file's own limit.
_FORM_OVERHEAD = 64 * 1024
_FIELD_BYTES = 4096
_CHUNK = 1 << 20

Base = Annotated[
    int | None, Query(description="Base model id whose tokenizer to use; default: the default.")
]
MaxLength = Annotated[int, Query(ge=16, le=32768, description="Tokens kept per example.")]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than the limit of {limit} bytes ({limit / 1048576:.1f} MiB); "
        "split it into smaller files",
        param="file",
    )


def _limited(receive: Receive, max_file_bytes: int) -> Receive:
    """``receive`` that refuses the request as soon as its body is too large for a form with a
    file of ``max_file_bytes``."""
    limit = max_file_bytes + _FORM_OVERHEAD
    seen = 0

    async def limited_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(max_file_bytes)
        return message

    return limited_receive


async def _upload_form(
    request: Request, user: CurrentUser, settings: AppSettings
) -> AsyncIterator[DatasetUpload]:
    """The validated form, read only once ``user`` is known; the file waits in a spooled
    temporary file (on disk past 1 MiB) that is closed after the response."""
    max_file_bytes = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_file_bytes + _FORM_OVERHEAD:
        raise _too_large(max_file_bytes)
    limited = Request(request.scope, _limited(request.receive, max_file_bytes))
    async with limited.form(max_files=1, max_fields=8, max_part_size=_FIELD_BYTES) as form:
        fields = {key: value for key, value in form.multi_items() if value != ""}
        try:
            upload = DatasetUpload.model_validate(fields)
        except ValidationError as error:
            raise RequestValidationError(error.errors()) from None
        yield upload


UploadForm = Annotated[DatasetUpload, Depends(_upload_form)]


def _chunks(file: UploadFile) -> Iterator[bytes]:
    return iter(lambda: file.file.read(_CHUNK), b"")


@router.post("", status_code=201, openapi_extra=UPLOAD_REQUEST_BODY)
def upload_dataset(
    form: UploadForm,
    user: CurrentUser,
    session: DbSession,
    storage: AppStorage,
    settings: AppSettings,
) -> DatasetVersionPublic:
    """Upload a JSON Lines file (multipart form: ``file``, ``name``, optional ``format`` and
    ``validation_fraction``) as the next version of your dataset of that name. A bad file is a
    400 that lists every problem with its line number; nothing is stored."""
    version = service.upload(
        session,
        storage,
        user,
        name=form.name,
        chunks=_chunks(form.file),
        format=form.format,
        validation_fraction=form.validation_fraction,
        max_bytes=settings.max_upload_bytes,
    )
    return DatasetVersionPublic.of(version, form.name)


@router.get("")
def list_datasets(user: CurrentUser, session: DbSession) -> list[DatasetSummary]:
    """Your datasets, oldest first, each with its latest version's counts."""
    return [DatasetSummary.of(summary) for summary in service.list_own(session, user)]


@router.get("/{dataset_id}")
def get_dataset(dataset_id: int, user: CurrentUser, session: DbSession) -> DatasetDetail:
    """One of your datasets with all its versions (404 for anyone else's)."""
    return DatasetDetail.of(service.detail(session, user, dataset_id))


@router.get("/{dataset_id}/versions/{version}")
def get_dataset_version(
    dataset_id: int, version: int, user: CurrentUser, session: DbSession
) -> DatasetVersionPublic:
    """One version of your dataset with its validation report."""
    found = service.find_version(session, user, dataset_id, version)
    return DatasetVersionPublic.of(found.version, found.dataset.name)


@router.get("/{dataset_id}/versions/{version}/rows")
def list_dataset_rows(
    dataset_id: int,
    version: int,
    user: CurrentUser,
    session: DbSession,
    storage: AppStorage,
    split: SplitName = "train",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> RowsPage:
    """A page of normalised examples (``messages``) of the train or validation split."""
    page = service.version_rows(
        session, storage, user, dataset_id, version, split=split, offset=offset, limit=limit
    )
    return RowsPage.of(page)


@router.get("/{dataset_id}/versions/{version}/stats")
def dataset_token_stats(
    dataset_id: int,
    version: int,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
    storage: AppStorage,
    base: Base = None,
    max_length: MaxLength = 1024,
) -> TokenStatsPublic:
    """Token lengths of the training split under a base model's tokenizer and chat template,
    and what truncation to ``max_length`` would cost."""
    stats = service.version_stats(
        session, settings, storage, user, dataset_id, version, base=base, max_length=max_length
    )
    return TokenStatsPublic.of(stats, base=base, max_length=max_length)


@router.get("/{dataset_id}/versions/{version}/preview")
def preview_dataset_example(
    dataset_id: int,
    version: int,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
    storage: AppStorage,
    index: Annotated[int, Query(ge=0)] = 0,
    split: SplitName = "train",
    base: Base = None,
    max_length: MaxLength = 1024,
) -> PreviewPublic:
    """One example as the base model's chat template renders it, in runs that are trained
    (the assistant's turns) or masked."""
    segments = service.version_preview(
        session,
        settings,
        storage,
        user,
        dataset_id,
        version,
        base=base,
        index=index,
        max_length=max_length,
        split=split,
    )
    return PreviewPublic.of(segments, split=split, index=index, max_length=max_length)
