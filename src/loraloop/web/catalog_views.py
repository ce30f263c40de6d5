"""What the catalog pages show, shaped for templates: counts and metrics in the page language,
model cards rendered safely (markdown without HTML, links or images), code snippets for a
deployment, and the rows of adapters, deployments and the dashboard."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases, base_models
from loraloop.datasets import service as datasets
from loraloop.db.tables import (
    Adapter,
    Deployment,
    User,
)
from loraloop.gateway import deployments
from loraloop.mlops import feedback
from loraloop.web import i18n

__all__ = [
    "SUGGESTION_NOTES",
    "Card",
    "count",
    "dashboard_context",
    "metrics",
    "model_card",
    "snippets",
]

RECENT_FEEDBACK = 5
#: Model cards are small; anything bigger is not a card and is cut off.
CARD_BYTES = 64 * 1024
#: Metrics the training job records, in the order a person reads them.
METRICS = (
    "val_loss",
    "best_val_loss",
    "train_loss",
    "steps",
    "real_tokens",
    "tokens_per_second",
    "seconds",
    "stopped_early",
    "resumed_from_step",
)
#: Suggested hub model -> catalog key of its note (the service's note is English only).
SUGGESTION_NOTES = {
    "Qwen/Qwen2.5-0.5B-Instruct": "catalog.models.note.qwen_05b",
    "Qwen/Qwen2.5-1.5B-Instruct": "catalog.models.note.qwen_15b",
    "llm-jp/llm-jp-3-150m-instruct3": "catalog.models.note.llmjp_150m",
    "llm-jp/llm-jp-3-440m-instruct3": "catalog.models.note.llmjp_440m",
    "llm-jp/llm-jp-3-1.8b-instruct3": "catalog.models.note.llmjp_18b",
    "sbintuitions/sarashina2.2-1b-instruct-v0.1": "catalog.models.note.sarashina",
    "SakanaAI/TinySwallow-1.5B-Instruct": "catalog.models.note.tinyswallow",
    "google/gemma-2-2b-jpn-it": "catalog.models.note.gemma_jpn",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "catalog.models.note.smollm_360m",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": "catalog.models.note.smollm_17b",
}
# Raw HTML stays text; links and images are off so a card can neither load nor point anywhere.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable(["image", "link", "autolink"])
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


# formatting ----------------------------------------------------------------------------


def count(n: int) -> str:
    """``135M``, ``1.5B``: parameter counts as model cards write them."""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 and unit == "B" else f"{value:.0f}{unit}"
    return str(n)


def _metric(t: i18n.Translate, value: Any) -> str:
    if isinstance(value, bool):
        return t("catalog.common.yes") if value else t("catalog.common.no")
    if isinstance(value, float):  # 0.1778, 7,563: four significant figures, grouped thousands
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)[:80]


def metrics(t: i18n.Translate, values: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs: the known metrics first, in reading order, then any others."""
    known = [k for k in METRICS if k in values]
    others = sorted(k for k in values if k not in METRICS)
    return [(t(f"catalog.metric.{k}"), _metric(t, values[k])) for k in known] + [
        (k, _metric(t, values[k])) for k in others
    ]


@dataclass(frozen=True)
class Card:
    """A version's README.md: front-matter fields and the body as safe HTML."""

    fields: list[tuple[str, str]]
    body: Markup


def model_card(folder: Path, *, heading_offset: int = 0) -> Card | None:
    """The model card in ``folder`` rendered with raw HTML escaped, or None without one.
    ``heading_offset`` pushes the card's headings down (2: its ``#`` becomes an ``h3``) for a
    page whose own ``h1`` and section ``h2`` come first."""
    path = folder / "README.md"
    if path.is_symlink() or not path.is_file():  # a card never points outside its folder
        return None
    with path.open("rb") as handle:
        text = handle.read(CARD_BYTES).decode("utf-8", errors="replace").replace("\r\n", "\n")
    fields: list[tuple[str, str]] = []
    found = _FRONT_MATTER.match(text)
    if found:
        for line in found.group(1).splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip():
                fields.append((name.strip(), value.strip()))
        text = text[found.end() :]
    tokens = _MARKDOWN.parse(text)
    for token in tokens:
        if heading_offset and token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1:]) + heading_offset)}"
    body = _MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {})
    return Card(fields, Markup(body))  # noqa: S704 - markdown-it escapes raw HTML (html=False)


