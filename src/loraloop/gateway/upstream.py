"""An external OpenAI-compatible service as the source of a deployment's answers.

The upstream is always asked to stream (with ``stream_options.include_usage``), whatever the
client asked for, so local and upstream answers flow through the same code. The upstream's
key travels only in the ``Authorization`` header; errors quote the upstream's status and
message, never the request headers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx

from loraloop.errors import UpstreamFailed

__all__ = ["UpstreamSource"]


class UpstreamSource:
    """Streams one completion from ``target``'s upstream as ``(text, finish_reason)`` pieces."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        url: str,
        model: str,
        key: str | None,
        body: dict[str, Any],
        endpoint: str,
        prompt_estimate: int,
        timeout: float,
    ) -> None:
        self._http, self._url, self._key, self._timeout = http, url, key, timeout
        self._path = "/chat/completions" if endpoint == "chat" else "/completions"
        self._body = {
            **body,
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self._chat = endpoint == "chat"
        self.prompt_tokens = prompt_estimate
        self.completion_tokens = 0
        self.text = ""
        self.finish_reason: str | None = None
        self.first_token_at: float | None = None

    def __repr__(self) -> str:
        return f"UpstreamSource(url={self._url!r}, key=[secure])"

    def cancel(self) -> None:
        """Closing the stream (the generator's ``finally``) is what stops the upstream."""

    async def pieces(self) -> AsyncIterator[tuple[str, str | None]]:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            async with self._http.stream(
                "POST",
                self._url + self._path,
                json=self._body,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise UpstreamFailed(
                        f"the upstream {self._url} answered {response.status_code}: "
                        f"{_message(response)}"
                    )
                async for line in response.aiter_lines():
                    piece = self._parse(line)
                    if piece is not None:
                        yield piece
        except httpx.HTTPError as exc:
            raise UpstreamFailed(
                f"the upstream {self._url} could not be reached or timed out "
                f"({type(exc).__name__}); check that it runs and that upstream_url is right"
            ) from None

    def _parse(self, line: str) -> tuple[str, str | None] | None:
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise UpstreamFailed(f"the upstream {self._url} sent a malformed event") from None
        usage = chunk.get("usage")
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens", self.prompt_tokens))
            self.completion_tokens = int(usage.get("completion_tokens", self.completion_tokens))
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        text = (choice.get("delta") or {}).get("content") if self._chat else choice.get("text")
        text = text or ""
        if text and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if text and not usage:
            self.completion_tokens += 1  # until the upstream reports its own count
        self.text += text
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return text, choice.get("finish_reason")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error or body
        return str(message)[:300]
    except (json.JSONDecodeError, ValueError):
        return response.text[:300] or response.reason_phrase
