"""Score answers to ``eval.jsonl``: the fraction of cases whose answer contains every expected
substring, after Unicode NFKC (full-width ``４８０円`` matches ``480円``) and case folding.

Standard library only. As a command: ``python examples/kumo_coffee/score.py ANSWERS`` where
ANSWERS is JSON Lines with one ``{"answer": "..."}`` per eval case, in eval order.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

EVAL = Path(__file__).resolve().parent / "eval.jsonl"


def normalise(text: str) -> str:
    """NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def passes(answer: str, expected: Iterable[str]) -> bool:
    """Whether ``answer`` contains every expected substring (normalised)."""
    said = normalise(answer)
    return all(normalise(part) in said for part in expected)


def load_cases(path: Path = EVAL) -> list[dict[str, Any]]:
    """The eval cases: ``messages`` (one user turn), ``expected``, ``lang`` and ``fact``."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def score(cases: Sequence[dict[str, Any]], answers: Sequence[str]) -> dict[str, float]:
    """Accuracy overall (``all``) and per language; one answer per case, in order."""
    if len(cases) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(cases)} eval cases")
    hits: dict[str, list[bool]] = {"all": []}
    for case, answer in zip(cases, answers, strict=True):
        ok = passes(answer, case["expected"])
        hits["all"].append(ok)
        hits.setdefault(case["lang"], []).append(ok)
    return {group: sum(results) / len(results) for group, results in hits.items() if results}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the accuracy of an answers file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", type=Path, help='JSON Lines of {"answer": ...}, eval order')
    parser.add_argument("--eval", type=Path, default=EVAL, help="eval cases (default: ours)")
    args = parser.parse_args(argv)
    answers = [row["answer"] for row in load_cases(args.answers)]
    for group, accuracy in score(load_cases(args.eval), answers).items():
        print(f"{group}: {accuracy:.3f}")


if __name__ == "__main__":
    main()
