"""Bodies of the base model and adapter routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from loraloop.api.schemas import Public, Strict

__all__ = [
    "AdapterCreate",
    "AdapterPublic",
    "AdapterUpdate",
    "BaseModelCreate",
    "BaseModelPublic",
    "LoraOptions",
    "SuggestionPublic",
    "TrainOptions",
    "TrainRequest",
    "VersionPublic",
]


class BaseModelPublic(Public):
    id: int
    name: str
    source: str
    hub_id: str | None
    revision: str | None
    architecture: str
    parameters: int
    context_length: int
    chat_template: str | None
    sha256: str
    is_default: bool


class BaseModelCreate(Strict):
    hub_id: str | None = Field(
        default=None, max_length=200, description="e.g. Qwen/Qwen2.5-0.5B-Instruct"
    )
    revision: str | None = Field(default=None, max_length=80, description="A pinned commit or tag.")
    local_path: str | None = Field(default=None, max_length=500)


class AdapterCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    base_model_id: int
    visibility: Literal["private", "public"] = "private"
    licence: str = Field(default="apache-2.0", max_length=40)
    description: str = Field(default="", max_length=4000)
    language: str = Field(default="other", max_length=16, description="See GET /api/hub/facets.")
    task: str = Field(default="other", max_length=24, description="See GET /api/hub/facets.")


class AdapterUpdate(Strict):
    visibility: Literal["private", "public"] | None = None
    licence: str | None = Field(default=None, max_length=40)
    description: str | None = Field(default=None, max_length=4000)
    language: str | None = Field(default=None, max_length=16)
    task: str | None = Field(default=None, max_length=24)


class AdapterPublic(Public):
    id: int
    owner_id: int
    name: str
    base_model_id: int
    visibility: str
    licence: str
    description: str
    created_at: datetime
    language: str
    task: str
    forked_from_version_id: int | None


class VersionPublic(Public):
    id: int
    adapter_id: int
    version: int
    job_id: int | None
    dataset_version_id: int | None
    parent_version_id: int | None
    sha256: str
    spec: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime


class LoraOptions(Strict):
    rank: int | None = Field(default=None, ge=1, le=256)
    alpha: int | None = Field(default=None, ge=1, le=1024)
    dropout: float | None = Field(default=None, ge=0, le=0.5)
    targets: Literal["attention", "all-linear"] | None = None


class TrainOptions(Strict):
    """Advanced settings; anything left out comes from the preset."""

    lora: LoraOptions = Field(default_factory=LoraOptions)
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    schedule: Literal["cosine", "linear", "constant"] | None = None
    warmup_ratio: float | None = Field(default=None, ge=0, le=0.5)
    epochs: float | None = Field(default=None, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    max_length: int | None = Field(default=None, ge=16, le=32768)
    rows_per_batch: int | None = Field(default=None, ge=1, le=512)
    grad_accum: int | None = Field(default=None, ge=1, le=1024)
    eval_every: int | None = Field(default=None, ge=1)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=100)
    checkpoint_every: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**31)
    precision: Literal["auto", "fp32", "bf16"] | None = None
    qlora: bool | None = None

    def chosen(self) -> dict[str, Any]:
        """Only what the caller set, so the preset fills the rest."""
        data = self.model_dump(exclude_none=True)
        data["lora"] = {k: v for k, v in data.get("lora", {}).items() if v is not None}
        return data


class TrainRequest(Strict):
    dataset_id: int
    dataset_version: int | None = Field(default=None, ge=1, description="Default: the latest.")
    preset: Literal["quick", "balanced", "thorough"] = "balanced"
    options: TrainOptions = Field(default_factory=TrainOptions)
    parent_version: int | None = Field(default=None, ge=1)
    community_compute: bool = Field(
        default=False,
        description="Let compute providers' nodes train it: they receive the training split "
        "(never the validation split, which checks their work).",
    )


class SuggestionPublic(Public):
    id: str
    parameters: int
    licence: str
    note: str
