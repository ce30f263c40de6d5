"""Web pages (placeholder until the web shell lands)."""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Register pages, static files and the HTML error renderer on ``app``."""
