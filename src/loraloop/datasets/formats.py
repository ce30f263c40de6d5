"""Reading an uploaded JSON Lines dataset in one of four chat formats, normalised to ``messages``.

One example per line; blank lines are skipped. The format is recognised by its keys (or chosen
with ``format=``) and must be the same on every line::

    messages           {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", ...}]}
    alpaca             {"instruction": "...", "input": "...", "output": "...", "system": "..."}
    sharegpt           {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", ...}]}
    prompt_completion  {"prompt": "...", "completion": "..."}

Every example becomes a list of ``{"role", "content"}`` messages with roles ``system`` (first
only), then ``user`` and ``assistant`` alternating, with at least one non-empty assistant turn.

Plugins add formats with :func:`register_format` (see docs/plugins.md): a
:class:`DatasetFormat` parses one line's JSON object into messages, reporting problems the way
the built-in formats do, and its output is checked by the same rules, so a plugin cannot
smuggle an unusable example in.

The upload is read in chunks and never held whole: the byte limit stops a huge body as soon as
it is crossed. Every problem is collected with its line number and reported in one error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from loraloop.errors import InvalidRequest, PayloadTooLarge

__all__ = [
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
]

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")
ROLES = ("system", "user", "assistant")

#: Keys that identify each format; a line holding keys of two formats is ambiguous.
_MARKERS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
}
#: What each format expects, as said in problems.
_EXPECTED: dict[str, str] = {
    "messages": '"messages" (a list of {"role", "content"})',
    "alpaca": '"instruction" and "output" (optional "input", "system")',
    "sharegpt": '"conversations" (a list of {"from", "value"}; optional "system")',
    "prompt_completion": '"prompt" and "completion"',
}
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
_CHUNK = 1 << 16
_SHOWN_IN_MESSAGE = 10
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")

Messages = list[dict[str, str]]
Report = Callable[[str | None, str], None]
"""``report(field, message)``: one problem with the current line (``field`` may be None)."""
Normaliser = Callable[[dict[str, object], Report], Messages]
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the upload: ``line`` is 1-based (0 for the file as a whole)."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class DatasetInvalid(InvalidRequest):
    """The upload has problems; ``problems`` holds the first ``max_problems`` of ``total``."""

    default_code = "dataset_invalid"

    def __init__(self, problems: list[Problem], *, total: int | None = None) -> None:
        total = len(problems) if total is None else total
        shown = "\n".join(str(problem) for problem in problems[:_SHOWN_IN_MESSAGE])
        more = total - min(len(problems), _SHOWN_IN_MESSAGE)
        tail = f"\n… and {more} more" if more else ""
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"the dataset has {total} {noun}:\n{shown}{tail}", param="file")
        self.problems = problems
        self.total = total


@dataclass(frozen=True)
class Example:
    """One normalised conversation and the line of the upload it came from."""

    messages: Messages
    line: int


@dataclass(frozen=True)
class ParsedDataset:
    """A valid upload: its format, its examples, its size and the sha256 of its raw bytes."""

    format: str
    examples: list[Example]
    bytes: int
    sha256: str


def read_jsonl(
    stream: BinaryIO, *, max_bytes: int, format: str | None = None, max_problems: int = 50
) -> ParsedDataset:
    """Read and validate a JSON Lines upload; raise ``DatasetInvalid`` listing every problem.

    Raises ``PayloadTooLarge`` as soon as more than ``max_bytes`` have been read, and
    ``InvalidRequest`` for an unknown ``format``. Nothing is returned when any line is wrong.
    """
    if format is not None and format not in known_formats():
        allowed = ", ".join(known_formats())
        raise InvalidRequest(f"format {format!r} is not known; allowed: {allowed}", param="format")
    if max_bytes < 1 or max_problems < 1:
        raise ValueError("max_bytes and max_problems must be positive")
    reader = _Reader(format, max_problems)
    tally = _Tally()
    for line, offset, raw in _lines(stream, max_bytes, tally):
        reader.feed(line, offset, raw)
    if reader.total == 0 and not reader.examples:
        reader.report(0, None, "has no examples (it is empty or holds only blank lines)")
    if reader.total:
        raise DatasetInvalid(reader.problems, total=reader.total)
    return ParsedDataset(str(reader.format), reader.examples, tally.bytes, tally.sha256.hexdigest())


def content_hash(examples: Iterable[Example]) -> str:
    """sha256 of the normalised conversations as canonical JSON Lines, the same for any format."""
    digest = hashlib.sha256()
    for example in examples:
        messages = [{"role": m["role"], "content": m["content"]} for m in example.messages]
        line = json.dumps(
            {"messages": messages}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class DatasetFormat:
    """A format a plugin adds. ``parse`` turns one line's JSON object into ``messages``
    (``{"role", "content"}`` dicts), calling ``report`` for each problem; the reader adds the
    line number and checks the messages by the built-in rules. ``markers`` are keys that
    recognise the format when the upload names none (empty: only chosen with ``format=``);
    ``expected`` says in words what a line holds, for problem messages."""

    name: str
    parse: Normaliser
    markers: tuple[str, ...] = ()
    expected: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            problems.append(
                f"name {self.name!r} must be 1-32 lower-case letters, digits or '_', "
                "starting with a letter"
            )
        elif self.name in FORMATS:
            problems.append(f"name {self.name!r} is a built-in format")
        if not callable(self.parse):
            problems.append(f"parse must be callable, got {type(self.parse).__name__}")
        if isinstance(self.markers, str) or not all(
            isinstance(key, str) and key for key in self.markers
        ):
            problems.append(f"markers must be a tuple of non-empty keys, got {self.markers!r}")
        if problems:
            raise ValueError("dataset format: " + "; ".join(problems))


_ADDED: dict[str, DatasetFormat] = {}


def register_format(added: DatasetFormat) -> None:
    """Make ``added`` readable by every later upload; the same format again is a no-op.

    Raises ``ValueError`` when another format already has its name.
    """
    held = _ADDED.get(added.name)
    if held is not None and held != added:
        raise ValueError(f"dataset format {added.name!r} is already added by another plugin")
    _ADDED[added.name] = added


def unregister_format(name: str) -> None:
    """Forget the added format ``name`` (nothing happens for an unknown name)."""
    _ADDED.pop(name, None)


def known_formats() -> tuple[str, ...]:
    """The built-in formats, then those plugins added, in the order they were added."""
    return FORMATS + tuple(_ADDED)


class _Formats:
    """Markers, descriptions and normalisers of every known format, taken once per upload so
    a plugin loading mid-upload cannot change the rules halfway through a file."""

    def __init__(self) -> None:
        added = dict(_ADDED)
        self.markers = {**_MARKERS, **{n: f.markers for n, f in added.items() if f.markers}}
        self.expected = {
            **_EXPECTED,
            **{n: f.expected or f"what the {n} format reads" for n, f in added.items()},
        }
        self.normalisers = {**_NORMALISERS, **{n: _plugin(f) for n, f in added.items()}}
        self.names = FORMATS + tuple(added)


def _plugin(added: DatasetFormat) -> Normaliser:
    """The plugin's parser, with its own failures turned into this line's problem and its
    output checked like a ``messages`` line."""

    def normalise(obj: dict[str, object], report: Report) -> Messages:
        count = 0

        def counted(field: str | None, message: str) -> None:
            nonlocal count
            count += 1
            report(field, message)

        try:
            messages: object = added.parse(obj, counted)
        except Exception as error:  # a plugin's bug is a problem of this line, not a crash
            report(
                None,
                f"the {added.name} format (a plugin) failed on this line: "
                f"{type(error).__name__}: {error}",
            )
            return []
        if count:
            return []
        return _turns(messages, "messages", "role", "content", {r: r for r in ROLES}, report)

    return normalise


class _Tally:
    """How many bytes were read, and their sha256."""

    def __init__(self) -> None:
        self.bytes = 0
        self.sha256 = hashlib.sha256()


def _lines(stream: BinaryIO, max_bytes: int, tally: _Tally) -> Iterator[tuple[int, int, bytes]]:
    """Yield (line number, byte offset, bytes without the newline), reading at most max_bytes+1."""
    buffer = bytearray()
    line = 0
    start = 0  # file offset of buffer[0]
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - tally.bytes))
        if not chunk:
            break
        tally.bytes += len(chunk)
        if tally.bytes > max_bytes:
            raise PayloadTooLarge(
                f"the upload is larger than the limit of {max_bytes} bytes "
                f"({max_bytes / 1048576:.1f} MiB); split it into smaller files",
                param="file",
            )
        tally.sha256.update(chunk)
        scan = len(buffer)
        buffer += chunk
        cut = 0
        while (newline := buffer.find(b"\n", scan)) != -1:
            line += 1
            yield line, start + cut, bytes(buffer[cut:newline])
            cut = scan = newline + 1
        del buffer[:cut]
        start += cut
    if buffer:
        yield line + 1, start, bytes(buffer)


class _Reader:
    """Turns lines into examples, collecting problems; keeps no examples once one is found."""

    def __init__(self, format: str | None, max_problems: int) -> None:
        self.format = format
        self.chosen_by_line = 0 if format else None
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.total = 0
        self.examples: list[Example] = []
        self.formats = _Formats()

    def report(self, line: int, field: str | None, message: str) -> None:
        self.total += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(line, field, message))

    def feed(self, line: int, offset: int, raw: bytes) -> None:
        if line == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self.report(
                line,
                None,
                f"is not valid UTF-8 at byte {error.start} of the line (byte {offset + error.start}"
                f" of the file): {error.reason}; save the file as UTF-8",
            )
            return
        if not text.strip():
            return
        obj = self._parse(line, text)
        if obj is None:
            return
        chosen = self._format_of(line, obj)
        if chosen is None:
            return
        messages = self.formats.normalisers[chosen](obj, partial(self.report, line))
        if not self.total:
            self.examples.append(Example(messages, line))
        elif self.examples:
            self.examples = []  # nothing partial is returned, so stop holding memory

    def _parse(self, line: int, text: str) -> dict[str, object] | None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as error:
            self.report(line, None, f"invalid JSON at column {error.colno}: {error.msg}")
            return None
        except RecursionError:
            self.report(line, None, "invalid JSON: nested too deeply")
            return None
        if not isinstance(obj, dict):
            self.report(line, None, f"must be a JSON object, got {_describe(obj)}")
            return None
        return obj

    def _format_of(self, line: int, obj: dict[str, object]) -> str | None:
        markers, described = self.formats.markers, self.formats.expected
        found = [name for name, keys in markers.items() if any(key in obj for key in keys)]
        keys = ", ".join(json.dumps(key) for key in list(obj)[:8]) or "none"
        if self.chosen_by_line == 0:  # the caller chose the format
            if self.format in found or self.format not in markers:
                return self.format  # a format without markers takes any object
            self.report(
                line,
                None,
                f"does not look like {self.format}: expected "
                f"{described[str(self.format)]}, got keys {keys}"
                + (f" (that looks like {' or '.join(found)})" if found else ""),
            )
            return None
        if len(found) != 1:
            what = (
                "matches no known format" if not found else "mixes keys of " + " and ".join(found)
            )
            expected = "; ".join(
                f"{name}: {described[name]}" for name in self.formats.names if name in markers
            )
            self.report(line, None, f"{what} (got keys {keys}); expected one of — {expected}")
            return None
        if self.format is None:
            self.format, self.chosen_by_line = found[0], line
        if found[0] == self.format:
            return self.format
        self.report(
            line,
            None,
            f"looks like {found[0]} but line {self.chosen_by_line} is "
            f"{self.format}; one file must use one format (expected {described[self.format]})",
        )
        return None


def _from_messages(obj: dict[str, object], report: Report) -> Messages:
    return _turns(obj.get("messages"), "messages", "role", "content", {r: r for r in ROLES}, report)


def _from_sharegpt(obj: dict[str, object], report: Report) -> Messages:
    system = _text(obj, "system", report, required=False, empty_ok=True)
    turns = _turns(
        obj.get("conversations"), "conversations", "from", "value", _SHAREGPT_ROLES, report
    )
    if system and turns and turns[0]["role"] != "system":
        return [{"role": "system", "content": system}, *turns]
    return turns


def _from_alpaca(obj: dict[str, object], report: Report) -> Messages:
    instruction = _text(obj, "instruction", report)
    extra = _text(obj, "input", report, required=False, empty_ok=True)
    output = _text(obj, "output", report, what="an empty assistant turn")
    system = _text(obj, "system", report, required=False, empty_ok=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _from_prompt_completion(obj: dict[str, object], report: Report) -> Messages:
    prompt = _text(obj, "prompt", report)
    completion = _text(obj, "completion", report, what="an empty assistant turn")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


_NORMALISERS: dict[str, Normaliser] = {
    "messages": _from_messages,
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
    "prompt_completion": _from_prompt_completion,
}


def _text(
    obj: dict[str, object],
    key: str,
    report: Report,
    *,
    required: bool = True,
    empty_ok: bool = False,
    what: str = "",
) -> str:
    """The string at ``key`` ('' when absent and optional, or wrong, after reporting why)."""
    value = obj.get(key)
    if value is None and not required:
        return ""
    if key not in obj:
        report(key, "is missing; it must be a non-empty string")
    elif not isinstance(value, str):
        report(key, f"must be a string, got {_describe(value)}")
    elif _SURROGATE.search(value):
        report(key, "holds an unpaired surrogate escape (such as \\ud800), which is not text")
    elif not empty_ok and not value.strip():
        report(key, f"must not be empty{f' ({what})' if what else ''}")
    else:
        return value
    return ""


def _turns(
    items: object,
    field: str,
    role_key: str,
    content_key: str,
    roles: dict[str, str],
    report: Report,
) -> Messages:
    """Normalise a list of turns and check their order; problems name ``field[i].key``."""
    if not isinstance(items, list):
        report(field, f"must be a list of turns, got {_describe(items)}")
        return []
    if not items:
        report(field, "must not be empty")
        return []
    allowed = ", ".join(json.dumps(role) for role in roles)
    messages: Messages = []
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            report(
                where,
                f'must be an object with "{role_key}" and "{content_key}", got {_describe(item)}',
            )
            continue
        role = item.get(role_key)
        if not isinstance(role, str) or role not in roles:
            got = "it is missing" if role_key not in item else f"got {_describe(role)}"
            report(f"{where}.{role_key}", f"must be one of {allowed}; {got}")
            continue
        content = _text(
            item, content_key, _within(where, report), what=f"an empty {roles[role]} turn"
        )
        messages.append({"role": roles[role], "content": content})
    if len(messages) == len(items):
        _check_order(messages, field, role_key, report)
    return messages


def _within(prefix: str, report: Report) -> Report:
    """A reporter that names fields inside ``prefix`` (``messages[2]`` + ``content``)."""
    return lambda field, message: report(f"{prefix}.{field}", message)


def _check_order(messages: Messages, field: str, role_key: str, report: Report) -> None:
    """System only first; then user and assistant alternate, starting with user; one assistant."""
    expected = "user"
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "system" and index == 0:
            continue
        if role != expected:
            report(
                f"{field}[{index}].{role_key}",
                f"expected {_a(expected)} turn here, got {_a(role)} turn; after an optional "
                "first system message, user and assistant turns must alternate, starting with user",
            )
            return
        expected = "assistant" if role == "user" else "user"
    if not any(message["role"] == "assistant" for message in messages):
        report(field, "has no assistant turn; there would be nothing to learn from this example")


def _a(role: str) -> str:
    return f"an {role}" if role == "assistant" else f"a {role}"


def _describe(value: object) -> str:
    """A JSON type name and a short preview of the value, for problem messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        preview = value if len(value) <= 40 else value[:40] + "…"
        shown = json.dumps(preview, ensure_ascii=False)
        return "string " + _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", shown)
    return "an array" if isinstance(value, list) else "an object"
