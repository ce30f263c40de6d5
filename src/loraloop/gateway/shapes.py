"""OpenAI's response shapes: a whole completion, a stream chunk, an SSE event, an error."""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

__all__ = ["Counted", "chunk", "completion", "error_body", "event", "usage"]


class Counted(Protocol):
    prompt_tokens: int
    completion_tokens: int


def usage(source: Counted) -> dict[str, int]:
    return {
        "prompt_tokens": source.prompt_tokens,
        "completion_tokens": source.completion_tokens,
        "total_tokens": source.prompt_tokens + source.completion_tokens,
    }


def completion(
    *,
    id: str,
    endpoint: Literal["chat", "completions"],
    created: int,
    model: str,
    fingerprint: str,
    text: str,
    finish: str,
    counts: Counted,
) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` body."""
    if endpoint == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    return {
        "id": id,
        "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [choice],
        "usage": usage(counts),
    }


def chunk(
    *,
    id: str,
    endpoint: Literal["chat", "completions"],
    created: int,
    model: str,
    fingerprint: str,
    delta: dict[str, str] | None,
    finish: str | None,
) -> dict[str, Any]:
    """A stream chunk; ``delta=None`` gives the choice-less chunk that carries usage."""
    chat = endpoint == "chat"
    choices: list[dict[str, Any]] = []
    if delta is not None:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta.get("content", "")
        choices.append(choice)
    return {
        "id": id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
    }


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def error_body(exc: BaseException) -> dict[str, Any]:
    body = getattr(exc, "to_body", None)
    if callable(body):
        error: dict[str, Any] = body()["error"]
        return error
    return {
        "message": "internal error; the server log has details",
        "type": "server_error",
        "code": "internal_error",
        "param": None,
    }
