"""The dataset REST API: multipart uploads, versions, rows, token statistics and previews."""

from __future__ import annotations

import asyncio
import json
import pickle
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.types import Message

from loraloop.db.engine import Database
from loraloop.db.tables import BaseModel, Dataset, DatasetVersion
from loraloop.testing import make_tiny_model
from tests.factories import make_base_model, make_dataset, make_key, make_user, sign_in

SAMPLES = Path(__file__).parent / "datasets" / "samples"
FORMATS = ["messages", "alpaca", "sharegpt", "prompt_completion"]


def _jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


def _chat(question: str, answer: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def _many(count: int, pad: int = 0) -> bytes:
    """``count`` distinct examples, each padded by ``pad`` characters."""
    filler = "x" * pad
    return _jsonl(
        *(
            _chat(f"Question {i}: {i * 7919}? {filler}", f"Answer {i**3} it is")
            for i in range(count)
        )
    )


def _post(client: TestClient, body: bytes, **fields: str) -> Any:
    fields.setdefault("name", "support")
    return client.post(
        "/api/datasets",
        files={"file": ("data.jsonl", body, "application/jsonl")},
        data=fields,
    )


def _counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        datasets = session.scalar(select(func.count()).select_from(Dataset))
        versions = session.scalar(select(func.count()).select_from(DatasetVersion))
    return int(datasets or 0), int(versions or 0)


def _stored_files(app: FastAPI) -> list[Path]:
    root: Path = app.state.storage.root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("fmt", FORMATS)
def test_upload_each_format_twice_makes_two_versions(
    client: TestClient, db: Database, fmt: str
) -> None:
    sign_in(client, make_user(db))
    body = (SAMPLES / f"{fmt}.jsonl").read_bytes()
    first = _post(client, body, name=f"faq-{fmt}")
    assert first.status_code == 201, first.text
    second = _post(client, body, name=f"faq-{fmt}")
    assert second.status_code == 201, second.text
    one, two = first.json(), second.json()
    assert (one["version"], two["version"]) == (1, 2)
    assert one["dataset_name"] == f"faq-{fmt}"
    assert one["dataset_id"] == two["dataset_id"]
    assert one["format"] == one["report"]["format"] == fmt
    assert (one["examples"], one["train_examples"], one["validation_examples"]) == (3, 3, 0)
    assert one["report"]["roles"] == {"system": 0, "user": 3, "assistant": 3}
    assert two["report"]["same_as_version"] == 1
    listed = client.get("/api/datasets").json()
    assert [(d["name"], d["latest"]["version"]) for d in listed] == [(f"faq-{fmt}", 2)]
    detail = client.get(f"/api/datasets/{one['dataset_id']}").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    again = client.get(f"/api/datasets/{one['dataset_id']}/versions/1").json()
    assert again == one


def _line_17_broken() -> bytes:
    lines = _many(20).splitlines(keepends=True)
    lines[16] = b'{"messages": [{"role": "user", "content": "hi"}\n'
    return b"".join(lines)


class _Unpickled:
    """Unpickling this would create ``marker``; its absence proves no pickle was loaded."""

    marker = Path(tempfile.gettempdir()) / "loraloop-api-pickle-was-loaded"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


BAD_UPLOADS: list[tuple[str, bytes, dict[str, str], int, str, list[str]]] = [
    # name, file, form fields, status, code, words in the message
    (
        "broken JSON on line 17",
        _line_17_broken(),
        {},
        400,
        "dataset_invalid",
        ["1 problem", "line 17: invalid JSON"],
    ),
    (
        "empty assistant turn",
        _jsonl(_chat("q", "a"), _chat("q2", "")),
        {},
        400,
        "dataset_invalid",
        ["line 2: messages[1].content: must not be empty (an empty assistant turn)"],
    ),
    (
        "not UTF-8",
        "質問,答え\n".encode("shift_jis"),
        {},
        400,
        "dataset_invalid",
        ["line 1: is not valid UTF-8", "save the file as UTF-8"],
    ),
    (
        "wrong format",
        (SAMPLES / "sharegpt.jsonl").read_bytes(),
        {"format": "alpaca"},
        400,
        "dataset_invalid",
        ["line 1: does not look like alpaca", "line 3:"],
    ),
    (
        "a pickle",
        pickle.dumps(_Unpickled()),
        {},
        400,
        "dataset_invalid",
        ["line 1: is not valid UTF-8"],
    ),
    (
        "bad name",
        _many(2),
        {"name": "my data/" + "x" * 60},
        400,
        "invalid_dataset_options",
        ["68 characters", "' '", "'/'"],
    ),
    ("unknown format", _many(2), {"format": "csv"}, 400, "invalid_request", ["format"]),
    (
        "validation fraction out of range",
        _many(2),
        {"validation_fraction": "1.5"},
        400,
        "invalid_request",
        ["validation_fraction"],
    ),
    ("unknown field", _many(2), {"colour": "red"}, 400, "invalid_request", ["'colour'"]),
]


@pytest.mark.parametrize(
    ("case", "body", "fields", "status", "code", "words"),
    BAD_UPLOADS,
    ids=[c[0] for c in BAD_UPLOADS],
)
def test_bad_uploads_are_precise_and_store_nothing(
    app: FastAPI,
    client: TestClient,
    db: Database,
    case: str,
    body: bytes,
    fields: dict[str, str],
    status: int,
    code: str,
    words: list[str],
) -> None:
    sign_in(client, make_user(db))
    response = _post(client, body, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    for word in words:
        assert word in error["message"]
    assert _counts(db) == (0, 0)
    assert _stored_files(app) == []
    assert client.get("/api/datasets").json() == []
    assert not _Unpickled.marker.exists()


def test_a_missing_file_is_named(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    response = client.post("/api/datasets", data={"name": "x"}, files={"other": ("a", b"b")})
    assert response.status_code == 400
    assert "'file' is required" in response.json()["error"]["message"]
    plain = client.post("/api/datasets", json={"name": "x"})
    assert plain.status_code == 400
    assert "'file' is required" in plain.json()["error"]["message"]


@pytest.fixture
def small_limit(app: FastAPI) -> int:
    app.state.settings = app.state.settings.model_copy(update={"max_upload_bytes": 100_000})
    return 100_000


def _multipart(body: bytes, boundary: str = "loraloop-boundary") -> tuple[list[bytes], str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunks = [head, *(body[i : i + 65536] for i in range(0, len(body), 65536)), tail]
    return chunks, f"multipart/form-data; boundary={boundary}"


def test_an_oversized_file_is_413(
    app: FastAPI, client: TestClient, db: Database, small_limit: int
) -> None:
    sign_in(client, make_user(db))
    declared = _post(client, _many(2000))  # Content-Length says it all at once
    assert declared.status_code == 413, declared.text
    assert f"limit of {small_limit} bytes" in declared.json()["error"]["message"]
    just_over = _many(800, pad=32)  # within the form's slack, past the file's own limit
    assert small_limit < len(just_over) < small_limit + 64 * 1024
    response = _post(client, just_over)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["param"] == "file"
    assert _counts(db) == (0, 0)
    assert _stored_files(app) == []


def test_an_oversized_stream_is_cut_off_while_it_streams(
    app: FastAPI, db: Database, small_limit: int
) -> None:
    """Driven at the ASGI level: the test client would read the whole body before sending."""
    key = make_key(db, make_user(db), scopes=["manage"])
    chunks, content_type = _multipart(_many(20_000))
    pending, sent, replies = list(chunks), 0, []

    async def receive() -> Message:
        nonlocal sent
        if not pending:
            return {"type": "http.disconnect"}
        sent += len(pending[0])
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    async def send(message: Message) -> None:
        replies.append(message)

    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", content_type.encode()),
        (b"authorization", f"Bearer {key}".encode()),
    ]  # no Content-Length: the body is chunked
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/datasets",
        "raw_path": b"/api/datasets",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    with ThreadPoolExecutor(1) as thread:  # a loop of its own, whatever else is running
        thread.submit(asyncio.run, app(scope, receive, send)).result()
    assert replies[0]["status"] == 413
    assert b"limit of 100000 bytes" in replies[1]["body"]
    assert sent < small_limit + 64 * 1024 + 2 * 65536  # it stopped reading early
    assert sum(map(len, chunks)) > 10 * sent
    assert _counts(db) == (0, 0)


def test_uploads_are_exempt_from_the_global_body_limit(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    body = _many(3000, pad=300)
    assert len(body) > 1_048_576  # the global limit (max_body_bytes)
    response = _post(client, body, validation_fraction="0.05")
    assert response.status_code == 201, response.text
    assert response.json()["validation_examples"] == 150
    too_big_json = client.post("/api/jobs", content=b"x" * 1_100_000)
    assert too_big_json.status_code == 413


def test_the_upload_needs_a_signed_in_user_with_csrf(client: TestClient, db: Database) -> None:
    assert _post(client, _many(2)).status_code == 401
    sign_in(client, make_user(db))
    del client.headers["X-CSRF-Token"]
    assert _post(client, _many(2)).status_code == 403
    assert _counts(db) == (0, 0)


PAGES = [
    # query, total, indexes of the rows returned
    ({}, 20, list(range(0, 20))),
    ({"limit": 5}, 20, list(range(0, 5))),
    ({"offset": 18, "limit": 5}, 20, [18, 19]),
    ({"offset": 40}, 20, []),
    ({"split": "validation"}, 5, list(range(0, 5))),
]


@pytest.mark.parametrize(("query", "total", "indexes"), PAGES)
def test_rows_page_through_the_normalised_examples(
    client: TestClient, db: Database, query: dict[str, Any], total: int, indexes: list[int]
) -> None:
    sign_in(client, make_user(db))
    created = _post(client, _many(25), validation_fraction="0.2").json()
    url = f"/api/datasets/{created['dataset_id']}/versions/1/rows"
    page = client.get(url, params=query).json()
    assert page["total"] == total
    assert [row["index"] for row in page["rows"]] == indexes
    for row in page["rows"]:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


ROW_PROBLEMS = [
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"offset": -1}, "offset"),
    ({"split": "test"}, "split"),
]


@pytest.mark.parametrize(("query", "param"), ROW_PROBLEMS)
def test_bad_row_queries_are_400(
    client: TestClient, db: Database, query: dict[str, Any], param: str
) -> None:
    user = make_user(db)
    version = make_dataset(db, user, _many(3))
    sign_in(client, user)
    response = client.get(f"/api/datasets/{version.dataset_id}/versions/1/rows", params=query)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_stats_and_preview_with_a_registered_base_model(
    client: TestClient, db: Database, tiny_model: Path
) -> None:
    user = make_user(db)
    base = make_base_model(db, tiny_model)
    sign_in(client, user)
    created = _post(client, (SAMPLES / "alpaca.jsonl").read_bytes()).json()
    url = f"/api/datasets/{created['dataset_id']}/versions/1"
    stats = client.get(f"{url}/stats", params={"base": base.id})
    assert stats.status_code == 200, stats.text
    assert stats.json()["count"] == 3
    assert stats.json()["untrainable_total"] == 0
    short = client.get(f"{url}/stats", params={"base": base.id, "max_length": 16}).json()
    assert short["exceeding"] == 3
    assert short["untrainable"] == [0, 1, 2]
    preview = client.get(f"{url}/preview", params={"base": base.id, "index": 2})
    assert preview.status_code == 200, preview.text
    segments = preview.json()["segments"]
    assert [s["text"] for s in segments if s["trained"]] == ["おはようございます<|im_end|>"]
    masked = "".join(s["text"] for s in segments if not s["trained"])
    assert "<|im_start|>user\nTranslate to Japanese\n\nGood morning<|im_end|>" in masked


BASE_PROBLEMS = [
    # query, status, words
    ({"base": 999_999}, 404, "base model 999999 not found"),
    ({}, 400, "no default base model"),
    ({"base": "x"}, 400, "base"),
    ({"max_length": 8}, 400, "max_length"),
    ({"index": 3}, 400, "index 3 is out of range"),
]


@pytest.mark.parametrize(("query", "status", "words"), BASE_PROBLEMS)
def test_preview_problems(
    client: TestClient,
    db: Database,
    tiny_model: Path,
    query: dict[str, Any],
    status: int,
    words: str,
) -> None:
    user = make_user(db)
    version = make_dataset(db, user, (SAMPLES / "messages.jsonl").read_bytes())
    base = make_base_model(db, tiny_model)
    sign_in(client, user)
    if "index" in query:
        query = {**query, "base": base.id}
    url = f"/api/datasets/{version.dataset_id}/versions/1/preview"
    response = client.get(url, params=query)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_the_default_base_model_is_used_when_none_is_named(
    app: FastAPI, client: TestClient, db: Database, tiny_model: Path
) -> None:
    user = make_user(db)
    body = (SAMPLES / "messages.jsonl").read_bytes()
    version = make_dataset(db, user, body, storage=app.state.storage)
    base = make_base_model(db, tiny_model)
    with db.session() as session:
        row = session.get(BaseModel, base.id)
        assert row is not None
        row.is_default = True
    sign_in(client, user)
    response = client.get(f"/api/datasets/{version.dataset_id}/versions/1/stats")
    assert response.status_code == 200, response.text
    assert response.json()["base"] is None
    assert response.json()["count"] == 3


def test_a_base_model_without_a_tokenizer_is_named_not_shown(
    client: TestClient, db: Database, tmp_path: Path
) -> None:
    user = make_user(db)
    version = make_dataset(db, user, _many(3))
    broken = make_base_model(db, tmp_path / "empty", name="broken-base")
    sign_in(client, user)
    url = f"/api/datasets/{version.dataset_id}/versions/1/stats"
    response = client.get(url, params={"base": broken.id})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("tokenizer_unavailable", "base")
    assert "'broken-base'" in error["message"]
    assert str(tmp_path) not in error["message"]


def test_another_users_dataset_is_not_found_anywhere(
    client: TestClient, db: Database, tiny_model: Path
) -> None:
    victim, intruder = make_user(db), make_user(db)
    version = make_dataset(db, victim, _many(3))
    base = make_base_model(db, tiny_model)
    sign_in(client, intruder)
    root = f"/api/datasets/{version.dataset_id}"
    urls = [
        root,
        f"{root}/versions/1",
        f"{root}/versions/1/rows",
        f"{root}/versions/1/stats?base={base.id}",
        f"{root}/versions/1/preview?base={base.id}",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["type"] == "not_found_error"
    assert client.get("/api/datasets").json() == []
    # the same name is free for the intruder, and becomes their own version 1
    created = _post(client, _many(3), name=_dataset_name(db, version.dataset_id))
    assert created.json()["version"] == 1
    assert created.json()["dataset_id"] != version.dataset_id


def _dataset_name(db: Database, dataset_id: int) -> str:
    with db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        return dataset.name


def test_the_upload_form_is_documented(app: FastAPI) -> None:
    operation = app.openapi()["paths"]["/api/datasets"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file", "name"]
    assert schema["properties"]["format"]["examples"] == FORMATS  # plugins may add more
