"""Packing keeps examples apart: positions restart, boundaries are not trained, order is kept."""

import pytest
import torch

from loraloop.ml.packing import IGNORE, batches, pack

EXAMPLES = [
    ([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4]),
    ([5, 6, 7], [IGNORE, 6, 7]),
    ([8, 9], [IGNORE, 9]),
    ([10, 11, 12, 13, 14, 15], [IGNORE, IGNORE, IGNORE, 13, 14, 15]),
]


def test_every_token_lands_in_exactly_one_row() -> None:
    rows = pack(EXAMPLES, max_length=8)
    tokens = sorted(t for row in rows for t in row.input_ids)
    assert tokens == sorted(t for ids, _ in EXAMPLES for t in ids)
    assert all(row.real_tokens <= 8 for row in rows)
    assert len(rows) == 2  # 15 tokens fit in two rows of 8


def test_positions_restart_and_boundaries_are_masked() -> None:
    for row in pack(EXAMPLES, max_length=8):
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert len(starts) == row.examples
        for start in starts:
            assert row.labels[start] == IGNORE  # never trained to predict the next example


def test_too_long_example_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds max_length 4"):
        pack([([1, 2, 3, 4, 5], [IGNORE] * 5)], max_length=4)


def test_batches_pad_only_at_the_end() -> None:
    rows = pack(EXAMPLES, max_length=8)
    [batch] = batches(rows, rows_per_batch=2, pad_id=0)
    width = len(batch.input_ids[0])
    assert all(len(r) == width for r in batch.input_ids + batch.labels + batch.position_ids)
    assert batch.real_tokens == 15
    trained = sum(1 for _, labels in EXAMPLES for x in labels[1:] if x != IGNORE)
    assert batch.trained_tokens == trained


def test_packed_examples_do_not_attend_to_each_other() -> None:
    """The logits of an example are the same alone and packed behind another one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    a, b = [3, 4, 5, 6, 7], [8, 9, 10]
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([b])).logits[0]
        rows = pack([(a, [IGNORE] * 5), (b, [IGNORE] * 3)], max_length=16)
        [batch] = batches(rows, 1, pad_id=0)
        packed = model(  # no cache: transformers only reads packing from positions then
            input_ids=torch.tensor(batch.input_ids),
            position_ids=torch.tensor(batch.position_ids),
            use_cache=False,
        ).logits[0]
    start = batch.input_ids[0].index(8)
    torch.testing.assert_close(packed[start : start + 3], alone, rtol=1e-4, atol=1e-5)
