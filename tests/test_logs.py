"""Logs: query strings never reach them, JSON lines parse and carry the request id that the
response header shows (uvicorn's access line included), and a bad caller id is replaced."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loraloop import logs
from loraloop.api.request_ids import sane
from loraloop.logs import JsonFormatter, RedactQuery, RequestIdFilter, TextFormatter


def test_access_log_hides_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/signup?invite=secret-code", "1.1", 200),
        None,
    )
    assert RedactQuery().filter(record)
    message = record.getMessage()
    assert "secret-code" not in message
    assert "/signup?[redacted]" in message


def test_paths_without_query_are_untouched() -> None:
    args = ("127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s %s %s %d", args, None
    )
    RedactQuery().filter(record)
    assert record.args == args


def _record(message: str = "hello %s", args: Any = ("world",), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("loraloop.test", logging.WARNING, __file__, 7, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_level_logger_message_and_extra_fields() -> None:
    token = logs.REQUEST_ID.set("req-1")
    try:
        record = _record(job_id=42, path=None)
        RequestIdFilter().filter(record)
    finally:
        logs.REQUEST_ID.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "loraloop.test"
    assert entry["message"] == "hello world"
    assert entry["request_id"] == "req-1"
    assert entry["job_id"] == 42
    assert entry["time"].endswith("+00:00")
    assert not {"args", "msg", "levelno"} & entry.keys()


def test_json_lines_hold_the_traceback_in_one_line() -> None:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        record = _record(exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: broken" in json.loads(line)["exception"]


def test_text_lines_end_with_the_request_id_only_inside_a_request() -> None:
    outside = _record()
    RequestIdFilter().filter(outside)
    assert TextFormatter().format(outside).endswith("loraloop.test: hello world")
    inside = _record(request_id="abc")
    assert TextFormatter().format(inside).endswith("hello world [abc]")


# (case, the caller's X-Request-ID, whether it is kept)
CALLER_IDS = [
    ("a sane id", "trace-01.A_b", True),
    ("64 characters", "a" * 64, True),
    ("65 characters", "a" * 65, False),
    ("a space", "two words", False),
    ("a slash", "a/b", False),
    ("markup", "<script>", False),
    ("empty", "", False),
]


@pytest.mark.parametrize(("case", "given", "kept"), CALLER_IDS, ids=[c[0] for c in CALLER_IDS])
def test_a_caller_id_is_kept_only_when_sane(
    client: TestClient, case: str, given: str, kept: bool
) -> None:
    assert sane(given) is kept, case
    answered = client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"]
    assert (answered == given) is kept
    assert sane(answered)


def test_every_response_gets_its_own_id(client: TestClient) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """JSON lines from every logger into a buffer, as ``logs.configure("json")`` sets them up
    (without its ``dictConfig``, which would close pytest's own handlers); afterwards each
    logger is put back. Yields a function returning the JSON lines so far."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    # an earlier uvicorn in this process may have stopped its loggers from propagating
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    root, access = loggers[0], loggers[2]
    redact = RedactQuery()
    root.addHandler(handler)
    access.addFilter(redact)
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.propagate = True
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        access.removeFilter(redact)
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.setLevel(level)
            logger.propagate = propagate


def test_configure_writes_json_lines_to_stderr() -> None:
    """``logs.configure`` itself, in a fresh interpreter as ``loraloop up`` runs it."""
    script = (
        "import logging; from loraloop import logs; logs.configure('json'); "
        "logging.getLogger('loraloop.probe').info('ready %s', 1, extra={'port': 8000}); "
        "logging.getLogger('uvicorn.access').info("
        "'%s - \"%s %s HTTP/%s\" %d', '127.0.0.1:1', 'GET', '/signup?invite=code', '1.1', 200)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    probe, access = [json.loads(line) for line in done.stderr.splitlines()]
    assert probe["message"] == "ready 1"
    assert probe["port"] == 8000
    assert probe["request_id"] is None
    assert access["path"] == "/signup?[redacted]"
    assert "invite=code" not in done.stderr


def test_text_is_the_default_format() -> None:
    config = logs.logging_config()
    assert config["formatters"]["main"]["()"] is TextFormatter
    assert logs.logging_config("json")["formatters"]["main"]["()"] is JsonFormatter


def test_an_unhandled_error_is_logged_under_the_id_the_client_sees(
    app: FastAPI, json_logs: Any
) -> None:
    def explode() -> None:
        """Fails on purpose."""
        raise RuntimeError("a bug")

    app.add_api_route("/api/test-explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/test-explode", headers={"X-Request-ID": "bug-report-7"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "bug-report-7"
    assert "bug-report-7" in response.json()["error"]["message"]
    [entry] = [e for e in json_logs() if e["logger"] == "loraloop.api.errors"]
    assert entry["level"] == "ERROR"
    assert entry["request_id"] == "bug-report-7"
    assert "RuntimeError: a bug" in entry["exception"]


def test_records_logged_while_serving_carry_the_request_id(app: FastAPI, json_logs: Any) -> None:
    def chatty() -> dict[str, str]:
        """Logs one line."""
        logging.getLogger("loraloop.test").info("serving", extra={"answer": 42})
        return {}

    app.add_api_route("/api/test-chatty", chatty)
    with TestClient(app) as client:
        response = client.get("/api/test-chatty")
    [entry] = [e for e in json_logs() if e["logger"] == "loraloop.test"]
    assert entry["request_id"] == response.headers["X-Request-ID"]
    assert entry["answer"] == 42


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_uvicorns_access_line_carries_the_id_and_no_query(app: FastAPI, json_logs: Any) -> None:
    """The way ``loraloop up`` runs it: ``logs.configure`` then uvicorn with no config."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/healthz?invite=secret-code"
        response = httpx.get(url, headers={"X-Request-ID": "from-the-proxy"})
        bad = httpx.get(url, headers={"X-Request-ID": "not sane!"})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    access = [e for e in json_logs() if e["logger"] == "uvicorn.access"]
    assert [e["request_id"] for e in access] == [
        response.headers["X-Request-ID"],
        bad.headers["X-Request-ID"],
    ]
    assert access[0]["request_id"] == "from-the-proxy"
    assert access[1]["request_id"] != "not sane!"
    assert access[0]["status"] == 200
    assert access[0]["path"] == "/healthz?[redacted]"
    assert not [e for e in access if "secret-code" in json.dumps(e)]
