"""Answering evaluation prompts in batches (greedy), for held-out checks of an adapter.

The metric functions that compare answers with expectations (exact match, contains, ROUGE-L,
judges) belong here too as the maintenance loop grows; this holds what training needs now.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["contains_all", "generate"]


def contains_all(answer: str, expected: Iterable[str]) -> bool:
    """Every expected substring occurs in ``answer`` (Unicode NFKC, case-folded)."""
    said = unicodedata.normalize("NFKC", answer).casefold()
    return all(unicodedata.normalize("NFKC", part).casefold() in said for part in expected)


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to each conversation (ending with a user turn), in order."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    answers: list[str] = []
    try:
        model.train(False)  # inference mode
        for start in range(0, len(conversations), batch_size):
            texts = [
                tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                for c in conversations[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = output[:, batch["input_ids"].shape[1] :]
            answers.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return [answer.strip() for answer in answers]
