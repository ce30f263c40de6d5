"""A minimal conversation with base + adapter for the terminal (``loraloop chat``).

Greedy, streamed token by token through transformers' ``TextIteratorStreamer``. The serving
engine (continuous batching, many adapters) is a separate, later piece.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Conversation"]


class Conversation:
    def __init__(self, model: Any, tokenizer: Any, *, system: str | None = None):
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.messages: list[dict[str, str]] = []
        self.reset()

    @classmethod
    def load(cls, base: Path, adapter: Path | None, *, system: str | None = None) -> Conversation:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from loraloop.ml.safety import check_model_folder, check_weights_file

        check_model_folder(base)
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
        model: Any = AutoModelForCausalLM.from_pretrained(
            base, trust_remote_code=False, use_safetensors=True
        )
        if adapter is not None:
            check_weights_file(adapter / "adapter_model.safetensors")
            model = PeftModel.from_pretrained(model, adapter)
        model.train(False)  # inference mode
        return cls(model, tokenizer, system=system)

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def reply(self, text: str, *, max_new_tokens: int = 256) -> Iterator[str]:
        """Stream the answer to ``text``; the answer joins the history."""
        import torch
        from transformers import TextIteratorStreamer

        self.messages.append({"role": "user", "content": text})
        inputs = self.tokenizer.apply_chat_template(
            self.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {
            **inputs,
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "streamer": streamer,
        }

        def generate() -> None:
            with torch.no_grad():
                self.model.generate(**kwargs)

        thread = threading.Thread(target=generate)
        thread.start()
        answer = []
        for piece in streamer:
            answer.append(piece)
            yield piece
        thread.join()
        self.messages.append({"role": "assistant", "content": "".join(answer)})
