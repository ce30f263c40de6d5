"""Bad input gets a 4xx in the one error shape, with a message a person can act on."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loraloop.db.engine import Database
from loraloop.errors import LoraloopError
from tests.factories import make_user, sign_in

JSON = {"content-type": "application/json"}


class _Chunks:
    """A body without Content-Length (chunked), re-iterable for every parametrised run."""

    def __init__(self, size: int):
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.size // 65536 + 1):
            yield b"x" * 65536


CASES = [
    # name, method, path, kwargs, status, words expected in the message
    (
        "malformed json",
        "POST",
        "/api/jobs",
        {"content": b"{'kind':", "headers": JSON},
        400,
        "not valid JSON",
    ),
    (
        "unknown field",
        "POST",
        "/api/jobs",
        {"json": {"kind": "selftest", "colour": "red"}},
        400,
        "unknown field 'colour'",
    ),
    ("missing field", "POST", "/api/keys", {"json": {}}, 400, "'name' is required"),
    (
        "wrong type",
        "POST",
        "/api/jobs",
        {"json": {"kind": "selftest", "priority": "high"}},
        400,
        "priority",
    ),
    ("unknown job kind", "POST", "/api/jobs", {"json": {"kind": "mine-bitcoin"}}, 400, "selftest"),
    (
        "bad payload",
        "POST",
        "/api/jobs",
        {"json": {"kind": "selftest", "payload": {"steps": 0, "x": 1}}},
        400,
        "steps 0",
    ),
    (
        "oversized body",
        "POST",
        "/api/jobs",
        {"content": b"x" * 1_100_000, "headers": JSON},
        413,
        "byte limit",
    ),
    (
        "oversized stream",
        "POST",
        "/api/jobs",
        {"content": _Chunks(1_100_000), "headers": JSON},
        413,
        "byte limit",
    ),
    ("bad query", "GET", "/api/jobs", {"params": {"limit": "lots"}}, 400, "limit"),
    ("bad status filter", "GET", "/api/jobs", {"params": {"status": "sleeping"}}, 400, "status"),
    ("bad path id", "GET", "/api/jobs/abc", {}, 400, "job_id"),
    ("unknown route", "GET", "/api/nothing-here", {}, 404, "/docs"),
    ("wrong method", "PUT", "/api/keys", {"json": {}}, 405, "PUT is not allowed on /api/keys"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "kwargs", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(
    client: TestClient,
    db: Database,
    name: str,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    words: str,
) -> None:
    sign_in(client, make_user(db))
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert words in error["message"]
    assert client.get("/api/jobs").json() == []  # nothing was created on the way


def test_every_error_class_has_the_shape() -> None:
    def subclasses(cls: type[LoraloopError]) -> list[type[LoraloopError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    # errors whose constructor takes more than a message
    examples: dict[str, Callable[[Any], LoraloopError]] = {
        "RateLimited": lambda cls: cls("slow down", retry_after=1),
        "ContextTooLong": lambda cls: cls(100, 50, 120),
    }
    for cls in subclasses(LoraloopError):
        error = examples.get(cls.__name__, lambda c: c("something went wrong"))(cls)
        assert set(error.to_body()["error"]) == {"message", "type", "code", "param"}
        assert 400 <= cls.status_code < 600


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/keys" in spec["paths"]
    assert "/healthz" in spec["paths"]
