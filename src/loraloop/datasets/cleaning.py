"""Cleaning a parsed dataset: removing duplicates, and splitting off a validation set.

Duplicates are found on a normalised rendering of each conversation (roles and contents,
Unicode NFKC, runs of whitespace collapsed). *Exact* duplicates have identical renderings.
*Near* duplicates have a Jaccard similarity of at least ``near_threshold`` between their sets
of character 5-grams (case-folded), both as whole conversations and in their assistant turns
alone, so one long prompt with different short answers (a classification set) is not taken
for duplicates; the reported similarity is the lower of the two. Candidates come from MinHash
signatures banded by datasketch's ``MinHashLSH`` (Broder 1997; Leskovec et al., *Mining of
Massive Datasets*, ch. 3) and are confirmed with the exact Jaccard similarity, so a reported
similarity is never an estimate. The first occurrence is kept; each removed example names the
kept line it repeats.

Signatures are computed for many examples at once with numpy (datasketch's ``update_batch``
hashes each shingle in Python, several times slower on 20k examples), with the permutations of
``datasketch.MinHash`` and its ``affine32`` scheme, so ``LeanMinHash`` carries them into the index.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from datasketch import LeanMinHash, MinHash, MinHashLSH  # type: ignore[import-untyped]

from loraloop.datasets.formats import Example
from loraloop.errors import InvalidRequest

__all__ = ["MIN_FOR_VALIDATION", "Deduped", "Duplicate", "Split", "dedupe", "split"]

#: Below this many examples no validation set is held out.
MIN_FOR_VALIDATION = 10
SHINGLE = 5
NUM_PERM = 128
_SEED = 1
_GROUP_CHARS = 1 << 13  # examples hashed together: ~4 MB of signatures work stays in cache
_PRIME = np.uint64(1_000_003)
_RECALL = 0.99

Hashes = npt.NDArray[np.uint32]


@dataclass(frozen=True)
class Duplicate:
    """A removed example: its ``line``, the kept line it repeats, how, and how closely."""

    line: int
    duplicate_of: int
    kind: Literal["exact", "near"]
    similarity: float  # 1.0 for exact; Jaccard of character 5-gram sets for near


@dataclass(frozen=True)
class Deduped:
    """What ``dedupe`` kept (in the original order) and what it removed (by line)."""

    kept: list[Example]
    removed: list[Duplicate]


class Split(NamedTuple):
    """Training and validation examples (each in the original order), and why none were held out."""

    train: list[Example]
    validation: list[Example]
    note: str | None


def dedupe(examples: Sequence[Example], *, near_threshold: float = 0.9) -> Deduped:
    """Remove exact duplicates, then near ones: conversations whose 5-gram Jaccard similarity,
    as a whole and in their assistant turns alone, is at least ``near_threshold`` (in (0, 1]).
    """
    if not 0 < near_threshold <= 1:
        raise InvalidRequest(
            f"near_threshold must be greater than 0 and at most 1, got {near_threshold!r}",
            param="near_threshold",
        )
    first: dict[str, Example] = {}
    removed: list[Duplicate] = []
    for example in examples:
        key = _canonical(example)
        if key in first:
            removed.append(Duplicate(example.line, first[key].line, "exact", 1.0))
        else:
            first[key] = example
    unique = list(first.values())
    near = _near_duplicates(unique, [key.casefold() for key in first], near_threshold)
    by_line = {duplicate.line: duplicate for duplicate in near}
    for index, duplicate in enumerate(removed):
        target = by_line.get(duplicate.duplicate_of)
        if target is not None:  # it repeats a line that was itself removed as near
            removed[index] = replace(target, line=duplicate.line)
    kept = [example for example in unique if example.line not in by_line]
    return Deduped(kept, sorted(removed + near, key=lambda duplicate: duplicate.line))


def split(examples: Sequence[Example], *, validation_fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold out ``validation_fraction`` of the examples (at least 1 from 10 examples on).

    Deterministic: an example is chosen by the hash of its content and ``seed``, so the same
    data always splits the same way, and adding examples moves few existing ones.
    """
    if not 0 < validation_fraction < 1:
        raise InvalidRequest(
            f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction!r}",
            param="validation_fraction",
        )
    count = len(examples)
    if count < MIN_FOR_VALIDATION:
        note = (
            f"no validation set: {count} examples are fewer than {MIN_FOR_VALIDATION}, "
            "so all of them are used for training"
        )
        return Split(list(examples), [], note)
    size = min(count - 1, max(1, int(count * validation_fraction)))
    ranked = sorted(range(count), key=lambda index: (_rank(examples[index], seed), index))
    chosen = set(ranked[:size])
    train = [example for index, example in enumerate(examples) if index not in chosen]
    validation = [example for index, example in enumerate(examples) if index in chosen]
    return Split(train, validation, None)


