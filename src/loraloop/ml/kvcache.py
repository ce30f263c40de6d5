"""A slot-based KV cache and the attention over it, for one flat ragged batch per step.

Each running request owns a slot: row ``slot`` of every layer's ``keys``/``values``
(``[slots, kv_heads, capacity, head_dim]``, grown by doubling along ``capacity``). A step's
tokens arrive as one sequence ``[1, N]`` with explicit positions; transformers computes the
projections and rotary embeddings, then calls :func:`slot_attention` (registered with
``AttentionInterface``; an implementation name transformers does not know makes it build no
mask), which

1. writes every token's new key/value to ``(slot, position)`` in one indexed store;
2. attends the decode rows (one token per request, first in the batch, in slot order) over
   their slots in one batched product, with a length mask (``-inf`` past each slot's length)::

       q (S, kv, share, d) @ K[:S, :, :L]ᵀ (S, kv, d, L) + mask (S, 1, 1, L) -> softmax -> @ V

3. attends each prefill segment causally (sdpa) over its slot, chunked prompts included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ATTENTION", "AttentionPlan", "Segment", "SlotCache", "slot_attention"]

ATTENTION = "loraloop_slots"
_MIN_CAPACITY = 64


@dataclass(frozen=True)
class Segment:
    """A prefill chunk: batch tokens ``start:end`` are positions ``offset:offset+n`` of ``slot``."""

    start: int
    end: int
    slot: int
    offset: int


@dataclass
class AttentionPlan:
    """Where the tokens of one step go; built once per step, read by every layer."""

    slots: torch.Tensor
    """(N,) slot of every token."""
    positions: torch.Tensor
    """(N,) position of every token."""
    decode_rows: int
    span: int
    """Decode attention covers slots ``0:span``."""
    length: int
    """Decode attention covers positions ``0:length``."""
    bias: torch.Tensor | None
    """(span, 1, 1, length): 0 where a slot's keys are valid, -inf after; None when all are."""
    row_slots: torch.Tensor | None
    """(decode_rows,) slot per decode row; None when row i is slot i for all rows."""
    segments: list[Segment] = field(default_factory=list)


class SlotCache:
    """Per-layer key/value tensors for ``slots`` requests, grown on demand up to ``limit``."""

    def __init__(
        self,
        layers: int,
        slots: int,
        kv_heads: int,
        head_dim: int,
        *,
        limit: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.shape = (slots, kv_heads, 0, head_dim)
        self.limit, self.dtype, self.device = limit, dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.layers = layers
        self.plan: AttentionPlan | None = None

    @property
    def capacity(self) -> int:
        return self.shape[2]

    def reserve(self, length: int) -> None:
        """Make room for positions ``0:length`` in every slot (amortised by doubling)."""
        if length <= self.capacity:
            return
        capacity = max(_MIN_CAPACITY, self.capacity)
        while capacity < length:
            capacity *= 2
        capacity = min(max(capacity, length), self.limit)
        slots, kv_heads, old, head_dim = self.shape
        shape = (slots, kv_heads, capacity, head_dim)

        def grow(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            grown = []
            for index in range(self.layers):
                new = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if tensors:
                    new[:, :, :old] = tensors[index]
                    tensors[index] = new  # drop the old one before making the next
                grown.append(new)
            return grown

        self.keys, self.values = grow(self.keys), grow(self.values)
        self.shape = shape

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.keys) + sum(t.nbytes for t in self.values)


def slot_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of one step's tokens over their slots (transformers' attention interface).

    ``query`` is (1, heads, N, d), ``key``/``value`` (1, kv_heads, N, d); returns (1, N, heads, d).
    """
    cache: SlotCache = module.loraloop_cache  # type: ignore[assignment]
    plan = cache.plan
    assert plan is not None, "slot attention runs only inside an engine step"
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    keys, values = cache.keys[layer], cache.values[layer]
    _, heads, tokens, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    keys[plan.slots, :, plan.positions] = key[0].transpose(0, 1)
    values[plan.slots, :, plan.positions] = value[0].transpose(0, 1)
    out = query.new_empty(tokens, heads, dim)
    rows = plan.decode_rows
    if rows:
        out[:rows] = _decode(query[0, :, :rows], keys, values, plan, kv_heads, scale)
    for segment in plan.segments:
        out[segment.start : segment.end] = _prefill(
            query[:, :, segment.start : segment.end], key, value, keys, values, segment, scale
        )
    return out.unsqueeze(0), None


def _decode(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: AttentionPlan,
    kv_heads: int,
    scale: float,
) -> torch.Tensor:
    """(heads, rows, d) queries of the decode rows -> (rows, heads, d) outputs."""
    heads, _, dim = query.shape
    q = query.transpose(0, 1) * scale  # (rows, heads, d)
    if plan.row_slots is not None:
        q = q.new_zeros(plan.span, heads, dim).index_copy_(0, plan.row_slots, q)
    grouped = q.view(plan.span, kv_heads, heads // kv_heads, dim)
    k = keys[: plan.span, :, : plan.length]
    v = values[: plan.span, :, : plan.length]
    scores = torch.matmul(grouped, k.transpose(-1, -2))
    if plan.bias is not None:
        scores += plan.bias
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v).view(plan.span, heads, dim)
    return out if plan.row_slots is None else out.index_select(0, plan.row_slots)


def _prefill(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    segment: Segment,
    scale: float,
) -> torch.Tensor:
    """(1, heads, n, d) queries of one prefill chunk -> (n, heads, d) outputs."""
    n = segment.end - segment.start
    if segment.offset == 0:  # the whole history is this chunk: plain causal attention
        k = key[:, :, segment.start : segment.end]
        v = value[:, :, segment.start : segment.end]
        mask = None
    else:
        total = segment.offset + n
        k = keys[segment.slot : segment.slot + 1, :, :total]
        v = values[segment.slot : segment.slot + 1, :, :total]
        seen = torch.arange(total, device=query.device)
        mask = seen[None, :] <= (segment.offset + torch.arange(n, device=query.device))[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        k,
        v,
        attn_mask=mask,
        is_causal=mask is None and n > 1,
        scale=scale,
        enable_gqa=query.shape[1] != k.shape[1],
    )
    return out[0].transpose(0, 1)
