"""Datasets of a user: uploading a JSON Lines file as a new version, and reading versions back.

An upload flows through these steps, and nothing reaches the database or the artifact store
until the file has been read, validated and cleaned::

    chunks ─▶ temporary file (byte limit) ─▶ read_jsonl ─▶ dedupe ─▶ split
                                                                       │
          artifacts: raw file, train.jsonl, validation.jsonl  ◀────────┘
                                                                       │
          rows: Dataset (created on first upload of a name), DatasetVersion (previous + 1)

The normalised files hold one ``{"messages": [...]}`` per line (UTF-8), which is what training
reads. Another user's dataset answers exactly like a missing one (``NotFound``).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import islice
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.catalog import base_models
from loraloop.config import Settings
from loraloop.datasets.cleaning import Deduped, Split, dedupe, split
from loraloop.datasets.formats import (
    Example,
    ParsedDataset,
    content_hash,
    known_formats,
    read_jsonl,
)
from loraloop.db.tables import BaseModel, Dataset, DatasetVersion, User
from loraloop.errors import InvalidRequest, NotFound, PayloadTooLarge
from loraloop.ml import chat
from loraloop.ml.chat import Segment, TokenStats
from loraloop.storage import Storage

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MAX_UPLOAD_BYTES",
    "REPORTED_DUPLICATES",
    "Detail",
    "Page",
    "SplitName",
    "Summary",
    "Versioned",
    "detail",
    "find_version",
    "get_own",
    "get_version_own",
    "list_own",
    "load_tokenizer",
    "preview",
    "rows",
    "stats",
    "upload",
    "version_preview",
    "version_rows",
    "version_stats",
]

#: Largest upload accepted, in bytes (to become the ``max_upload_bytes`` setting).
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
#: Removed duplicates listed in a version's report; the count covers all of them.
REPORTED_DUPLICATES = 50

SplitName = Literal["train", "validation"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_NAME_MAX = 64
_CHUNK = 1 << 20


class Summary(NamedTuple):
    """A dataset and its latest version (None only if it has none)."""

    dataset: Dataset
    latest: DatasetVersion | None


class Versioned(NamedTuple):
    """A version and the dataset it belongs to."""

    dataset: Dataset
    version: DatasetVersion


class Detail(NamedTuple):
    """A dataset and all its versions, oldest first."""

    dataset: Dataset
    versions: list[DatasetVersion]


@dataclass(frozen=True)
class Page:
    """Normalised examples ``offset`` to ``offset + len(rows)`` of ``total`` in one split."""

    split: SplitName
    offset: int
    total: int
    rows: list[list[dict[str, str]]]


# uploading ------------------------------------------------------------------------------


def upload(
    session: Session,
    storage: Storage,
    owner: User,
    *,
    name: str,
    chunks: Iterable[bytes],
    format: str | None = None,
    validation_fraction: float = 0.1,
    near_threshold: float = 0.9,
    seed: int = 0,
    max_bytes: int | None = None,
) -> DatasetVersion:
    """Store ``chunks`` as the next version of the owner's dataset ``name`` (created if new).

    Raises ``InvalidRequest`` for bad options, ``DatasetInvalid`` (with line numbers) for a bad
    file and ``PayloadTooLarge`` past ``max_bytes`` (default ``MAX_UPLOAD_BYTES``); in each case
    nothing is stored, neither rows nor artifacts.
    """
    _check_options(name, format, validation_fraction, near_threshold)
    limit = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    clean = _prepare(storage, chunks, limit, format, validation_fraction, near_threshold, seed)
    dataset = _dataset_for_update(session, owner, name)
    digest = content_hash(clean.deduped.kept)
    report = _report(clean, validation_fraction, near_threshold, seed)
    report["same_as_version"] = _same_content(session, dataset.id, digest)
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=_latest_number(session, dataset.id) + 1,
        format=clean.parsed.format,
        raw_sha256=clean.raw_sha256,
        content_hash=digest,
        train_sha256=clean.train_sha256,
        validation_sha256=clean.validation_sha256,
        examples=len(clean.deduped.kept),
        train_examples=len(clean.parts.train),
        validation_examples=len(clean.parts.validation),
        duplicates_removed=len(clean.deduped.removed),
        report=report,
    )
    session.add(version)
    session.flush()
    return version


@dataclass(frozen=True)
class _Prepared:
    """A read, cleaned and split upload whose files are in storage."""

    parsed: ParsedDataset
    deduped: Deduped
    parts: Split
    raw_sha256: str
    train_sha256: str
    validation_sha256: str | None


def _prepare(
    storage: Storage,
    chunks: Iterable[bytes],
    limit: int,
    format: str | None,
    validation_fraction: float,
    near_threshold: float,
    seed: int,
) -> _Prepared:
    """Everything but the rows; the raw bytes reach storage only once they are known good."""
    storage.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=storage.root, prefix=".upload-") as raw:
        _spool(chunks, raw, limit)
        raw.seek(0)
        parsed = read_jsonl(raw, max_bytes=limit, format=format)
        deduped = dedupe(parsed.examples, near_threshold=near_threshold)
        parts = split(deduped.kept, validation_fraction=validation_fraction, seed=seed)
        raw.seek(0)
        raw_sha, _ = storage.put_chunks(iter(lambda: raw.read(_CHUNK), b""))
    train_sha = _put_examples(storage, parts.train)
    validation_sha = _put_examples(storage, parts.validation) if parts.validation else None
    return _Prepared(parsed, deduped, parts, raw_sha, train_sha, validation_sha)


def _check_options(
    name: str, format: str | None, validation_fraction: float, near_threshold: float
) -> None:
    """Every problem with the options at once, before a byte of the file is read."""
    problems = [("name", message) for message in _name_problems(name)]
    if format is not None and format not in known_formats():
        allowed = ", ".join(known_formats())
        problems.append(("format", f"format {format!r} is not known; allowed: {allowed}"))
    if not 0 < validation_fraction < 1:
        problems.append(
            (
                "validation_fraction",
                f"validation_fraction must be between 0 and 1 (exclusive), "
                f"got {validation_fraction!r}",
            )
        )
    if not 0 < near_threshold <= 1:
        problems.append(
            (
                "near_threshold",
                f"near_threshold must be greater than 0 and at most 1, got {near_threshold!r}",
            )
        )
    if problems:
        raise InvalidRequest(
            "; ".join(message for _, message in problems),
            code="invalid_dataset_options",
            param=problems[0][0],
        )


def _name_problems(name: str) -> list[str]:
    problems = []
    if not name:
        problems.append("name must not be empty; use 1-64 letters, digits, '.', '_' or '-'")
    if len(name) > _NAME_MAX:
        problems.append(f"name is {len(name)} characters long; at most {_NAME_MAX} are allowed")
    bad = sorted(set(_NAME.sub("", name)))
    if bad:
        shown = ", ".join(repr(char) for char in bad[:10])
        problems.append(
            f"name {name[:80]!r} holds {shown}; only letters A-Z and a-z, digits, '.', '_' "
            "and '-' are allowed"
        )
    return problems


def _spool(chunks: Iterable[bytes], handle: IO[bytes], limit: int) -> None:
    """Copy ``chunks`` to ``handle``, refusing the upload as soon as it passes ``limit`` bytes."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the upload is larger than the limit of {limit} bytes "
                f"({limit / 1048576:.1f} MiB); split it into smaller files",
                param="file",
            )
        handle.write(chunk)


