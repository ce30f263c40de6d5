"""Sequence packing: many short examples share one row, without seeing each other.

Examples are placed into rows of at most ``max_length`` tokens (first-fit decreasing). Inside a
row every example restarts its ``position_ids`` at 0; with ``attention_mask=None`` transformers
turns those restarts into a block-diagonal causal mask, so no token attends across an example
boundary. The first label of every example is ``-100`` so no token is trained to predict the
start of the next example. Rows are padded only at their end (pad tokens form their own block
and carry ``-100`` labels)::

    row:        [ A A A A | B B B | C C | pad pad ]
    positions:  [ 0 1 2 3 | 0 1 2 | 0 1 | 0   1   ]
    labels:     [ - a a a | - b b | - c | -   -   ]

A block-diagonal mask still costs attention over the whole row (``width²`` per row, nearly all
of it masked out). :func:`use_packed_attention` replaces it for plain causal attention: the
examples of a micro-batch are gathered into groups of similar length, each group attends
causally in one padded block, and the outputs are gathered back to their rows::

    A A A A . | B B B . .      groups by length, padded at the end (causal attention never
    D D D D D | C C . . .      lets a real token see the padding after it)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["IGNORE", "Batch", "PackedRow", "batches", "pack", "use_packed_attention"]

IGNORE = -100


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    examples: int

    @property
    def real_tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Batch:
    """Rectangular lists ready for ``torch.tensor``; ``real_tokens`` excludes padding."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    position_ids: list[list[int]]
    real_tokens: int
    trained_tokens: int


