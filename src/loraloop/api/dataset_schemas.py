"""Bodies of the dataset routes: the upload form, versions, rows, token statistics, previews."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, Field, field_validator

from loraloop.api.schemas import Public, Strict
from loraloop.datasets import service
from loraloop.datasets.formats import FORMATS, known_formats
from loraloop.db.tables import DatasetVersion
from loraloop.ml.chat import Segment, TokenStats

__all__ = [
    "UPLOAD_REQUEST_BODY",
    "DatasetDetail",
    "DatasetSummary",
    "DatasetUpload",
    "DatasetVersionPublic",
    "MessagePublic",
    "PreviewPublic",
    "RowPublic",
    "RowsPage",
    "SegmentPublic",
    "TokenStatsPublic",
    "VersionSummary",
]

#: How many untrainable example positions a stats answer lists (the count covers all).
SHOWN_UNTRAINABLE = 100


class DatasetUpload(Strict):
    """The fields of the multipart upload form; the name's rules are checked by the service."""

    file: UploadFile = Field(description="A JSON Lines file, UTF-8, one example per line.")
    name: str = Field(max_length=256, description="1-64 letters, digits, '.', '_' or '-'.")
    format: str | None = Field(
        default=None,
        max_length=64,
        description="A built-in format or one a plugin adds; default: recognised from the keys.",
    )
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)

    @field_validator("format")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        """Checked against the formats known now, so a plugin's format is accepted too."""
        if value is not None and value not in known_formats():
            raise ValueError(f"format must be one of {', '.join(known_formats())}")
        return value


#: The upload's body in the OpenAPI document (the route reads the form itself, see the route).
UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "minLength": 1, "maxLength": 64},
                        "format": {
                            "type": "string",
                            "description": "Default: recognised from the keys. The built-in "
                            "formats, or one a plugin adds (docs/plugins.md).",
                            "examples": list(FORMATS),
                        },
                        "validation_fraction": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "exclusiveMaximum": 1,
                            "default": 0.1,
                        },
                    },
                }
            }
        },
    }
}


class VersionSummary(Public):
    """A version's counts, as listed with its dataset."""

    id: int
    version: int
    format: str
    examples: int = Field(description="Examples kept after removing duplicates.")
    train_examples: int
    validation_examples: int
    duplicates_removed: int
    content_hash: str = Field(description="sha256 of the normalised examples, in any format.")
    created_at: datetime


class DatasetVersionPublic(VersionSummary):
    """A version with its dataset's name and its validation report."""

    dataset_id: int
    dataset_name: str
    raw_sha256: str
    report: dict[str, Any] = Field(
        description="format, bytes, uploaded_examples, examples, duplicates_removed, the first "
        "50 duplicates (line, duplicate_of, kind, similarity), near_threshold, split (train, "
        "validation, validation_fraction, seed, note), roles (turns per role), same_as_version."
    )

    @classmethod
    def of(cls, version: DatasetVersion, dataset_name: str) -> DatasetVersionPublic:
        data = VersionSummary.model_validate(version).model_dump()
        return cls(
            **data,
            dataset_id=version.dataset_id,
            dataset_name=dataset_name,
            raw_sha256=version.raw_sha256,
            report=version.report,
        )


class DatasetSummary(BaseModel):
    id: int
    name: str
    created_at: datetime
    latest: VersionSummary | None

    @classmethod
    def of(cls, summary: service.Summary) -> DatasetSummary:
        dataset, latest = summary
        return cls(
            id=dataset.id,
            name=dataset.name,
            created_at=dataset.created_at,
            latest=VersionSummary.model_validate(latest) if latest is not None else None,
        )


class DatasetDetail(BaseModel):
    id: int
    name: str
    created_at: datetime
    versions: list[VersionSummary] = Field(description="Oldest first.")

    @classmethod
    def of(cls, detail: service.Detail) -> DatasetDetail:
        dataset, versions = detail
        return cls(
            id=dataset.id,
            name=dataset.name,
            created_at=dataset.created_at,
            versions=[VersionSummary.model_validate(v) for v in versions],
        )


class MessagePublic(BaseModel):
    role: str
    content: str


class RowPublic(BaseModel):
    index: int = Field(description="Position in the split, from 0.")
    messages: list[MessagePublic]


class RowsPage(BaseModel):
    split: Literal["train", "validation"]
    offset: int
    total: int = Field(description="Examples in the split.")
    rows: list[RowPublic]

    @classmethod
    def of(cls, page: service.Page) -> RowsPage:
        rows = [
            RowPublic(index=page.offset + position, messages=[MessagePublic(**m) for m in row])
            for position, row in enumerate(page.rows)
        ]
        return cls(split=page.split, offset=page.offset, total=page.total, rows=rows)


class TokenStatsPublic(BaseModel):
    """Token counts of the training split; lengths are before truncation to ``max_length``."""

    base: int | None = Field(description="The base model whose tokenizer counted (None: default).")
    max_length: int
    count: int
    total_tokens: int
    trained_tokens: int = Field(description="Assistant tokens training sees, after truncation.")
    mean: float
    p50: int
    p95: int
    max: int
    exceeding: int = Field(description="Examples longer than max_length (cut from the right).")
    untrainable: list[int] = Field(
        description=f"Positions (first {SHOWN_UNTRAINABLE}) of examples left with no assistant "
        "token after truncation."
    )
    untrainable_total: int

    @classmethod
    def of(cls, stats: TokenStats, *, base: int | None, max_length: int) -> TokenStatsPublic:
        return cls(
            base=base,
            max_length=max_length,
            count=stats.count,
            total_tokens=stats.total_tokens,
            trained_tokens=stats.trained_tokens,
            mean=stats.mean,
            p50=stats.p50,
            p95=stats.p95,
            max=stats.max,
            exceeding=stats.exceeding,
            untrainable=stats.untrainable[:SHOWN_UNTRAINABLE],
            untrainable_total=len(stats.untrainable),
        )


class SegmentPublic(BaseModel):
    text: str
    trained: bool = Field(description="True where the loss is computed (assistant tokens).")


class PreviewPublic(BaseModel):
    split: Literal["train", "validation"]
    index: int
    max_length: int
    segments: list[SegmentPublic] = Field(
        description="The rendered conversation up to max_length tokens, in trained and masked runs."
    )

    @classmethod
    def of(
        cls,
        segments: list[Segment],
        *,
        split: Literal["train", "validation"],
        index: int,
        max_length: int,
    ) -> PreviewPublic:
        return cls(
            split=split,
            index=index,
            max_length=max_length,
            segments=[SegmentPublic(text=s.text, trained=s.trained) for s in segments],
        )