def _put_examples(storage: Storage, examples: Sequence[Example]) -> str:
    """Store examples as normalised JSON Lines; returns the file's sha256."""
    sha, _ = storage.put_chunks(_jsonl_chunks(examples))
    return sha


def _jsonl_chunks(examples: Sequence[Example]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for example in examples:
        line = json.dumps({"messages": example.messages}, ensure_ascii=False) + "\n"
        buffer.append(line.encode("utf-8"))
        size += len(buffer[-1])
        if size >= _CHUNK:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _report(
    clean: _Prepared, validation_fraction: float, near_threshold: float, seed: int
) -> dict[str, Any]:
    """What happened to the upload, in JSON: the version's validation report."""
    parsed, deduped, parts = clean.parsed, clean.deduped, clean.parts
    roles = Counter(m["role"] for example in deduped.kept for m in example.messages)
    return {
        "format": parsed.format,
        "bytes": parsed.bytes,
        "uploaded_examples": len(parsed.examples),
        "examples": len(deduped.kept),
        "duplicates_removed": len(deduped.removed),
        "duplicates": [
            {**asdict(duplicate), "similarity": round(duplicate.similarity, 4)}
            for duplicate in deduped.removed[:REPORTED_DUPLICATES]
        ],
        "near_threshold": near_threshold,
        "split": {
            "train": len(parts.train),
            "validation": len(parts.validation),
            "validation_fraction": validation_fraction,
            "seed": seed,
            "note": parts.note,
        },
        "roles": {role: roles[role] for role in ("system", "user", "assistant")},
    }


def _dataset_for_update(session: Session, owner: User, name: str) -> Dataset:
    """The owner's dataset ``name``, created if missing, locked until the transaction ends so
    that concurrent uploads number their versions one after the other."""
    query = select(Dataset).where(Dataset.owner_id == owner.id, Dataset.name == name)
    dataset = session.scalar(query.with_for_update())
    if dataset is not None:
        return dataset
    try:
        with session.begin_nested():
            dataset = Dataset(owner_id=owner.id, name=name)
            session.add(dataset)
        return dataset
    except IntegrityError:  # a concurrent first upload of the same name created it
        found = session.scalar(query.with_for_update())
        assert found is not None
        return found


def _latest_number(session: Session, dataset_id: int) -> int:
    latest = session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
    )
    return int(latest or 0)


