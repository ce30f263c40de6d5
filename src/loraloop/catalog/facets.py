"""The hub's fixed vocabularies: licences (an id and its name), languages and tasks.

Fixed lists, not free text, so a search filter matches every adapter that means the same
thing (``mit`` never competes with ``MIT License``) and a wrong value can be refused with the
allowed ones. Licence names are proper names and stay untranslated; the pages translate
language and task labels (``hub.language.<id>``, ``hub.task.<id>``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LANGUAGES",
    "LICENCES",
    "LICENCE_IDS",
    "TASKS",
    "Licence",
    "licence_name",
    "problems",
]


@dataclass(frozen=True)
class Licence:
    id: str
    """The SPDX id where there is one (what a Hugging Face model card's ``license:`` says)."""
    name: str


LICENCES: tuple[Licence, ...] = (
    Licence("apache-2.0", "Apache License 2.0"),
    Licence("mit", "MIT License"),
    Licence("cc-by-4.0", "Creative Commons Attribution 4.0"),
    Licence("cc-by-sa-4.0", "Creative Commons Attribution-ShareAlike 4.0"),
    Licence("cc-by-nc-4.0", "Creative Commons Attribution-NonCommercial 4.0"),
    Licence("llama3", "Llama 3 Community License"),
    Licence("gemma", "Gemma Terms of Use"),
    Licence("openrail", "OpenRAIL"),
    Licence("other", "Other (see the model card)"),
)
LICENCE_IDS: tuple[str, ...] = tuple(item.id for item in LICENCES)

#: ``multilingual`` for adapters meant for several; ``other`` also stands for "not said".
LANGUAGES: tuple[str, ...] = ("ja", "en", "zh", "ko", "multilingual", "other")
TASKS: tuple[str, ...] = (
    "chat",
    "qa",
    "summarization",
    "translation",
    "classification",
    "extraction",
    "code",
    "other",
)


def licence_name(licence_id: str) -> str:
    """The licence's name; an id no longer on the list shows as itself."""
    return next((item.name for item in LICENCES if item.id == licence_id), licence_id)


def problems(
    *, licence: str | None = None, language: str | None = None, task: str | None = None
) -> list[str]:
    """Every value that is not on its list, each with the allowed values (None is not checked)."""
    found = []
    for field, value, allowed in (
        ("licence", licence, LICENCE_IDS),
        ("language", language, LANGUAGES),
        ("task", task, TASKS),
    ):
        if value is not None and value not in allowed:
            found.append(f"{field} {value!r} must be one of {', '.join(allowed)}")
    return found
