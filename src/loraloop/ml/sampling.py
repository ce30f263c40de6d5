"""Choosing the next token and turning tokens into text, one request at a time.

:class:`SamplingParams` carries OpenAI's knobs, checked against OpenAI's ranges. Per step the
engine hands the logits of every running request to :func:`next_tokens`: plain greedy rows
take one batched ``argmax``; the others, in order, get the presence/frequency penalties over
their own generated tokens, then temperature, top-k, top-p and a draw from their own seeded
``torch.Generator`` (so a seed reproduces a request whatever else shares its batch).

:class:`TextStream` decodes incrementally (a window of the last tokens, so a UTF-8 character
split over byte tokens is held back until complete) and holds back any tail that could be the
start of a stop string::

    tokens   e3 81 82 | "Hi" | "<"  "/" | "s" ">"       stop = ("</s>",)
    emitted  ""  "" "あ" | "Hi" | ""  "" | -> stop, text ends before "</s>"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loraloop.errors import InvalidRequest

if TYPE_CHECKING:  # SamplingParams is imported by the API, which need not load torch
    import torch

__all__ = ["MAX_STOP_STRINGS", "RequestSampler", "SamplingParams", "TextStream", "next_tokens"]

MAX_STOP_STRINGS = 4
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; invalid values raise :class:`InvalidRequest` naming each."""

    max_tokens: int = 256
    """Most tokens to generate (at least 1); reaching it ends with ``finish_reason="length"``."""
    temperature: float = 1.0
    """0 to 2; 0 means greedy (always the most likely token)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (0, 1]."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 turns it off."""
    seed: int | None = None
    """Same seed, prompt and adapter give the same output; None draws a random seed."""
    stop: tuple[str, ...] = ()
    """Up to 4 strings; the output ends before the first one, which is not included."""
    presence_penalty: float = 0.0
    """-2 to 2, subtracted once from every token already generated."""
    frequency_penalty: float = 0.0
    """-2 to 2, subtracted per time a token was already generated."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks); stop strings still apply."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string, as OpenAI also accepts
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        problems = _problems(self)
        if problems:
            raise InvalidRequest("; ".join(problems.values()), param=next(iter(problems)))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problems(params: SamplingParams) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not _integer(params.max_tokens) or params.max_tokens < 1:
        problems["max_tokens"] = f"max_tokens: {params.max_tokens!r} must be an integer >= 1"
    if not _number(params.temperature) or not 0 <= params.temperature <= 2:
        problems["temperature"] = f"temperature: {params.temperature!r} must be from 0 to 2"
    if not _number(params.top_p) or not 0 < params.top_p <= 1:
        problems["top_p"] = f"top_p: {params.top_p!r} must be above 0 and at most 1"
    if not _integer(params.top_k) or params.top_k < 0:
        problems["top_k"] = f"top_k: {params.top_k!r} must be an integer >= 0 (0 turns it off)"
    if params.seed is not None and not (_integer(params.seed) and -(2**63) <= params.seed < 2**64):
        problems["seed"] = f"seed: {params.seed!r} must be a 64-bit integer or null"
    stop = params.stop
    if not isinstance(stop, tuple) or not all(isinstance(s, str) and s for s in stop):
        problems["stop"] = f"stop: {stop!r} must be up to {MAX_STOP_STRINGS} non-empty strings"
    elif len(stop) > MAX_STOP_STRINGS:
        problems["stop"] = f"stop: {len(stop)} strings given, at most {MAX_STOP_STRINGS} allowed"
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if not _number(value) or not -2 <= value <= 2:
            problems[name] = f"{name}: {value!r} must be from -2 to 2"
    if not isinstance(params.ignore_eos, bool):
        problems["ignore_eos"] = f"ignore_eos: {params.ignore_eos!r} must be true or false"
    return problems


# --- choosing tokens ------------------------------------------------------------------------


@dataclass
class RequestSampler:
    """One request's sampling state: its generator and counts of its generated tokens."""

    params: SamplingParams
    device: torch.device
    generator: torch.Generator | None = None
    counts: torch.Tensor | None = None
    _seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        if not self.params.greedy:
            self.generator = torch.Generator(device=self.device)
            if self.params.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.params.seed)

    @property
    def plain_greedy(self) -> bool:
        return self.params.greedy and not self.params.penalised

    def observe(self, token: int) -> None:
        """Count a generated token (for the penalties)."""
        if self.params.penalised:
            self._seen.append(token)

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from one row of float32 logits (``[vocab]``); may modify ``logits``."""
        import torch

        params = self.params
        if params.penalised and self._seen:
            if self.counts is None:
                self.counts = torch.zeros(logits.shape[-1], dtype=torch.float32, device=self.device)
            seen = torch.tensor(self._seen, device=self.device)
            self.counts.index_add_(0, seen, torch.ones_like(seen, dtype=torch.float32))
            self._seen.clear()
        if self.counts is not None:
            logits -= self.counts * params.frequency_penalty
            logits -= (self.counts > 0).to(logits.dtype) * params.presence_penalty
        if params.greedy:
            return int(torch.argmax(logits))
        logits /= params.temperature
        if 0 < params.top_k < logits.shape[-1]:
            kth = torch.topk(logits, params.top_k).values[-1]
            logits[logits < kth] = -math.inf
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1:
            probs = _nucleus(probs, params.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest top set whose mass reaches ``top_p``."""
    import torch

    sorted_probs, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens above
    sorted_probs[before >= top_p] = 0  # the most likely token always stays (before == 0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def next_tokens(logits: torch.Tensor, samplers: Sequence[RequestSampler]) -> list[int]:
    """One token per row of ``logits`` (``[rows, vocab]``), row i chosen by ``samplers[i]``."""
    import torch

    logits = logits.float()
    greedy = [i for i, s in enumerate(samplers) if s.plain_greedy]
    chosen = [0] * len(samplers)
    if greedy:
        rows = logits if len(greedy) == len(samplers) else logits[greedy]
        for i, token in zip(greedy, torch.argmax(rows, dim=-1).tolist(), strict=True):
            chosen[i] = token
    for i, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            chosen[i] = sampler.choose(logits[i].clone())
    return chosen


