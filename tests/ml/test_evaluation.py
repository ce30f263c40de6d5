"""Batched greedy answers and the contains check used by held-out evaluations."""

from pathlib import Path

import pytest

from loraloop.ml.evaluation import contains_all, generate
from loraloop.ml.models import load
from loraloop.testing import make_tiny_model

CASES = [
    ("４８０円です", ["480円"], True),  # full-width digits match after NFKC
    ("Open 7:30 to 18:00", ["7:30", "18:00"], True),
    ("Open 7:30", ["7:30", "18:00"], False),
    ("MATCHA latte", ["matcha"], True),
    ("", ["x"], False),
]


@pytest.mark.parametrize(("answer", "expected", "ok"), CASES)
def test_contains_all(answer: str, expected: list[str], ok: bool) -> None:
    assert contains_all(answer, expected) is ok


def test_generate_answers_every_conversation_in_order(tmp_path: Path) -> None:
    model, tokenizer = load(make_tiny_model(tmp_path / "tiny"))
    conversations = [[{"role": "user", "content": text}] for text in ("a", "長い質問です", "b c")]
    one_by_one = [generate(model, tokenizer, [c], max_new_tokens=5)[0] for c in conversations]
    batched = generate(model, tokenizer, conversations, max_new_tokens=5, batch_size=2)
    assert batched == one_by_one  # left padding does not change greedy answers
    assert tokenizer.padding_side == "right"  # restored afterwards
