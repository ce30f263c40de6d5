"""Uploads in every format normalise to ``messages``; every problem is reported with its line."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from loraloop.datasets import formats
from loraloop.datasets.formats import (
    DatasetInvalid,
    ParsedDataset,
    Problem,
    content_hash,
    read_jsonl,
)
from loraloop.errors import InvalidRequest, PayloadTooLarge

SAMPLES = Path(__file__).parent / "samples"
LIMIT = 1 << 20


def _jsonl(*rows: object) -> bytes:
    return b"".join(
        (row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n"
        for row in rows
    )


def _read(body: bytes, **kwargs: object) -> ParsedDataset:
    return read_jsonl(io.BytesIO(body), max_bytes=LIMIT, **kwargs)  # type: ignore[arg-type]


def _problems(body: bytes, **kwargs: object) -> DatasetInvalid:
    with pytest.raises(DatasetInvalid) as caught:
        _read(body, **kwargs)
    return caught.value


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


U, A, S = "user", "assistant", "system"
GOOD = {"messages": _turns((U, "Hi"), (A, "Hello"))}

VALID = [
    # name, line, format chosen, normalised messages
    ("messages", GOOD, "messages", _turns((U, "Hi"), (A, "Hello"))),
    (
        "messages with system and two rounds",
        {"messages": _turns((S, "Be brief"), (U, "a"), (A, "b"), (U, "c"), (A, "d"))},
        "messages",
        _turns((S, "Be brief"), (U, "a"), (A, "b"), (U, "c"), (A, "d")),
    ),
    (
        "messages with extra keys kept out",
        {"messages": [{"role": U, "content": "a", "name": "x"}, {"role": A, "content": "b"}]},
        "messages",
        _turns((U, "a"), (A, "b")),
    ),
    (
        "messages ending on a user turn",
        {"messages": _turns((U, "a"), (A, "b"), (U, "c"))},
        "messages",
        _turns((U, "a"), (A, "b"), (U, "c")),
    ),
    (
        "alpaca without input",
        {"instruction": "Say hi", "output": "hi"},
        "alpaca",
        _turns((U, "Say hi"), (A, "hi")),
    ),
    (
        "alpaca with input and system",
        {"instruction": "Translate", "input": "cat", "output": "猫", "system": "You translate"},
        "alpaca",
        _turns((S, "You translate"), (U, "Translate\n\ncat"), (A, "猫")),
    ),
    (
        "alpaca with null input",
        {"instruction": "Say hi", "input": None, "output": "hi"},
        "alpaca",
        _turns((U, "Say hi"), (A, "hi")),
    ),
    (
        "sharegpt",
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
        "sharegpt",
        _turns((U, "Hi"), (A, "Yo")),
    ),
    (
        "sharegpt with system turn",
        {
            "conversations": [
                {"from": "system", "value": "Be kind"},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Yo"},
            ]
        },
        "sharegpt",
        _turns((S, "Be kind"), (U, "Hi"), (A, "Yo")),
    ),
    (
        "sharegpt with top-level system",
        {
            "system": "Be kind",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}],
        },
        "sharegpt",
        _turns((S, "Be kind"), (U, "Hi"), (A, "Yo")),
    ),
    (
        "prompt/completion",
        {"prompt": "2+2=", "completion": "4"},
        "prompt_completion",
        _turns((U, "2+2="), (A, "4")),
    ),
    (
        "japanese content",
        {"messages": _turns((U, "東京は？"), (A, "日本の首都です。🗼"))},
        "messages",
        _turns((U, "東京は？"), (A, "日本の首都です。🗼")),
    ),
]


@pytest.mark.parametrize(("name", "row", "expected_format", "messages"), VALID)
def test_valid_lines_normalise_to_messages(
    name: str, row: dict[str, object], expected_format: str, messages: list[dict[str, str]]
) -> None:
    parsed = _read(_jsonl(row))
    assert parsed.format == expected_format
    assert [example.messages for example in parsed.examples] == [messages]
    assert parsed.examples[0].line == 1


def _many(rows: int) -> bytes:
    return _jsonl(*[GOOD] * rows)


PROBLEMS = [
    # name, body, read_jsonl kwargs, expected (line, field) pairs, words in the error message
    ("empty file", b"", {}, [(0, None)], "file: has no examples"),
    ("only blank lines", b"\n  \n\r\n", {}, [(0, None)], "has no examples"),
    (
        "broken JSON on line 17",
        _many(16) + b'{"messages": [}\n',
        {},
        [(17, None)],
        "line 17: invalid JSON at column 15",
    ),
    ("not an object", _jsonl(GOOD, [1, 2]), {}, [(2, None)], "line 2: must be a JSON object"),
    (
        "a string line",
        _jsonl(GOOD, b'"text"'),
        {},
        [(2, None)],
        'got string "text"',
    ),
    (
        "non-UTF-8 bytes",
        _jsonl(GOOD) + b'{"prompt": "caf\xe9", "completion": "x"}\n',
        {},
        [(2, None)],
        # \xe9 follows the 15 bytes of '{"prompt": "caf'; line 1 holds 93 bytes
        f"line 2: is not valid UTF-8 at byte 15 of the line (byte {len(_jsonl(GOOD)) + 15} of",
    ),
    (
        "unknown format",
        _jsonl({"question": "q", "answer": "a"}),
        {},
        [(1, None)],
        'matches no known format (got keys "question", "answer"); expected one of — messages:',
    ),
    (
        "ambiguous keys",
        _jsonl({"prompt": "p", "completion": "c", "output": "o", "instruction": "i"}),
        {},
        [(1, None)],
        "mixes keys of alpaca and prompt_completion",
    ),
    (
        "mixed formats",
        _jsonl(GOOD, {"prompt": "p", "completion": "c"}),
        {},
        [(2, None)],
        "line 2: looks like prompt_completion but line 1 is messages; one file must use one",
    ),
    (
        "wrong explicit format",
        _jsonl(GOOD),
        {"format": "alpaca"},
        [(1, None)],
        'does not look like alpaca: expected "instruction" and "output"',
    ),
    (
        "empty assistant turn",
        _jsonl({"messages": _turns((U, "Hi"), (A, "  "))}),
        {},
        [(1, "messages[1].content")],
        "line 1: messages[1].content: must not be empty (an empty assistant turn)",
    ),
    (
        "empty alpaca output",
        _jsonl({"instruction": "i", "output": ""}),
        {},
        [(1, "output")],
        "output: must not be empty (an empty assistant turn)",
    ),
    (
        "no assistant turn",
        _jsonl({"messages": _turns((S, "s"), (U, "Hi"))}),
        {},
        [(1, "messages")],
        "has no assistant turn",
    ),
    (
        "roles not alternating",
        _jsonl({"messages": _turns((U, "a"), (U, "b"), (A, "c"))}),
        {},
        [(1, "messages[1].role")],
        "expected an assistant turn here, got a user turn",
    ),
    (
        "assistant first",
        _jsonl({"messages": _turns((A, "a"), (U, "b"))}),
        {},
        [(1, "messages[0].role")],
        "expected a user turn here, got an assistant turn",
    ),
    (
        "system later on",
        _jsonl({"messages": _turns((U, "a"), (A, "b"), (S, "c"), (U, "d"), (A, "e"))}),
        {},
        [(1, "messages[2].role")],
        "got a system turn; after an optional first system message",
    ),
    (
        "unknown role",
        _jsonl({"messages": [{"role": "tool", "content": "x"}, {"role": A, "content": "y"}]}),
        {},
        [(1, "messages[0].role")],
        'must be one of "system", "user", "assistant"; got string "tool"',
    ),
    (
        "unknown sharegpt speaker",
        _jsonl({"conversations": [{"from": "bot", "value": "x"}]}),
        {},
        [(1, "conversations[0].from")],
        'must be one of "system", "human", "user", "gpt", "assistant"; got string "bot"',
    ),
    (
        "missing role",
        _jsonl({"messages": [{"content": "x"}, {"role": A, "content": "y"}]}),
        {},
        [(1, "messages[0].role")],
        "it is missing",
    ),
    (
        "content of the wrong type",
        _jsonl({"messages": [{"role": U, "content": 3}, {"role": A, "content": "y"}]}),
        {},
        [(1, "messages[0].content")],
        "must be a string, got number 3",
    ),
    (
        "messages not a list",
        _jsonl({"messages": {"role": U}}),
        {},
        [(1, "messages")],
        "must be a list of turns, got an object",
    ),
    ("empty messages", _jsonl({"messages": []}), {}, [(1, "messages")], "must not be empty"),
    (
        "turn not an object",
        _jsonl({"messages": ["hi", {"role": A, "content": "y"}]}),
        {},
        [(1, "messages[0]")],
        'must be an object with "role" and "content", got string "hi"',
    ),
    (
        "missing completion",
        _jsonl({"prompt": "p"}),
        {"format": "prompt_completion"},
        [(1, "completion")],
        "completion: is missing",
    ),
    (
        "boolean prompt",
        _jsonl({"prompt": True, "completion": "c"}),
        {},
        [(1, "prompt")],
        "must be a string, got boolean true",
    ),
    (
        "unpaired surrogate",
        b'{"prompt": "\\ud800", "completion": "c"}\n',
        {},
        [(1, "prompt")],
        "unpaired surrogate",
    ),
    (
        "several problems in one go",
        _jsonl(GOOD, b"{", {"messages": _turns((U, "a"), (A, ""))}, b"\xff", [1])
        + b"\n\n"
        + _jsonl({"prompt": "p", "completion": "c"}),
        {},
        [(2, None), (3, "messages[1].content"), (4, None), (5, None), (8, None)],
        "the dataset has 5 problems:\nline 2:",
    ),
]


@pytest.mark.parametrize(("name", "body", "kwargs", "where", "words"), PROBLEMS)
def test_problems_are_reported_with_their_lines(
    name: str,
    body: bytes,
    kwargs: dict[str, object],
    where: list[tuple[int, str | None]],
    words: str,
) -> None:
    error = _problems(body, **kwargs)
    assert [(problem.line, problem.field) for problem in error.problems] == where
    assert error.total == len(where)
    assert words in error.message
    assert error.code == "dataset_invalid"
    assert error.param == "file"
    assert error.status_code == 400


def test_error_message_lists_first_problems_and_the_total() -> None:
    body = _jsonl(*[b"{"] * 120)
    error = _problems(body, max_problems=30)
    assert error.total == 120
    assert len(error.problems) == 30
    assert error.message.startswith("the dataset has 120 problems:\nline 1: invalid JSON")
    assert "line 10:" in error.message
    assert "line 11:" not in error.message
    assert error.message.endswith("… and 110 more")


def test_problem_reads_as_a_sentence() -> None:
    assert str(Problem(3, "output", "must not be empty")) == "line 3: output: must not be empty"
    assert str(Problem(0, None, "has no examples")) == "file: has no examples"


def test_unknown_format_argument_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _read(_jsonl(GOOD), format="csv")
    assert caught.value.param == "format"
    assert "allowed: messages, alpaca, sharegpt, prompt_completion" in caught.value.message


def test_explicit_format_overrides_detection() -> None:
    row = {"prompt": "p", "completion": "c", "messages": "ignored"}
    parsed = _read(_jsonl(row), format="prompt_completion")
    assert parsed.format == "prompt_completion"
    assert parsed.examples[0].messages == _turns((U, "p"), (A, "c"))


def test_blank_lines_bom_and_crlf_keep_line_numbers() -> None:
    body = b"\xef\xbb\xbf" + _jsonl(GOOD).replace(b"\n", b"\r\n") + b"\n   \n" + _jsonl(GOOD)
    body = body.rstrip(b"\n")  # no newline at the end of the last line
    parsed = _read(body)
    assert [example.line for example in parsed.examples] == [1, 4]
    assert parsed.bytes == len(body)
    assert parsed.sha256 == hashlib.sha256(body).hexdigest()


class _Endless(io.RawIOBase):
    """A claimed 2 GB upload made on demand, counting what was read from it."""

    def __init__(self, size: int = 2 << 30, line: bytes = _jsonl(GOOD)) -> None:
        self.size = size
        self.line = len(line)
        self.pattern = line * (65536 // len(line) + 2)
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.size - self.served, 65536)
        start = self.served % self.line
        buffer[:count] = self.pattern[start : start + count]
        self.served += count
        return count


@pytest.mark.parametrize("line", [_jsonl(GOOD), b"x" * 1000], ids=["many lines", "one line"])
def test_a_huge_upload_stops_just_past_the_limit(line: bytes) -> None:
    stream = _Endless(line=line)
    with pytest.raises(PayloadTooLarge) as caught:
        read_jsonl(stream, max_bytes=LIMIT)  # type: ignore[arg-type]
    assert stream.served == LIMIT + 1  # one byte past the limit proves it is crossed
    assert "larger than the limit of 1048576 bytes (1.0 MiB)" in caught.value.message
    assert caught.value.status_code == 413


def test_a_body_of_exactly_the_limit_is_read() -> None:
    body = _many(3)
    parsed = read_jsonl(io.BytesIO(body), max_bytes=len(body))
    assert len(parsed.examples) == 3
    with pytest.raises(PayloadTooLarge):
        read_jsonl(io.BytesIO(body), max_bytes=len(body) - 1)


def test_the_four_sample_formats_normalise_and_hash_the_same() -> None:
    parsed = {name: _read((SAMPLES / f"{name}.jsonl").read_bytes()) for name in formats.FORMATS}
    assert {name: dataset.format for name, dataset in parsed.items()} == {
        name: name for name in formats.FORMATS
    }
    conversations = {
        name: [example.messages for example in dataset.examples] for name, dataset in parsed.items()
    }
    assert len({json.dumps(value) for value in conversations.values()}) == 1
    assert len({content_hash(dataset.examples) for dataset in parsed.values()}) == 1
    assert len({dataset.sha256 for dataset in parsed.values()}) == 4  # the raw files differ


def test_japanese_round_trips() -> None:
    body = (SAMPLES / "messages.jsonl").read_bytes()
    parsed = _read(body)
    original = [json.loads(line)["messages"] for line in body.decode().splitlines()]
    assert [example.messages for example in parsed.examples] == original
    assert parsed.examples[1].messages[1]["content"] == "富士山の高さは3,776メートルです。"


def test_content_hash_depends_on_content_and_order() -> None:
    as_messages = _read(_jsonl(GOOD, {"messages": _turns((U, "a"), (A, "b"))})).examples
    as_prompts = _read(
        _jsonl({"prompt": "Hi", "completion": "Hello"}, {"prompt": "a", "completion": "b"})
    ).examples
    assert content_hash(as_messages) == content_hash(as_prompts)
    assert content_hash(as_messages) != content_hash(reversed(as_messages))
    assert content_hash(as_messages) != content_hash(as_messages[:1])


def test_public_names() -> None:
    assert set(formats.__all__) == {
        "FORMATS",
        "ROLES",
        "DatasetFormat",
        "DatasetInvalid",
        "Example",
        "ParsedDataset",
        "Problem",
        "Report",
        "content_hash",
        "known_formats",
        "read_jsonl",
        "register_format",
        "unregister_format",
    }