# --- tokens to text -------------------------------------------------------------------------


class TextStream:
    """Incremental detokenisation with stop strings: :meth:`push` a token, get the new text.

    Text is only ever emitted whole: a UTF-8 character split across tokens waits for its last
    byte, and a tail that could begin a stop string waits until it cannot. ``stopped`` turns
    True once a stop string appears; the text emitted ends right before it.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._prefix = 0  # decoding starts here (a little context before the unread tokens)
        self._read = 0  # tokens before this are already turned into text
        self._held = ""  # decoded, but maybe the start of a stop string
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a generated token; returns the text that is now final (possibly empty)."""
        if self.stopped:
            return ""
        self._ids.append(token)
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, len(self._ids))
        if len(after) <= len(before) or after.endswith(_REPLACEMENT):
            return ""  # an incomplete character (or nothing printable) so far
        self._prefix, self._read = self._read, len(self._ids)
        return self._release(after[len(before) :])

    def flush(self) -> str:
        """At the end: whatever is still held back (an incomplete character stays as U+FFFD)."""
        if self.stopped:
            return ""
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        text = self._release(after[len(before) :], final=True)
        return text

    def _decode(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        text: str = self._tokenizer.decode(self._ids[start:end], skip_special_tokens=True)
        return text

    def _release(self, new: str, *, final: bool = False) -> str:
        text = self._held + new
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return text[:cut]
        hold = 0 if final else _stop_prefix(text, self._stop)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]


def _stop_prefix(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for string in stop:
        for size in range(min(len(string) - 1, len(text)), longest, -1):
            if text.endswith(string[:size]):
                longest = size
                break
    return longest
