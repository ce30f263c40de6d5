"""The Kumo Coffee example domain: generated files are reproducible, valid for upload, and the
eval set asks about the trained facts in phrasings train never uses."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loraloop.datasets.cleaning import dedupe
from loraloop.datasets.formats import content_hash, read_jsonl

ROOT = Path(__file__).resolve().parents[1] / "examples" / "kumo_coffee"
GENERATED = [
    "train.jsonl",
    "eval.jsonl",
    "samples/alpaca.jsonl",
    "samples/sharegpt.jsonl",
    "samples/prompt_completion.jsonl",
]
JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")


def _load(name: str) -> ModuleType:
    """Import ``examples/kumo_coffee/<name>.py`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"kumo_coffee_{name}", ROOT / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


generate = _load("generate")
score = _load("score")


def _rows(relative: str) -> list[dict[str, Any]]:
    with (ROOT / relative).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


TRAIN = _rows("train.jsonl")
EVAL = _rows("eval.jsonl")


def _lang(text: str) -> str:
    return "ja" if JAPANESE.search(text) else "en"


def _turns(row: dict[str, Any], role: str) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == role]


def test_generator_reproduces_the_committed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate.main(["--out", str(tmp_path)])
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(GENERATED)
    for relative in GENERATED:
        assert (tmp_path / relative).read_bytes() == (ROOT / relative).read_bytes(), relative
    assert "train.jsonl" in capsys.readouterr().out


def test_files_are_small_and_sized_as_described() -> None:
    total = sum((ROOT / relative).stat().st_size for relative in GENERATED)
    assert total < 300_000
    assert 400 <= len(TRAIN) <= 600
    assert 60 <= len(EVAL) <= 80


def test_every_train_line_is_a_chat_conversation() -> None:
    for number, row in enumerate(TRAIN, 1):
        assert list(row) == ["messages"], number
        roles = [m["role"] for m in row["messages"]]
        body = roles[1:] if roles[0] == "system" else roles
        assert body, number
        assert body == ["user", "assistant"] * (len(body) // 2), number
        for message in row["messages"]:
            assert set(message) == {"role", "content"}, number
            assert isinstance(message["content"], str), number
            assert message["content"].strip(), number
        assert len({_lang(text) for text in _turns(row, "user") + _turns(row, "assistant")}) == 1
    assert any(row["messages"][0]["role"] == "system" for row in TRAIN)
    assert any(len(_turns(row, "user")) > 1 for row in TRAIN)


def test_answers_are_short_and_in_register() -> None:
    for row in TRAIN:
        for answer in _turns(row, "assistant"):
            if _lang(answer) == "ja":
                assert answer.endswith("。"), answer
                assert answer.count("。") <= 2, answer
                assert re.search("です|ます|ません", answer), answer
            else:
                assert answer.endswith("."), answer
                assert len(re.findall(r"[.!?](?:\s|$)", answer)) <= 2, answer


def test_the_platform_accepts_every_file_and_keeps_every_train_conversation() -> None:
    parsed = {}
    for relative in GENERATED[:1] + GENERATED[2:]:
        with (ROOT / relative).open("rb") as stream:
            parsed[relative] = read_jsonl(stream, max_bytes=1 << 20)
    train = parsed.pop("train.jsonl")
    assert train.format == "messages"
    assert len(train.examples) == len(TRAIN)
    assert dedupe(train.examples).removed == []
    plain = [
        example
        for example in train.examples
        if [m["role"] for m in example.messages] == ["user", "assistant"]
    ][:20]
    assert {name: p.format for name, p in parsed.items()} == {
        "samples/alpaca.jsonl": "alpaca",
        "samples/sharegpt.jsonl": "sharegpt",
        "samples/prompt_completion.jsonl": "prompt_completion",
    }
    for sample in parsed.values():
        assert len(sample.examples) == 20
        assert content_hash(sample.examples) == content_hash(plain)


def test_eval_cases_are_single_user_questions_with_expected_strings() -> None:
    for case in EVAL:
        assert list(case) == ["messages", "expected", "lang", "fact"]
        assert [m["role"] for m in case["messages"]] == ["user"]
        assert case["lang"] in ("ja", "en")
        assert _lang(case["messages"][0]["content"]) == case["lang"]
        assert case["expected"]
        assert all(isinstance(e, str) and e for e in case["expected"])


def test_no_eval_question_appears_in_train() -> None:
    asked = [question for row in TRAIN for question in _turns(row, "user")]
    for case in EVAL:
        question = case["messages"][0]["content"]
        assert not any(question in seen for seen in asked), question
    for kind, by_lang in generate.QUESTIONS.items():
        for lang, (train, held_out) in by_lang.items():
            assert not set(train) & set(held_out), (kind, lang)


def test_eval_expected_strings_come_from_the_facts_and_are_taught_in_train() -> None:
    facts = {(fact.id, fact.lang): fact for fact in generate.build_facts()}
    answers: dict[str, list[str]] = {"ja": [], "en": []}
    for row in TRAIN:
        for answer in _turns(row, "assistant"):
            answers[_lang(answer)].append(answer)
    for case in EVAL:
        fact = facts[(case["fact"], case["lang"])]
        assert fact.in_eval
        assert case["expected"] == list(fact.expected)
        assert all(score.passes(answer, case["expected"]) for answer in fact.answers), case
        assert any(score.passes(answer, case["expected"]) for answer in answers[case["lang"]])
        question = score.normalise(case["messages"][0]["content"])
        assert not all(score.normalise(e) in question for e in case["expected"]), case


def test_expected_strings_are_read_from_facts_json() -> None:
    """Prices in eval match the table (the generator does not hard-code any)."""
    data = json.loads((ROOT / "facts.json").read_text(encoding="utf-8"))
    prices = {
        item["id"]: sorted(item.get("sizes", {}).values()) or [item["price"]]
        for item in data["menu"]
    }
    checked = 0
    for case in EVAL:
        kind, subject = case["fact"].split(":")
        if kind == "price":
            shown = [int(re.sub(r"[^\d]", "", e)) for e in case["expected"]]
            assert sorted(shown) == prices[subject], case
            checked += 1
    assert checked >= 10


def test_languages_are_balanced() -> None:
    for rows in (TRAIN, [{"messages": c["messages"]} for c in EVAL]):
        share = sum(_lang(row["messages"][-1]["content"]) == "ja" for row in rows) / len(rows)
        assert 0.35 <= share <= 0.65


def test_reference_answers_score_full_marks() -> None:
    facts = {(fact.id, fact.lang): fact for fact in generate.build_facts()}
    answers = [facts[(c["fact"], c["lang"])].answers[0] for c in EVAL]
    assert score.score(EVAL, answers) == {"all": 1.0, "ja": 1.0, "en": 1.0}
    assert score.score(EVAL, ["わかりません"] * len(EVAL))["all"] == 0.0


@pytest.mark.parametrize(
    ("answer", "expected", "ok"),
    [
        ("抹茶ラテのLサイズは700円（税込）です。", ["700円"], True),
        ("Ｌサイズは７００円です", ["700円"], True),  # full-width digits
        ("It is ￥７００.", ["¥700"], True),  # full-width yen sign
        ("CLOSED ON TUESDAYS", ["Tuesday"], True),
        ("milk and wheat", ["egg", "milk"], False),  # every expected string is needed
        ("8:30〜20:00です", ["8:30", "19:00"], False),
        ("８：３０〜２０：００です", ["8:30", "20:00"], True),
    ],
)
def test_passes_normalises_and_needs_every_string(
    answer: str, expected: list[str], ok: bool
) -> None:
    assert score.passes(answer, expected) is ok


def test_score_needs_one_answer_per_case() -> None:
    with pytest.raises(ValueError, match="answers for"):
        score.score(EVAL, [])


def test_score_command_prints_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b"".join(b'{"answer": "?"}\n' for _ in EVAL))
    score.main([str(answers)])
    assert capsys.readouterr().out.splitlines() == ["all: 0.000", "en: 0.000", "ja: 0.000"]
