"""Bodies of the feedback routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from loraloop.api.schemas import Public, Strict

__all__ = ["FeedbackCreate", "FeedbackPublic"]


class FeedbackCreate(Strict):
    trace_id: str = Field(
        min_length=1, max_length=40, description="The completion id /v1 returned (chatcmpl-…)."
    )
    rating: int | None = Field(default=None, ge=-1, le=5, description="thumbs: -1 or 1; stars: 1-5")
    scale: Literal["thumbs", "stars"] = "thumbs"
    correction: str | None = Field(default=None, max_length=20_000, description="A better answer.")
    tags: list[str] = Field(default_factory=list, max_length=10)
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackPublic(Public):
    id: int
    trace_id: str
    rating: int | None
    scale: str
    correction: str | None
    tags: list[str]
    comment: str | None
    created_at: datetime