def _same_content(session: Session, dataset_id: int, digest: str) -> int | None:
    """The latest earlier version with the same examples (any format), if any."""
    return session.scalar(
        select(func.max(DatasetVersion.version)).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.content_hash == digest
        )
    )


# reading --------------------------------------------------------------------------------


def list_own(session: Session, owner: User) -> list[Summary]:
    """The owner's datasets, oldest first, each with its latest version."""
    latest = (
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("version"))
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    query = (
        select(Dataset, DatasetVersion)
        .where(Dataset.owner_id == owner.id)
        .outerjoin(latest, latest.c.dataset_id == Dataset.id)
        .outerjoin(
            DatasetVersion,
            and_(
                DatasetVersion.dataset_id == Dataset.id,
                DatasetVersion.version == latest.c.version,
            ),
        )
        .order_by(Dataset.id)
    )
    return [Summary(dataset, version) for dataset, version in session.execute(query)]


def get_own(session: Session, owner: User, dataset_id: int) -> Dataset:
    """One of the owner's datasets; anyone else's is "not found", exactly like a missing one."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != owner.id:
        raise NotFound(f"dataset {dataset_id} not found", param="dataset_id")
    return dataset


def detail(session: Session, owner: User, dataset_id: int) -> Detail:
    """One of the owner's datasets with all its versions, oldest first."""
    dataset = get_own(session, owner, dataset_id)
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
    return Detail(dataset, list(session.scalars(query.order_by(DatasetVersion.version))))


def get_version_own(session: Session, owner: User, dataset_id: int, version: int) -> DatasetVersion:
    """Version ``version`` of one of the owner's datasets."""
    return find_version(session, owner, dataset_id, version).version


def find_version(session: Session, owner: User, dataset_id: int, version: int) -> Versioned:
    """Version ``version`` of one of the owner's datasets, with the dataset."""
    dataset = get_own(session, owner, dataset_id)
    row = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"dataset {dataset_id} has no version {version}", param="version")
    return Versioned(dataset, row)


def rows(
    storage: Storage,
    version: DatasetVersion,
    split: SplitName = "train",
    *,
    offset: int = 0,
    limit: int = 20,
) -> Page:
    """Normalised examples of one split, ``limit`` of them from position ``offset``."""
    if offset < 0 or limit < 1:
        raise InvalidRequest(f"offset must be >= 0 and limit >= 1, got {offset} and {limit}")
    total = version.train_examples if split == "train" else version.validation_examples
    found = list(islice(_examples(storage, version, split), offset, offset + limit))
    return Page(split, offset, total, found)


