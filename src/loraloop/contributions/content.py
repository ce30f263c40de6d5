"""What a contribution holds, checked and normalised: shared by offering (:mod:`items`) and
reviewing (:mod:`review`: a fix is checked like an example)."""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from typing import Any

from loraloop.datasets import formats
from loraloop.errors import InvalidRequest
from loraloop.mlops import suites

__all__ = ["MAX_ITEM_BYTES", "SUBMITTABLE", "digest", "parse", "user_text"]

SUBMITTABLE = ("example", "eval_case")
"""Corrections arrive through feedback on an answer, not by submission."""
MAX_ITEM_BYTES = 64 * 1024


def digest(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON, NFKC-normalised and whitespace-collapsed: the
    same for items that differ only in spacing or Unicode form."""
    text = json.dumps(list(parts), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    canonical = " ".join(unicodedata.normalize("NFKC", text).split())
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def user_text(messages: list[dict[str, str]]) -> str:
    """What an item asks: its user turns, one per line (what MiniLM compares)."""
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def parse(kind: str, item: dict[str, Any]) -> tuple[list[dict[str, str]], Any, str | None]:
    if kind == "example":
        raw = json.dumps(item, ensure_ascii=False).encode("utf-8")
        try:
            parsed = formats.read_jsonl(io.BytesIO(raw), max_bytes=MAX_ITEM_BYTES)
        except formats.DatasetInvalid as exc:
            problems = "; ".join(
                p.message if not p.field else f"{p.field}: {p.message}" for p in exc.problems
            )
            raise InvalidRequest(f"the example is not valid: {problems}", param="item") from exc
        messages = parsed.examples[0].messages
        if messages[-1]["role"] != "assistant":
            raise InvalidRequest("an example ends with the assistant's answer", param="item")
        return messages, None, None
    if kind == "eval_case":
        if len(json.dumps(item, ensure_ascii=False)) > MAX_ITEM_BYTES:
            raise InvalidRequest("an eval case has at most 64 KiB", param="item")
        messages, expected, metric = suites.parse_case(item, "contains")
        return messages, expected, metric
    allowed = ", ".join(SUBMITTABLE)
    raise InvalidRequest(
        f"kind {kind!r} cannot be submitted; use one of: {allowed} (corrections come from "
        "feedback on an answer)",
        param="kind",
    )
