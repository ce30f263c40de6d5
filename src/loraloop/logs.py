"""Logging set-up: one line per record, as text for people or JSON for a log collector, each
carrying the id of the request it belongs to; access logs never carry query strings, which may
hold one-time codes.

    request ──RequestIds middleware──▶ REQUEST_ID (a contextvar) ──RequestIdFilter──▶ record
    record ──TextFormatter | JsonFormatter──▶ stderr

The contextvar is set in the task that serves the request, so every record logged while
serving it (uvicorn's access line included) names the same id the response header shows.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RedactQuery",
    "RequestIdFilter",
    "TextFormatter",
    "configure",
    "logging_config",
]

LogFormat = Literal["text", "json"]

#: The id of the request being served in this context (None outside a request).
REQUEST_ID: ContextVar[str | None] = ContextVar("loraloop_request_id", default=None)

# Attributes every LogRecord has; whatever else a record carries came from ``extra=``.
_STANDARD = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
    | {"message", "asctime", "request_id", "taskName"}
)
_ACCESS_ARGS = 5  # uvicorn.access: (client, method, path, http version, status)


class RedactQuery(logging.Filter):
    """Cut the query string from uvicorn access-log records (``GET /signup?invite=...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, query = args[2].partition("?")
            if query:
                record.args = (*args[:2], path + "?[redacted]", *args[3:])
        return True


class RequestIdFilter(logging.Filter):
    """Stamp ``record.request_id`` from :data:`REQUEST_ID`, so formatters can rely on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request id]``; the id only while serving a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")  # the id ends the message, not a traceback
        return f"{first} [{request_id}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``request_id``, the record's ``extra=`` fields, and ``exception`` with its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        entry.update(_access_fields(record))
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields a collector can filter on (the path already redacted)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple):
        return {}
    if len(args) != _ACCESS_ARGS:
        return {}
    return {"method": args[1], "path": args[2], "status": args[4]}


def logging_config(log_format: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary: every logger (uvicorn's too) writes
    through one stderr handler in ``log_format``."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "redact_query": {"()": RedactQuery},
        },
        "formatters": {"main": {"()": formatter}},
        "handlers": {
            "main": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # uvicorn's own loggers propagate to the root handler instead of keeping theirs
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": level, "filters": ["redact_query"]},
        },
        "root": {"handlers": ["main"], "level": level},
    }


def configure(log_format: LogFormat = "text", level: str = "INFO") -> None:
    """Set up logging for the server process; run uvicorn with ``log_config=None`` after it,
    or uvicorn replaces its own loggers' handlers (the query filter stays either way)."""
    logging.config.dictConfig(logging_config(log_format, level))
