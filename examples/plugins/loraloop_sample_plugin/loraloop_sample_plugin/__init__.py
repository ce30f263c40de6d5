"""A loraloop plugin that uses every hook once, as a template for your own.

- ``qa`` dataset format: one ``{"question", "answer"}`` object per line (optional ``system``);
- ``keyword_recall`` metric: the share of the expected keywords the answer mentions;
- ``word_overlap`` router strategy: the member whose description shares most words with the
  request, or no decision when none shares a word;
- a panel on every adapter page, rendered from ``templates/panel.html``.

Load it with ``LORALOOP_PLUGINS=loraloop_sample_plugin`` (with this folder on ``PYTHONPATH``)
or install it (``pip install examples/plugins/loraloop_sample_plugin``): its entry point in the
``loraloop.plugins`` group is found without any setting.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from loraloop.datasets.formats import DatasetFormat, Report
from loraloop.ml.router import Candidate
from loraloop.plugins import (
    AdapterInfo,
    Metric,
    Panel,
    RouterStrategy,
    hookimpl,
    render_template,
)

__all__ = [
    "adapter_panels",
    "dataset_formats",
    "eval_metrics",
    "keyword_recall",
    "parse_qa",
    "router_strategies",
    "word_overlap",
]

_WORD = re.compile(r"\w+")


# --- a dataset format --------------------------------------------------------------------


def parse_qa(record: dict[str, object], report: Report) -> list[dict[str, str]]:
    """One ``{"question", "answer"}`` line as a user turn and an assistant turn; each problem
    goes to ``report`` (loraloop adds the line number), so all of them are listed at once."""
    texts: dict[str, str] = {}
    for key in ("question", "answer"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            report(key, "must be a non-empty string")
        else:
            texts[key] = value
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        report("system", "must be a string when given")
    if len(texts) < 2:
        return []
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return [
        *head,
        {"role": "user", "content": texts["question"]},
        {"role": "assistant", "content": texts["answer"]},
    ]


@hookimpl
def dataset_formats() -> list[DatasetFormat]:
    """The ``qa`` format, recognised by its ``question`` key."""
    return [
        DatasetFormat(
            name="qa",
            parse=parse_qa,
            markers=("question",),
            expected='"question" and "answer" (optional "system")',
        )
    ]


# --- an evaluation metric ----------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def keyword_recall(answer: str, expected: Any) -> float:
    """The share of the expected keywords (a string or a list) found in the answer."""
    keywords = [expected] if isinstance(expected, str) else list(expected)
    said = unicodedata.normalize("NFKC", answer).casefold()
    found = [k for k in keywords if unicodedata.normalize("NFKC", k).casefold() in said]
    return len(found) / len(keywords)


def _check_keywords(expected: Any) -> str | None:
    if isinstance(expected, str):
        expected = [expected]
    if not isinstance(expected, list) or not expected:
        return "keyword_recall takes a keyword or a non-empty list of keywords"
    if not all(isinstance(k, str) and k.strip() for k in expected):
        return "every keyword must be a non-empty string"
    return None


@hookimpl
def eval_metrics() -> list[Metric]:
    """The ``keyword_recall`` metric: partial credit where ``contains`` gives 0 or 1."""
    return [Metric("keyword_recall", keyword_recall, check=_check_keywords)]


# --- a router strategy -------------------------------------------------------------------


def word_overlap(text: str, members: Sequence[Candidate]) -> str | None:
    """The member whose description shares most words with ``text`` (the first on a tie);
    None when no description shares a word, so the app's meaning router and default decide."""
    asked = _words(text)
    best, shared = None, 0
    for member in members:
        overlap = len(asked & _words(member.description))
        if overlap > shared:
            best, shared = member.name, overlap
    return best


@hookimpl
def router_strategies() -> list[RouterStrategy]:
    """The ``word_overlap`` strategy, for apps with ``"strategy": "word_overlap"``."""
    return [RouterStrategy("word_overlap", word_overlap)]


# --- a panel on the adapter page ---------------------------------------------------------


@hookimpl
def adapter_panels(adapter: AdapterInfo) -> Panel:
    """A panel from this package's own template; Jinja escapes every value in it."""
    title = "サンプルプラグイン" if adapter.lang == "ja" else "Sample plugin"
    return Panel(title, render_template(__name__, "panel.html", adapter=adapter))
