"""Duplicates go (saying which line they repeat and how closely); splits are deterministic."""

from __future__ import annotations

import random
import time
import unicodedata

import pytest

from loraloop.datasets.cleaning import MIN_FOR_VALIDATION, Duplicate, dedupe, split
from loraloop.datasets.formats import Example
from loraloop.errors import InvalidRequest

LONG = (
    "LoRA freezes the pretrained weights and trains a pair of low-rank matrices beside each "
    "projection, so an adapter for a small model weighs a few megabytes and trains in minutes."
)


def _example(line: int, answer: str, question: str = "Explain LoRA") -> Example:
    return Example(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], line
    )


def _examples(*answers: str) -> list[Example]:
    return [_example(line, answer) for line, answer in enumerate(answers, start=1)]


DEDUPE = [
    # name, examples, kept lines, removed (line, duplicate_of, kind)
    ("distinct", _examples("alpha beta gamma", "delta epsilon zeta"), [1, 2], []),
    ("exact", _examples(LONG, "other", LONG), [1, 2], [(3, 1, "exact")]),
    (
        "whitespace and NFKC",
        _examples("ｈｅｌｌｏ　world", "hello   world\n", " hello world "),
        [1],
        [(2, 1, "exact"), (3, 1, "exact")],
    ),
    ("case only: near, identical shingles", _examples(LONG, LONG.upper()), [1], [(2, 1, "near")]),
    (
        "one word changed",
        _examples(LONG, LONG.replace("minutes", "seconds")),
        [1],
        [(2, 1, "near")],
    ),
    (
        "half the text changed stays",
        _examples(LONG, LONG[: len(LONG) // 2] + " and then something else entirely, " * 3),
        [1, 2],
        [],
    ),
    (
        "same prompt, different short answers",
        [_example(1, "yes", LONG), _example(2, "no", LONG), _example(3, "yes", LONG)],
        [1, 2],
        [(3, 1, "exact")],
    ),
    (
        "roles matter",
        [_example(1, "Explain LoRA", question=LONG), _example(2, LONG)],
        [1, 2],
        [],
    ),
    (
        "japanese near duplicate",
        _examples(
            "富士山は日本で一番高い山で、標高は三七七六メートルです。" * 3,
            "富士山は日本で一番高い山で、標高は三七七六メートルです。" * 3 + "！",
        ),
        [1],
        [(2, 1, "near")],
    ),
    (
        "a repeat of a near duplicate points at the kept line",
        _examples(LONG, LONG.replace("minutes", "seconds"), LONG.replace("minutes", "seconds")),
        [1],
        [(2, 1, "near"), (3, 1, "near")],
    ),
]


@pytest.mark.parametrize(("name", "examples", "kept", "removed"), DEDUPE)
def test_dedupe(
    name: str, examples: list[Example], kept: list[int], removed: list[tuple[int, int, str]]
) -> None:
    result = dedupe(examples)
    assert [example.line for example in result.kept] == kept
    assert [(d.line, d.duplicate_of, d.kind) for d in result.removed] == removed
    for duplicate in result.removed:
        assert 0.9 <= duplicate.similarity <= 1.0
        if duplicate.kind == "exact":
            assert duplicate.similarity == 1.0


def test_threshold_decides_what_is_near() -> None:
    examples = _examples(LONG, LONG[:100] + "something else here")
    assert dedupe(examples).removed == []
    loose = dedupe(examples, near_threshold=0.3).removed
    assert [(d.line, d.duplicate_of, d.kind) for d in loose] == [(2, 1, "near")]
    assert 0.3 <= loose[0].similarity < 0.9


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_out_of_range_is_refused(threshold: float) -> None:
    with pytest.raises(InvalidRequest) as caught:
        dedupe(_examples("a"), near_threshold=threshold)
    assert caught.value.param == "near_threshold"
    assert repr(threshold) in caught.value.message


def _shingles(text: str) -> set[str]:
    text = text.casefold().ljust(5, "\0")
    return {text[i : i + 5] for i in range(len(text) - 4)}


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _sets(example: Example) -> tuple[set[str], set[str]]:
    """Shingles of the whole conversation and of its assistant turns alone."""
    whole = "\n".join(f"{m['role']}: {_normal(m['content'])}" for m in example.messages)
    replies = "\n".join(_normal(m["content"]) for m in example.messages if m["role"] == "assistant")
    return _shingles(whole), _shingles(replies)


def _similarity(left: tuple[set[str], set[str]], right: tuple[set[str], set[str]]) -> float:
    """Brute force: the lower of whole-conversation and assistant-only Jaccard."""
    return min(len(a & b) / len(a | b) for a, b in zip(left, right, strict=True))


def _corpus(count: int, seed: int) -> list[Example]:
    """Random answers, with every fourth a lightly edited copy of an earlier one."""
    rng = random.Random(seed)
    words = [f"w{index}" for index in range(400)] + ["日本", "語", "モデル"]
    answers: list[str] = []
    for index in range(count):
        if index % 4 == 3:
            tokens = rng.choice(answers).split()
            tokens[rng.randrange(len(tokens))] = "edited"
            answers.append(" ".join(tokens))
        else:
            answers.append(" ".join(rng.choice(words) for _ in range(rng.randint(40, 120))))
    return _examples(*answers)


def test_dedupe_agrees_with_brute_force_jaccard() -> None:
    examples = _corpus(300, seed=1)
    result = dedupe(examples)
    by_line = {example.line: _sets(example) for example in examples}
    kept = [example.line for example in result.kept]
    for duplicate in result.removed:  # every reported similarity is exact
        expected = _similarity(by_line[duplicate.line], by_line[duplicate.duplicate_of])
        assert duplicate.similarity == pytest.approx(expected, abs=1e-3)
        assert duplicate.duplicate_of in kept
    for index, line in enumerate(kept):  # no kept pair is near
        for other in kept[:index]:
            assert _similarity(by_line[line], by_line[other]) < 0.9
    assert len(result.removed) >= 60  # most planted edits are near enough to go


def test_dedupe_of_20k_examples_takes_seconds() -> None:
    examples = _corpus(20_000, seed=2)
    started = time.perf_counter()
    result = dedupe(examples)
    elapsed = time.perf_counter() - started
    assert len(result.kept) + len(result.removed) == 20_000
    assert len(result.removed) >= 4_500
    assert elapsed < 30, f"dedupe of 20k examples took {elapsed:.1f}s"


def test_duplicate_is_plain_data() -> None:
    assert Duplicate(3, 1, "exact", 1.0) == Duplicate(3, 1, "exact", 1.0)


SPLITS = [
    # examples, fraction, validation size, note expected
    (0, 0.1, 0, True),
    (1, 0.1, 0, True),
    (MIN_FOR_VALIDATION - 1, 0.5, 0, True),
    (MIN_FOR_VALIDATION, 0.1, 1, False),
    (10, 0.01, 1, False),
    (19, 0.1, 1, False),
    (100, 0.1, 10, False),
    (100, 0.25, 25, False),
    (10, 0.99, 9, False),  # training keeps at least one
]


@pytest.mark.parametrize(("count", "fraction", "size", "noted"), SPLITS)
def test_split_sizes(count: int, fraction: float, size: int, noted: bool) -> None:
    examples = _examples(*(f"answer {index}" for index in range(count)))
    result = split(examples, validation_fraction=fraction)
    assert len(result.validation) == size
    assert (result.note is not None) == noted
    if noted:
        assert f"{count} examples are fewer than {MIN_FOR_VALIDATION}" in str(result.note)
    lines = sorted(example.line for example in result.train + result.validation)
    assert lines == list(range(1, count + 1))
    for part in (result.train, result.validation):  # original order is kept
        assert [example.line for example in part] == sorted(example.line for example in part)


def test_split_is_deterministic_and_seeded() -> None:
    examples = _examples(*(f"answer {index}" for index in range(200)))
    first = split(examples, seed=0)
    assert split(list(examples), seed=0) == first
    assert split(examples, seed=1).validation != first.validation
    train, validation, note = first  # unpacks like a tuple
    assert (len(train), len(validation), note) == (180, 20, None)


def test_split_barely_moves_when_examples_are_added() -> None:
    examples = _examples(*(f"answer {index}" for index in range(200)))
    before = {example.line for example in split(examples).validation}
    grown = examples + _examples(*(f"new answer {index}" for index in range(20)))
    after = {example.line for example in split(grown).validation}
    assert len(before & after) >= 15


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(InvalidRequest) as caught:
        split(_examples("a"), validation_fraction=fraction)
    assert caught.value.param == "validation_fraction"