def _canonical(example: Example) -> str:
    return "\n".join(
        f"{message['role']}: {_normalise(message['content'])}" for message in example.messages
    )


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _rank(example: Example, seed: int) -> bytes:
    text = json.dumps(example.messages, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(f"{seed}\n{text}".encode()).digest()


def _near_duplicates(
    examples: list[Example], texts: list[str], threshold: float
) -> list[Duplicate]:
    """Greedy in input order: an example is removed when a kept one is similar enough."""
    shingles, signatures = _sketch(texts)
    index = MinHashLSH(num_perm=NUM_PERM, params=_bands(threshold))
    replies = _Replies(examples)
    removed: list[Duplicate] = []
    for position, example in enumerate(examples):
        sketch = LeanMinHash(seed=_SEED, hashvalues=signatures[position], scheme="affine32")
        best, similarity = -1, 0.0
        for candidate in sorted(index.query(sketch)):
            score = _jaccard(shingles[position], shingles[candidate])
            if score >= threshold:
                score = min(score, _jaccard(replies[position], replies[candidate]))
            if score > similarity:
                best, similarity = candidate, score
        if best >= 0 and similarity >= threshold:
            removed.append(Duplicate(example.line, examples[best].line, "near", similarity))
        else:
            index.insert(position, sketch, check_duplication=False)
    return removed


def _bands(threshold: float) -> tuple[int, int]:
    """LSH bands and rows: the most rows (fewest false candidates) that still make candidates
    of ``_RECALL`` of the pairs exactly at the threshold (and more of those above it).

    datasketch's own choice balances misses against false candidates; here a false candidate
    costs one exact check, and a miss leaves a duplicate in, so misses weigh more.
    """
    chosen = (NUM_PERM // 2, 2)
    for rows in range(2, NUM_PERM // 2 + 1):
        bands = NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= _RECALL:
            chosen = (bands, rows)
    return chosen


class _Replies:
    """Shingles of each example's assistant turns alone, made when first asked for."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples
        self.made: dict[int, Hashes] = {}

    def __getitem__(self, position: int) -> Hashes:
        if position not in self.made:
            text = "\n".join(
                _normalise(message["content"]).casefold()
                for message in self.examples[position].messages
                if message["role"] == "assistant"
            )
            self.made[position] = _shingle_hashes([text])[0]
        return self.made[position]


def _jaccard(left: Hashes, right: Hashes) -> float:
    common = np.intersect1d(left, right, assume_unique=True).size
    return common / (left.size + right.size - common)


def _sketch(texts: list[str]) -> tuple[list[Hashes], list[Hashes]]:
    """Each text's sorted distinct shingle hashes, and its MinHash signature."""
    multipliers, offsets = MinHash(num_perm=NUM_PERM, seed=_SEED, scheme="affine32").permutations
    shingles: list[Hashes] = []
    signatures: list[Hashes] = []
    for group in _groups(texts):
        hashes, bounds = _shingle_hashes(group)
        permuted = np.multiply(multipliers[:, None], hashes[None, :])  # wraps mod 2^32
        permuted += offsets[:, None]
        minima = np.minimum.reduceat(permuted, bounds[:-1], axis=1).T
        shingles.extend(hashes[start:end] for start, end in pairwise(bounds))
        signatures.extend(minima)
    return shingles, signatures


def _groups(texts: list[str]) -> Iterator[list[str]]:
    group: list[str] = []
    size = 0
    for text in texts:
        if group and size + len(text) > _GROUP_CHARS:
            yield group
            group, size = [], 0
        group.append(text)
        size += len(text)
    if group:
        yield group


def _shingle_hashes(texts: list[str]) -> tuple[Hashes, npt.NDArray[np.intp]]:
    """Distinct 32-bit hashes of character 5-grams, sorted per text, and each text's bounds."""
    padded = [text.ljust(SHINGLE, "\0") for text in texts]  # a short text is one shingle
    lengths = np.fromiter((len(text) for text in padded), dtype=np.int64, count=len(padded))
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    windows = codes.size - SHINGLE + 1
    rolling = np.zeros(windows, dtype=np.uint64)
    for shift in range(SHINGLE):
        rolling = rolling * _PRIME + codes[shift : shift + windows]
    counts = lengths - SHINGLE + 1  # windows that stay inside one text
    owner = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
    starts = np.repeat(np.cumsum(lengths) - lengths, counts)
    within = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    mixed = _mix64(rolling[starts + within]) >> np.uint64(32)
    keys = np.sort((owner << np.uint64(32)) | mixed)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(len(texts) + 1, dtype=np.uint64))
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), bounds


def _mix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser, so that nearby shingles get unrelated hashes."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
