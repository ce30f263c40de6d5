"""The datasets service: uploads become versions with a report; bad uploads leave nothing."""

from __future__ import annotations

import json
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from loraloop.datasets import service
from loraloop.datasets.formats import DatasetInvalid
from loraloop.db.engine import Database
from loraloop.db.tables import Dataset, DatasetVersion, User
from loraloop.errors import InvalidRequest, NotFound, PayloadTooLarge
from loraloop.storage import Storage
from loraloop.testing import make_tiny_model
from tests.factories import make_user

SAMPLES = Path(__file__).parent / "datasets" / "samples"
FORMATS = ["messages", "alpaca", "sharegpt", "prompt_completion"]


def _jsonl(*rows: object) -> bytes:
    return b"".join(
        (row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n"
        for row in rows
    )


def _chat(question: str, answer: str, system: str | None = None) -> dict[str, object]:
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": turns}


def _many(count: int) -> bytes:
    """``count`` distinct examples (no two are near duplicates)."""
    return _jsonl(
        *(_chat(f"Question number {i}: {i * 7919}?", f"Answer {i**3} is it") for i in range(count))
    )


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "artifacts")


def _upload(
    db: Database, storage: Storage, user: User, body: bytes, **kwargs: object
) -> DatasetVersion:
    kwargs.setdefault("name", "support")
    with db.session() as session:
        return service.upload(session, storage, user, chunks=[body], **kwargs)  # type: ignore[arg-type]


def _count(db: Database, table: type[Dataset] | type[DatasetVersion]) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _stored_files(storage: Storage) -> list[Path]:
    return (
        [path for path in storage.root.rglob("*") if path.is_file()]
        if storage.root.exists()
        else []
    )