_SNIPPETS = {
    "curl": """curl {base}/chat/completions \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer {key}" \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": {hello}}}]}}'
""",
    "python": """from openai import OpenAI

client = OpenAI(
    base_url="{base}",
    api_key="{key}",
)
reply = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": {hello}}}],
)
print(reply.choices[0].message.content)
""",
    "javascript": """const response = await fetch("{base}/chat/completions", {{
  method: "POST",
  headers: {{
    "Content-Type": "application/json",
    Authorization: "Bearer {key}",
  }},
  body: JSON.stringify({{
    model: "{model}",
    messages: [{{ role: "user", content: {hello} }}],
  }}),
}});
const reply = await response.json();
console.log(reply.choices[0].message.content);
""",
}


def snippets(base: str, model: str, key: str, hello: str) -> dict[str, str]:
    """Ready-to-run calls of ``model`` at ``base`` (``.../v1``) with ``key``: curl, Python
    (``openai``) and JavaScript (``fetch``). Model ids and keys need no quoting (their
    alphabets have no quotes); the greeting is JSON-quoted, which all three accept."""
    quoted = json.dumps(hello, ensure_ascii=False).replace("'", "\\u0027")
    return {
        kind: text.format(base=base, model=model, key=key, hello=quoted).rstrip("\n")
        for kind, text in _SNIPPETS.items()
    }


# view rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterRow:
    adapter: Adapter
    base_name: str
    owner_name: str
    mine: bool
    versions: list[int]
    champion: int | None
    challenger: int | None


def _names(session: Session) -> dict[int, str]:
    return {b.id: b.name for b in base_models.list_all(session)}


def owner_name(session: Session, user: User, owner_id: int) -> str:
    if owner_id == user.id:
        return user.display_name
    owner = session.get(User, owner_id)
    return owner.display_name if owner else "?"


def adapter_rows(session: Session, user: User, found: list[Adapter]) -> list[AdapterRow]:
    bases = _names(session)
    rows = []
    for adapter in found:
        named = aliases.aliases_of(session, adapter.id)
        rows.append(
            AdapterRow(
                adapter=adapter,
                base_name=bases.get(adapter.base_model_id, "?"),
                owner_name=owner_name(session, user, adapter.owner_id),
                mine=adapter.owner_id == user.id,
                versions=[v.version for v in adapters.versions(session, user, adapter.id)],
                champion=named.get("champion"),
                challenger=named.get("challenger"),
            )
        )
    return rows


@dataclass(frozen=True)
class DeploymentRow:
    deployment: Deployment
    target: str


def deployment_rows(session: Session, user: User) -> list[DeploymentRow]:
    return [
        DeploymentRow(row, deployments.target_label(session, row))
        for row in deployments.list_own(session, user)
    ]


# dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    key: str
    href: str
    done: bool


def dashboard_context(session: Session, user: User, *, active_keys: int) -> dict[str, Any]:
    """What the dashboard shows besides jobs: adapters, deployments, feedback, next steps."""
    visible = adapters.list_visible(session, user)
    mine = adapter_rows(session, user, [a for a in visible if a.owner_id == user.id])
    own = deployment_rows(session, user)
    trained = any(row.versions for row in mine)
    steps = [
        Step("data", "/datasets", bool(datasets.list_own(session, user))),
        Step("train", "/train", trained),
        Step("playground", "/playground", bool(own)),
        Step("deploy", "/deploy", bool(own)),
        Step("key", "/keys", active_keys > 0),
    ]
    return {
        "adapters": mine,
        "deployments": own,
        "feedback": feedback.recent(session, user, limit=RECENT_FEEDBACK),
        "steps": steps,
        "next_step": next((s.key for s in steps if not s.done), None),
        "newcomer": not mine and not own,
        # the guide stays until the journey's end: something deployed and a key to call it
        "show_steps": not (own and active_keys > 0),
    }


# base models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    id: str
    parameters: str
    licence: str
    note: str
    registered: bool
