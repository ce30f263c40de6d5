"""Tiny, randomly initialised models for fast tests: a 2-layer Llama over a byte-level tokenizer.

The tokenizer maps every UTF-8 byte to a token (so Japanese works) plus the ChatML special
tokens, and carries the same chat template style as SmolLM2, so code that masks assistant turns
is exercised exactly as with the real default model. The whole folder is a few hundred KB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "StubEngine",
    "StubGeneration",
    "make_tiny_adapter",
    "make_tiny_model",
    "tiny_tokenizer",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

#: ChatML, as SmolLM2-Instruct uses (with its default system prompt left out).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer: 3 special tokens + 256 bytes, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(byte_alphabet):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token="<|im_end|>",  # noqa: S106 - a token of the vocabulary, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        bos_token=None,
        unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_model(path: Path, *, seed: int = 0, layers: int = 2, hidden: int = 16) -> Path:
    """Write a random tiny Llama and its tokenizer to ``path`` (safetensors); returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_adapter(
    base: Path, path: Path, *, seed: int = 1, rank: int = 4, targets: str | list[str] = "attention"
) -> Path:
    """Write a PEFT adapter for the model at ``base`` with random (non-zero) B matrices, so it
    really changes the output; returns ``path`` (``adapter_model.safetensors`` + config)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from loraloop.ml.lora import LoraSettings

    model = AutoModelForCausalLM.from_pretrained(base)
    chosen = targets if isinstance(targets, str) else "attention"
    config = LoraSettings(rank=rank, alpha=rank * 2, targets=chosen).peft_config()  # type: ignore[arg-type]
    if not isinstance(targets, str):
        config.target_modules = set(targets)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weights in peft_model.named_parameters():
            if "lora_B" in name:
                weights.normal_(0, 0.5)
    peft_model.save_pretrained(path, safe_serialization=True)
    return path


class StubGeneration:
    """A finished generation of ``answer``, one token per character."""

    def __init__(self, prompt_tokens: int, answer: str) -> None:
        import time

        self.prompt_tokens, self.completion_tokens = prompt_tokens, len(answer)
        self.text, self.finish_reason = answer, "stop"
        self.first_token_at: float | None = time.perf_counter()

    def __iter__(self) -> Any:
        from loraloop.ml.engine import Delta

        yield Delta(text=self.text, token_ids=tuple(map(ord, self.text)), finish_reason="stop")

    async def stream(self) -> Any:
        for delta in self:
            yield delta

    def cancel(self) -> None:
        """Already finished."""


class StubEngine:
    """An engine that answers instantly: measures or tests the gateway without a model."""

    context_length = 4096

    def __init__(
        self, base_path: Path | None = None, *, answer: str = "Hello from the stub."
    ) -> None:
        self.answer = answer

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return [1] * sum(len(m["content"]) + 4 for m in messages)

    def text_prompt(self, text: str) -> list[int]:
        return [1] * len(text)

    def submit(self, prompt_ids: list[int], params: Any, adapter: Any = None) -> StubGeneration:
        return StubGeneration(len(prompt_ids), self.answer[: params.max_tokens])

    def stats(self) -> dict[str, Any]:
        return {"running": 0, "waiting": 0}

    def close(self) -> None:
        """Nothing to release."""