def _lines(storage: Storage, sha: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in storage.path(sha).read_text("utf-8").splitlines()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_becomes_normalised_versions(db: Database, storage: Storage, fmt: str) -> None:
    user = make_user(db)
    body = (SAMPLES / f"{fmt}.jsonl").read_bytes()
    first = _upload(db, storage, user, body)
    second = _upload(db, storage, user, body)
    assert (first.version, second.version) == (1, 2)
    assert first.dataset_id == second.dataset_id
    assert first.format == fmt
    assert (first.examples, first.train_examples, first.validation_examples) == (3, 3, 0)
    assert first.validation_sha256 is None
    assert first.report["split"]["note"].startswith("no validation set")
    assert first.report["same_as_version"] is None
    assert second.report["same_as_version"] == 1
    assert storage.path(first.raw_sha256).read_bytes() == body
    # every format normalises to the same conversations, stored as UTF-8 text (not \u escapes)
    messages = _upload(db, storage, user, (SAMPLES / "messages.jsonl").read_bytes(), name="m")
    assert first.content_hash == messages.content_hash
    assert first.train_sha256 == messages.train_sha256
    text = storage.path(first.train_sha256).read_text("utf-8")
    assert "富士山" in text
    assert [set(row) for row in _lines(storage, first.train_sha256)] == [{"messages"}] * 3


def test_report_counts_duplicates_roles_and_split(db: Database, storage: Storage) -> None:
    rows = [_chat(f"Question number {i}: {i * 7919}?", f"Answer {i**3} is it") for i in range(20)]
    system = _chat("Question number 0: 0?", "Answer 0 is it", system="Be brief")
    near = _chat("Question number 19: 150461?", "Answer 6859 is it!")
    body = _jsonl(*rows, rows[3], system, near, *([rows[5]] * 60))
    version = _upload(db, storage, make_user(db), body, validation_fraction=0.25)
    report = version.report
    assert report["uploaded_examples"] == 20 + 1 + 1 + 1 + 60
    assert version.duplicates_removed == report["duplicates_removed"] == 62
    assert version.examples == 21  # the example with a system prompt is different
    assert len(report["duplicates"]) == service.REPORTED_DUPLICATES
    assert report["duplicates"][0] == {
        "line": 21,
        "duplicate_of": 4,
        "kind": "exact",
        "similarity": 1.0,
    }
    assert report["duplicates"][1]["line"] == 23
    assert report["duplicates"][1]["duplicate_of"] == 20
    assert report["duplicates"][1]["kind"] == "near"
    assert 0.9 <= report["duplicates"][1]["similarity"] < 1
    assert report["roles"] == {"system": 1, "user": 21, "assistant": 21}
    assert report["split"] == {
        "train": 16,
        "validation": 5,
        "validation_fraction": 0.25,
        "seed": 0,
        "note": None,
    }
    assert (version.train_examples, version.validation_examples) == (16, 5)
    assert len(_lines(storage, version.validation_sha256 or "")) == 5


def _line_17_broken() -> bytes:
    rows = [_chat(f"q{i}", f"a{i}") for i in range(20)]
    body = _jsonl(*rows).splitlines(keepends=True)
    body[16] = b'{"messages": [\n'
    return b"".join(body)


class _Unpickled:
    """Unpickling this would create ``marker``; its absence proves no pickle was loaded."""

    marker = Path(tempfile.gettempdir()) / "loraloop-a-pickle-was-loaded"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


BAD_FILES: list[tuple[str, bytes, dict[str, object], str]] = [
    # name, body, upload options, words in the message
    ("broken JSON on line 17", _line_17_broken(), {}, "line 17: invalid JSON"),
    (
        "empty assistant turn",
        _jsonl(_chat("q", "a"), _chat("q2", "  ")),
        {},
        "line 2: messages[1].content: must not be empty (an empty assistant turn)",
    ),
    (
        "not UTF-8",
        _jsonl(_chat("q", "a")) + b'{"prompt": "\xff", "completion": "x"}\n',
        {},
        "line 2: is not valid UTF-8",
    ),
    (
        "another format than chosen",
        (SAMPLES / "messages.jsonl").read_bytes(),
        {"format": "alpaca"},
        "line 1: does not look like alpaca",
    ),
    ("a CSV file", b"question,answer\nhi,hello\n", {}, "line 1: invalid JSON"),
    ("empty file", b"\n\n", {}, "file: has no examples"),
    ("a pickle", pickle.dumps(_Unpickled()), {}, "line 1: is not valid UTF-8"),
]


@pytest.mark.parametrize(
    ("name", "body", "options", "words"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_files_store_nothing(
    db: Database,
    storage: Storage,
    tmp_path: Path,
    name: str,
    body: bytes,
    options: dict[str, object],
    words: str,
) -> None:
    with pytest.raises(DatasetInvalid) as caught:
        _upload(db, storage, make_user(db), body, **options)
    assert words in caught.value.message
    assert caught.value.problems
    assert _count(db, Dataset) == _count(db, DatasetVersion) == 0
    assert _stored_files(storage) == []
    assert not _Unpickled.marker.exists()


def test_an_oversized_upload_is_refused_while_streaming(db: Database, storage: Storage) -> None:
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield _jsonl(_chat("q", "a"))

    with db.session() as session, pytest.raises(PayloadTooLarge) as caught:
        service.upload(
            session, storage, make_user(db), name="big", chunks=endless(), max_bytes=1000
        )
    assert "limit of 1000 bytes" in caught.value.message
    assert pulled < 100
    assert _count(db, Dataset) == 0
    assert _stored_files(storage) == []


def test_the_module_limit_applies_by_default(
    db: Database, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(PayloadTooLarge):
        _upload(db, storage, make_user(db), _many(5))


OPTION_CASES: list[tuple[str, dict[str, object], list[str]]] = [
    # name, options, words that must all be in the one message
    ("empty name", {"name": ""}, ["must not be empty"]),
    ("long name with bad characters", {"name": "a b/" + "x" * 70}, ["74 characters", "' '", "'/'"]),
    ("japanese name", {"name": "データ"}, ["'タ'", "only letters A-Z"]),
    (
        "everything at once",
        {"name": "x!", "format": "csv", "validation_fraction": 1.0, "near_threshold": 0.0},
        ["'!'", "format 'csv'", "validation_fraction", "near_threshold"],
    ),
]


@pytest.mark.parametrize(
    ("case", "options", "words"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES]
)
def test_bad_options_are_all_reported_before_reading(
    db: Database, storage: Storage, case: str, options: dict[str, object], words: list[str]
) -> None:
    def never() -> Iterator[bytes]:
        raise AssertionError("the file was read")
        yield b""

    with db.session() as session, pytest.raises(InvalidRequest) as caught:
        service.upload(session, storage, make_user(db), chunks=never(), **options)  # type: ignore[arg-type]
    for word in words:
        assert word in caught.value.message
    assert _count(db, Dataset) == 0


def test_names_are_per_owner_and_others_datasets_are_not_found(
    db: Database, storage: Storage
) -> None:
    alice, bob = make_user(db), make_user(db)
    mine = _upload(db, storage, alice, _many(3))
    theirs = _upload(db, storage, bob, _many(3))
    assert (mine.version, theirs.version) == (1, 1)
    assert mine.dataset_id != theirs.dataset_id
    with db.session() as session:
        assert [s.dataset.id for s in service.list_own(session, alice)] == [mine.dataset_id]
        summary = service.list_own(session, alice)[0]
        assert summary.latest is not None
        assert summary.latest.id == mine.id
        assert service.get_version_own(session, alice, mine.dataset_id, 1).id == mine.id
        calls: list[Callable[[], object]] = [
            lambda: service.get_own(session, alice, theirs.dataset_id),
            lambda: service.detail(session, alice, theirs.dataset_id),
            lambda: service.get_version_own(session, alice, theirs.dataset_id, 1),
            lambda: service.get_version_own(session, alice, mine.dataset_id, 2),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()


def test_concurrent_first_uploads_of_a_name_number_their_versions(
    db: Database, storage: Storage
) -> None:
    user = make_user(db)
    pool = ThreadPoolExecutor(1)
    try:
        with db.session() as session:
            mine = service.upload(session, storage, user, name="race", chunks=[_many(3)])
            other = pool.submit(_upload, db, storage, user, _many(4), name="race")
            time.sleep(0.3)
            assert not other.done()  # it waits for the dataset row this transaction holds
        assert (mine.version, other.result(timeout=60).version) == (1, 2)
        assert _count(db, Dataset) == 1
    finally:
        pool.shutdown()


def test_list_shows_the_latest_version(db: Database, storage: Storage) -> None:
    user = make_user(db)
    _upload(db, storage, user, _many(3))
    latest = _upload(db, storage, user, _many(4))
    with db.session() as session:
        (summary,) = service.list_own(session, user)
        detail = service.detail(session, user, latest.dataset_id)
    assert summary.latest is not None
    assert summary.latest.version == 2
    assert [v.version for v in detail.versions] == [1, 2]


PAGES = [
    # split, offset, limit, expected positions
    ("train", 0, 5, range(0, 5)),
    ("train", 14, 5, range(14, 16)),
    ("train", 16, 5, range(0)),
    ("validation", 0, 10, range(0, 4)),
]


@pytest.mark.parametrize(("split", "offset", "limit", "expected"), PAGES)
def test_rows_page_through_a_split(
    db: Database,
    storage: Storage,
    split: service.SplitName,
    offset: int,
    limit: int,
    expected: range,
) -> None:
    version = _upload(db, storage, make_user(db), _many(20), validation_fraction=0.2)
    everything = service.rows(storage, version, split, offset=0, limit=100).rows
    page = service.rows(storage, version, split, offset=offset, limit=limit)
    assert page.total == (16 if split == "train" else 4)
    assert page.rows == [everything[i] for i in expected]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_stats_and_preview_use_the_base_models_template(
    db: Database, storage: Storage, tiny_model: Path
) -> None:
    version = _upload(db, storage, make_user(db), (SAMPLES / "messages.jsonl").read_bytes())
    tokenizer = service.load_tokenizer(str(tiny_model))
    assert service.load_tokenizer(str(tiny_model)) is tokenizer  # cached
    stats = service.stats(storage, version, tokenizer, 1024)
    assert stats.count == 3
    assert stats.exceeding == 0
    assert stats.untrainable == []
    segments = service.preview(storage, version, tokenizer, 1, 1024)
    trained = "".join(s.text for s in segments if s.trained)
    masked = "".join(s.text for s in segments if not s.trained)
    assert trained == "富士山の高さは3,776メートルです。<|im_end|>"
    assert "富士山の高さは？" in masked
    short = service.stats(storage, version, tokenizer, 16)
    assert short.exceeding == 3
    assert short.untrainable == [0, 1, 2]


PREVIEW_PROBLEMS = [
    # index, split, max_length, words
    (3, "train", 64, "index 3 is out of range"),
    (0, "validation", 64, "indexes allowed: none"),
    (0, "train", 0, "max_length must be a positive"),
]


@pytest.mark.parametrize(("index", "split", "max_length", "words"), PREVIEW_PROBLEMS)
def test_preview_refuses_what_is_not_there(
    db: Database,
    storage: Storage,
    tiny_model: Path,
    index: int,
    split: service.SplitName,
    max_length: int,
    words: str,
) -> None:
    version = _upload(db, storage, make_user(db), (SAMPLES / "messages.jsonl").read_bytes())
    tokenizer = service.load_tokenizer(str(tiny_model))
    with pytest.raises(InvalidRequest) as caught:
        service.preview(storage, version, tokenizer, index, max_length, split)
    assert words in caught.value.message


def test_a_folder_without_a_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        service.load_tokenizer(str(tmp_path))
    assert caught.value.code == "tokenizer_unavailable"
