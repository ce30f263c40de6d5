"""Logging set-up: access logs never carry query strings, which may hold one-time codes."""

from __future__ import annotations

import logging

__all__ = ["RedactQuery", "configure"]


class RedactQuery(logging.Filter):
    """Cut the query string from uvicorn access-log records (``GET /signup?invite=...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, query = args[2].partition("?")
            if query:
                record.args = (*args[:2], path + "?[redacted]", *args[3:])
        return True


def configure() -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