def stats(
    storage: Storage,
    version: DatasetVersion,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> TokenStats:
    """Token lengths of the training split under ``tokenizer``'s chat template."""
    _check_max_length(max_length)
    with _lock_for(tokenizer):
        return chat.token_stats(
            tokenizer, _examples(storage, version, "train"), max_length=max_length
        )


def preview(
    storage: Storage,
    version: DatasetVersion,
    tokenizer: PreTrainedTokenizerBase,
    index: int,
    max_length: int,
    split: SplitName = "train",
) -> list[Segment]:
    """Example ``index`` of a split as rendered text, in trained and masked runs."""
    _check_max_length(max_length)
    total = version.train_examples if split == "train" else version.validation_examples
    if not 0 <= index < total:
        allowed = f"0 to {total - 1}" if total else "none: it is empty"
        raise InvalidRequest(
            f"index {index} is out of range: the {split} split has {total} examples "
            f"(indexes allowed: {allowed})",
            param="index",
        )
    messages = next(islice(_examples(storage, version, split), index, None))
    with _lock_for(tokenizer):
        return chat.preview(tokenizer, messages, max_length=max_length)


def _check_max_length(max_length: int) -> None:
    if max_length < 1:
        raise InvalidRequest(
            f"max_length must be a positive number of tokens, got {max_length}",
            param="max_length",
        )


def _examples(
    storage: Storage, version: DatasetVersion, split: SplitName
) -> Iterator[list[dict[str, str]]]:
    """Conversations of a split, read line by line from the normalised file."""
    sha = version.train_sha256 if split == "train" else version.validation_sha256
    if sha is None:
        return
    with storage.path(sha).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                messages: list[dict[str, str]] = json.loads(line)["messages"]
                yield messages


def version_rows(
    session: Session,
    storage: Storage,
    owner: User,
    dataset_id: int,
    version: int,
    *,
    split: SplitName = "train",
    offset: int = 0,
    limit: int = 20,
) -> Page:
    """``rows`` of a version of one of the owner's datasets."""
    found = get_version_own(session, owner, dataset_id, version)
    return rows(storage, found, split, offset=offset, limit=limit)


def version_stats(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner: User,
    dataset_id: int,
    version: int,
    *,
    base: int | None,
    max_length: int,
) -> TokenStats:
    """``stats`` of a version of one of the owner's datasets under base model ``base``'s
    tokenizer (the default base model when None)."""
    found = get_version_own(session, owner, dataset_id, version)
    return stats(storage, found, _tokenizer_of(session, settings, base), max_length)


def version_preview(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner: User,
    dataset_id: int,
    version: int,
    *,
    base: int | None,
    index: int,
    max_length: int,
    split: SplitName = "train",
) -> list[Segment]:
    """``preview`` of an example of one of the owner's datasets under base model ``base``."""
    found = get_version_own(session, owner, dataset_id, version)
    tokenizer = _tokenizer_of(session, settings, base)
    return preview(storage, found, tokenizer, index, max_length, split)


def _tokenizer_of(
    session: Session, settings: Settings, base: int | None
) -> PreTrainedTokenizerBase:
    if base is None:
        row = session.scalar(select(BaseModel).where(BaseModel.is_default.is_(True)).limit(1))
        if row is None:
            raise InvalidRequest(
                "no default base model is registered; pass base=<id> of a base model "
                "(see GET /api/base-models)",
                param="base",
            )
    else:
        row = session.get(BaseModel, base)
        if row is None:
            raise NotFound(f"base model {base} not found", param="base")
    try:
        return load_tokenizer(str(base_models.absolute_path(settings, row)))
    except InvalidRequest as error:  # its message names a server path: keep that in the log
        log.warning("base model %s: %s", row.id, error.message)
        raise InvalidRequest(
            f"the tokenizer of base model {row.name!r} cannot be loaded; ask an admin to check "
            "the model's folder, or choose another base model",
            code=error.code,
            param="base",
        ) from None


# tokenizers -----------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a base model folder (local files, never remote code); the last 4
    loaded stay in memory."""
    from transformers import AutoTokenizer

    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
            path, trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise InvalidRequest(
            f"cannot load the tokenizer in {path}: {error}", code="tokenizer_unavailable"
        ) from error
    return tokenizer


# A fast tokenizer must not run in two threads at once (its Rust side raises "Already
# borrowed"); requests run in a thread pool and share the cached tokenizers.
_locks: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, threading.Lock] = (
    weakref.WeakKeyDictionary()
)
_locks_guard = threading.Lock()


def _lock_for(tokenizer: PreTrainedTokenizerBase) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(tokenizer, threading.Lock())
