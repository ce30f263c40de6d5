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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["IGNORE", "Batch", "PackedRow", "batches", "pack"]

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