def pack(examples: Sequence[tuple[list[int], list[int]]], max_length: int) -> list[PackedRow]:
    """Place (input_ids, labels) pairs into rows of at most ``max_length`` tokens.

    Order of the result follows the first example placed in each row, so a shuffled input
    gives shuffled rows. Examples longer than ``max_length`` must be truncated beforehand.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    rows: list[PackedRow] = []
    first_index: list[int] = []
    free: list[int] = []
    for index in order:
        ids, labels = examples[index]
        if len(ids) > max_length:
            raise ValueError(f"example of {len(ids)} tokens exceeds max_length {max_length}")
        slot = next((r for r, space in enumerate(free) if space >= len(ids)), None)
        if slot is None:
            rows.append(PackedRow([], [], [], 0))
            first_index.append(index)
            free.append(max_length)
            slot = len(rows) - 1
        row = rows[slot]
        row.input_ids.extend(ids)
        row.labels.extend([IGNORE, *labels[1:]])
        row.position_ids.extend(range(len(ids)))
        row.examples += 1
        free[slot] -= len(ids)
        first_index[slot] = min(first_index[slot], index)
    return [row for _, row in sorted(zip(first_index, rows, strict=True), key=lambda p: p[0])]


def batches(rows: Sequence[PackedRow], rows_per_batch: int, pad_id: int) -> list[Batch]:
    """Group rows into batches, padding each batch to its longest row."""
    out = []
    for start in range(0, len(rows), rows_per_batch):
        group = rows[start : start + rows_per_batch]
        width = max(r.real_tokens for r in group)
        out.append(
            Batch(
                input_ids=[r.input_ids + [pad_id] * (width - r.real_tokens) for r in group],
                labels=[r.labels + [IGNORE] * (width - r.real_tokens) for r in group],
                position_ids=[r.position_ids + list(range(width - r.real_tokens)) for r in group],
                real_tokens=sum(r.real_tokens for r in group),
                trained_tokens=sum(sum(1 for x in r.labels if x != IGNORE) for r in group),
            )
        )
    return out


# --- attention over packed rows -------------------------------------------------------------

_ATTENTION = "loraloop_packed"
#: ``model_type``s whose attention is plain causal softmax attention (no soft-capping, sinks or
#: attention biases), so attending within each example is exactly what a block mask gives.
_PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3"})
#: A group of examples is padded to its longest; a shorter one starts the next group.
_GROUP_RATIO = 0.75
#: Groups up to this length attend with plain matmuls (fastest for short examples); longer ones
#: use sdpa's fused kernel, whose memory grows with the length, not with its square.
_MATMUL_ATTENTION_UP_TO = 256


def use_packed_attention(model: Any) -> bool:
    """Make ``model`` (PEFT-wrapped or not) attend within each packed example, without a mask.

    Returns False, leaving the model as it was, for architectures this cannot reproduce
    exactly (sliding windows, soft-capping, ...); the block-diagonal mask path is used then.
    """
    from transformers import AttentionInterface

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    window = getattr(config, "sliding_window", None)
    if config.model_type not in _PLAIN_ATTENTION or (
        window is not None and getattr(config, "use_sliding_window", True)
    ):
        return False
    AttentionInterface.register(_ATTENTION, _packed_attention)
    # Not an attention-mask kind transformers knows, so it builds no (rows x width²) mask.
    inner.set_attn_implementation(_ATTENTION)
    return True


@dataclass(frozen=True)
class _Layout:
    """Where each token goes in the grouped buffer ``(examples, padded length)`` and back."""

    groups: list[tuple[int, int]]
    """(examples, padded length) per group, in buffer order."""
    to_slots: torch.Tensor
    """Buffer slot -> token; padding slots read token 0 (they are never attended to)."""
    from_slots: torch.Tensor
    """Buffer slot -> token, padding slots -> one past the last token (a zero row)."""
    to_tokens: torch.Tensor
    """Token -> buffer slot."""


#: (position_ids, rows, layout) of the last forward: every layer gets the same position_ids.
_last_layout: list[Any] = [None, 0, None]


def _layout(position_ids: torch.Tensor, rows: int) -> _Layout:
    if _last_layout[0] is position_ids and _last_layout[1] == rows:
        layout: _Layout = _last_layout[2]
        return layout
    width = position_ids.shape[-1]
    flat = position_ids.expand(rows, width).reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1] + 1  # an example starts where positions stop counting up
    starts[::width] = True
    first = torch.nonzero(starts).flatten()
    lengths = torch.diff(first, append=torch.tensor([flat.numel()]))
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    sizes = lengths.tolist()
    groups: list[list[int]] = []
    for index in order:
        if not groups or sizes[index] < _GROUP_RATIO * sizes[groups[-1][0]]:
            groups.append([])
        groups[-1].append(index)
    total = flat.numel()
    to_slots, from_slots = [], []
    for members in groups:
        offsets = torch.arange(sizes[members[0]])
        slots = first[members].unsqueeze(1) + offsets
        real = offsets < lengths[members].unsqueeze(1)
        to_slots.append(torch.where(real, slots, 0).flatten())
        from_slots.append(torch.where(real, slots, total).flatten())
    gathered, scattered = torch.cat(to_slots), torch.cat(from_slots)
    to_tokens = torch.empty(total, dtype=torch.long)
    real_slots = scattered < total
    to_tokens[scattered[real_slots]] = torch.nonzero(real_slots).flatten()
    device = position_ids.device
    layout = _Layout(
        groups=[(len(m), sizes[m[0]]) for m in groups],
        to_slots=gathered.to(device),
        from_slots=scattered.to(device),
        to_tokens=to_tokens.to(device),
    )
    _last_layout[:] = [position_ids, rows, layout]
    return layout


class _Gather(torch.autograd.Function):
    """``source[index]`` whose backward is a gather too (``inverse``), not a scatter-add."""

    @staticmethod
    def forward(ctx: Any, source: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> Any:
        ctx.save_for_backward(inverse)
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (inverse,) = ctx.saved_tensors
        padded = torch.cat([grad, grad.new_zeros((1, *grad.shape[1:]))])  # row for "no source"
        return padded.index_select(0, inverse), None, None


def _gather(source: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _Gather.apply(source, index, inverse)  # type: ignore[no-untyped-call]
    return out


def _packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention inside each example of packed rows (transformers' attention interface).

    Examples are told apart by ``position_ids`` restarting; similar lengths are batched into
    one padded block per group, so the cost is about that of each example alone.
    """
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        raise ValueError("packed attention needs the position_ids of the packed rows")
    rows, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    share = heads // kv_heads
    layout = _layout(position_ids, rows)
    scale = scaling if scaling is not None else dim**-0.5

    def slots(states: torch.Tensor) -> torch.Tensor:
        tokens = states.transpose(1, 2).reshape(rows * width, states.shape[1], dim)
        return _gather(tokens, layout.to_slots, layout.to_tokens)

    queries, keys, values = slots(query * scale), slots(key), slots(value)
    outputs, start = [], 0
    for count, length in layout.groups:
        part = slice(start, start + count * length)
        start += count * length
        q = queries[part].view(count, length, heads, dim).permute(0, 2, 1, 3)
        k = keys[part].view(count, length, kv_heads, dim).permute(0, 2, 1, 3)
        v = values[part].view(count, length, kv_heads, dim).permute(0, 2, 1, 3)
        if length <= _MATMUL_ATTENTION_UP_TO:
            out = _matmul_attention(q, k, v, dropout)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, scale=1.0, enable_gqa=share > 1
            )
        outputs.append(out.transpose(1, 2).reshape(count * length, heads, dim))
    tokens = _gather(torch.cat(outputs), layout.to_tokens, layout.from_slots)
    return tokens.view(rows, width, heads, dim), None


def _matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float
) -> torch.Tensor:
    """Causal attention of pre-scaled ``q`` (n, heads, L, d) over ``k``, ``v`` (n, kv, L, d)."""
    count, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    share = heads // kv_heads
    # (n, kv_heads, share * L, d): the query heads that share a key head stack up, no copy of k
    stacked = q.reshape(count, kv_heads, share * length, dim)
    future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
    scores = (stacked @ k.transpose(-1, -2)).masked_fill(future.repeat(share, 1), float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    return (weights @ v).view(count, heads, length, dim)
