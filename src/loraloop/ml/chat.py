"""Tokenising a conversation for training, with the loss on the assistant's tokens only.

The model's own chat template renders the conversation; the assistant's turns are found in the
rendered text by rendering growing prefixes of the conversation (``messages[:i]`` with and
without the generation prompt, then ``messages[:i+1]``), so no template is assumed. The text is
tokenised once with character offsets, and a token is trained when its characters fall in an
assistant span: the turn's content and the end-of-turn token right after it, so the model
learns to stop. Everything else (system, user, role headers) is labelled ``-100``::

    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    └──────────────────────── masked ─────────────────────┘└─ trained ──────┘└ masked

Labels are aligned with ``input_ids`` (not shifted); the model shifts them when computing loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from loraloop.errors import InvalidRequest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE", "Encoded", "Segment", "TokenStats", "encode", "preview", "token_stats"]

IGNORE = -100

Message = Mapping[str, str]
Span = tuple[int, int]


@dataclass(frozen=True)
class Encoded:
    """Token ids and labels (``IGNORE`` where not trained), cut to ``max_length`` if needed."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trained_tokens(self) -> int:
        """How many tokens carry loss; 0 means truncation cut every assistant token away."""
        return sum(label != IGNORE for label in self.labels)


@dataclass(frozen=True)
class TokenStats:
    """Token counts over a set of conversations; lengths are before truncation."""

    count: int
    total_tokens: int
    #: Assistant tokens that training sees, after truncation.
    trained_tokens: int
    mean: float
    p50: int
    p95: int
    max: int
    #: Conversations longer than ``max_length`` (cut from the right).
    exceeding: int
    #: Positions of conversations left with no assistant token after truncation.
    untrainable: list[int]


class Segment(NamedTuple):
    """A run of text that is all trained (assistant) or all masked."""

    text: str
    trained: bool


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, max_length: int
) -> Encoded:
    """Token ids and assistant-only labels; check ``trained_tokens`` when ``truncated``."""
    ids, labels, _, _ = _tokenize(tokenizer, messages, max_length)
    keep = min(len(ids), max_length)
    return Encoded(ids[:keep], labels[:keep], truncated=len(ids) > max_length)


def token_stats(
    tokenizer: PreTrainedTokenizerBase, examples: Iterable[Sequence[Message]], *, max_length: int
) -> TokenStats:
    """Length distribution (nearest-rank percentiles) and what truncation would cost."""
    lengths: list[int] = []
    trained = 0
    untrainable: list[int] = []
    for position, messages in enumerate(examples):
        ids, labels, _, _ = _tokenize(tokenizer, messages, max_length)
        lengths.append(len(ids))
        kept = sum(label != IGNORE for label in labels[:max_length])
        trained += kept
        if not kept:
            untrainable.append(position)
    ordered = sorted(lengths)
    return TokenStats(
        count=len(lengths),
        total_tokens=sum(lengths),
        trained_tokens=trained,
        mean=sum(lengths) / len(lengths) if lengths else 0.0,
        p50=_percentile(ordered, 50),
        p95=_percentile(ordered, 95),
        max=ordered[-1] if ordered else 0,
        exceeding=sum(length > max_length for length in lengths),
        untrainable=untrainable,
    )


def preview(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, max_length: int
) -> list[Segment]:
    """The rendered conversation as trained and masked runs, up to where truncation cuts it.

    Text is sliced from the rendering by character offsets, never decoded token by token, so a
    character split over several byte tokens (Japanese) comes back whole.
    """
    ids, labels, offsets, text = _tokenize(tokenizer, messages, max_length)
    pieces: list[tuple[str, bool]] = []
    covered = 0
    for (_, end), label in zip(offsets[:max_length], labels[:max_length], strict=True):
        if end > covered:  # otherwise the rest of a character an earlier token started
            pieces.append((text[covered:end], label != IGNORE))
            covered = end
    if len(ids) <= max_length and covered < len(text):
        pieces.append((text[covered:], False))
    return [
        Segment("".join(piece for piece, _ in run), trained)
        for trained, run in groupby(pieces, key=itemgetter(1))
    ]


def _percentile(ordered: list[int], percent: int) -> int:
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)] if ordered else 0


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int
) -> tuple[list[int], list[int], list[Span], str]:
    """The whole conversation's ids, labels and character offsets, and its rendered text."""
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if not messages:
        raise InvalidRequest("a conversation needs at least one message", param="messages")
    text = _render(tokenizer, messages)
    if text is None:
        raise InvalidRequest("the chat template cannot render this conversation", param="messages")
    spans = _assistant_spans(tokenizer, messages, text)
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as error:  # slow tokenizers have no offsets
        raise InvalidRequest(f"a fast tokenizer is needed to mask turns: {error}") from error
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[Span] = [(int(start), int(end)) for start, end in encoding["offset_mapping"]]
    labels = [
        token if end > start and _inside(start, end, spans) else IGNORE
        for token, (start, end) in zip(ids, offsets, strict=True)
    ]
    return ids, labels, offsets, text


def _inside(start: int, end: int, spans: list[Span]) -> bool:
    return any(start < span_end and end > span_start for span_start, span_end in spans)


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, prompt: bool = False
) -> str | None:
    """The template's text for ``messages``, or None where the template refuses them."""
    conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        text = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=prompt
        )
    except Exception:  # templates raise what they like on conversations they do not accept
        return None
    return text if isinstance(text, str) else None


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], text: str
) -> list[Span]:
    """Character spans of each assistant turn's content and the end-of-turn token after it."""
    markers = _special_tokens(tokenizer)
    spans: list[Span] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        low, high, exact = _turn(tokenizer, messages, index, text, cursor)
        find = text.rfind if exact else text.find  # the content ends an exactly bounded turn
        content = message["content"]
        start = find(content, low, high) if content else -1
        if start < 0 and content.strip():
            content = content.strip()  # templates that trim the content
            start = find(content, low, high)
        if start < 0:  # the template changes the content: train the whole turn body
            start, content = low, ""
        end = _through_end_of_turn(text, start + len(content), high, markers)
        spans.append((start, end))
        cursor = end
    return spans


def _turn(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    index: int,
    text: str,
    cursor: int,
) -> tuple[int, int, bool]:
    """Where the assistant turn ``messages[index]`` lies in ``text``: after its header, to its end.

    Falls back to (cursor, end of text, not exact) when a prefix does not render as a prefix of
    ``text`` (templates that render earlier turns differently).
    """
    after = _render(tokenizer, messages[: index + 1])
    exact = after is not None and text.startswith(after)
    high = len(after) if after is not None and exact else len(text)
    low = cursor
    if index:
        for prompt in (True, False):  # the generation prompt ends where the header ends
            before = _render(tokenizer, messages[:index], prompt=prompt)
            if before is not None and text.startswith(before) and cursor <= len(before) <= high:
                low = len(before)
                break
    return low, high, exact


def _through_end_of_turn(text: str, end: int, high: int, markers: list[str]) -> int:
    """Extend ``end`` over whitespace and the special token closing the turn, when one follows."""
    rest = text[end:high]
    gap = len(rest) - len(rest.lstrip())
    for marker in markers:
        if rest.startswith(marker, gap):
            return end + gap + len(marker)
    return end


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Special token texts, longest first so that no token matches a prefix of a longer one."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    found = {*added, *tokenizer.all_special_tokens}
    return sorted((token for token in found if token), key=len, reverse=True)
