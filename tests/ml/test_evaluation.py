"""Metrics, answer loss, the pairwise judge and the paired bootstrap used by evaluations."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from loraloop.errors import InvalidRequest
from loraloop.ml import evaluation
from loraloop.ml.chat import encode
from loraloop.ml.evaluation import (
    METRICS,
    Bootstrap,
    answer_losses,
    check_case,
    contains,
    contains_all,
    exact_match,
    generate,
    judge_messages,
    normalise,
    paired_bootstrap,
    pairwise,
    parse_verdict,
    perplexity,
    regex,
    rouge_l,
    score,
)
from loraloop.ml.models import load
from loraloop.testing import make_tiny_model

Chat = list[dict[str, str]]


def test_public_names() -> None:
    assert set(evaluation.__all__) == {
        *("JUDGE_SYSTEM", "METRICS", "Bootstrap", "answer_losses", "check_case", "contains"),
        *("contains_all", "exact_match", "generate", "judge_messages", "normalise"),
        *("paired_bootstrap", "pairwise", "parse_verdict", "perplexity", "regex", "rouge_l"),
        *("score", "register_metric", "metric_names", "unregister_metric"),
    }
    assert METRICS == ("exact_match", "contains", "regex", "rouge_l")


# -- reference metrics -------------------------------------------------------------------------

CONTAINS_ALL = [
    ("４８０円です", ["480円"], True),  # full-width digits match after NFKC
    ("Open 7:30 to 18:00", ["7:30", "18:00"], True),
    ("Open 7:30", ["7:30", "18:00"], False),
    ("MATCHA latte", ["matcha"], True),
    ("", ["x"], False),
]


@pytest.mark.parametrize(("answer", "expected", "ok"), CONTAINS_ALL)
def test_contains_all(answer: str, expected: list[str], ok: bool) -> None:
    assert contains_all(answer, expected) is ok


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("  Hello\n\tWORLD  ", "hello world"),
        ("０７５－１２３", "075-123"),  # full-width digits and hyphen
        ("ｶﾀｶﾅ　です", "カタカナ です"),  # half-width katakana, ideographic space
        ("Straße", "strasse"),  # casefold, not lower
        ("", ""),
    ],
)
def test_normalise(text: str, normal: str) -> None:
    assert normalise(text) == normal


# (metric, answer, expected, score)
SCORES: list[tuple[str, str, Any, float]] = [
    ("exact_match", "  Paris ", "paris", 1.0),
    ("exact_match", "Paris, France", "Paris", 0.0),
    ("exact_match", "０７５", "075", 1.0),
    ("exact_match", "京都", ["東京", "京都"], 1.0),
    ("exact_match", "大阪", ["東京", "京都"], 0.0),
    ("exact_match", "東京 　都", "東京 都", 1.0),
    ("contains", "Call ０７５-123-4567 today", "075-123", 1.0),
    ("contains", "Open 7:30 to 18:00", ["7:30", "18:00"], 1.0),
    ("contains", "Open 7:30", ["7:30", "18:00"], 0.0),
    ("contains", "営業時間は９時から１７時です", ["9時", "17時"], 1.0),
    ("contains", "営業時間は９時からです", ["9時", "17時"], 0.0),
    ("regex", "Order #A-1234 shipped", r"#[A-Z]-\d{4}", 1.0),
    ("regex", "order #a-1234", r"#[A-Z]-\d{4}", 0.0),  # case is the pattern's business
    ("regex", "order #a-1234", r"(?i)#[A-Z]-\d{4}", 1.0),
    ("regex", "電話は０７５です", r"075", 1.0),  # the answer is NFKC-normalised
    ("regex", "価格は480円", r"\d+円", 1.0),
    ("rouge_l", "the cat sat", "the cat sat down", 6 / 7),
    ("rouge_l", "The Cat", "the cat", 1.0),
    ("rouge_l", "dog", "the cat", 0.0),
    ("rouge_l", "東京タワー", "東京スカイツリー", 6 / 13),
    ("rouge_l", "東京", ["大阪", "東京"], 1.0),
]


@pytest.mark.parametrize(("metric", "answer", "expected", "value"), SCORES)
def test_score(metric: str, answer: str, expected: Any, value: float) -> None:
    assert score(metric, answer, expected) == pytest.approx(value)
    direct: Callable[[str, Any], float] = getattr(evaluation, metric)
    assert direct(answer, expected) == pytest.approx(value)


@pytest.mark.parametrize(
    ("answer", "reference", "value"),
    [
        # LCS "the cat sat" = 3: P = 3/3, R = 3/4, F = 2·1·0.75 / 1.75
        ("the cat sat", "the cat sat down", 2 * 1 * 0.75 / 1.75),
        # LCS "a c" = 2 (order matters): P = 2/3, R = 2/4
        ("a b c", "c a x c", 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)),
        # one token per character: LCS 今 日 は 晴 = 4 of 7 and 5
        ("今日は晴れです", "今日は晴天", 2 * (4 / 7) * (4 / 5) / (4 / 7 + 4 / 5)),
        # mixed scripts: "Tokyo", "は", "2024", "年" are tokens
        ("Tokyoは2024年", "tokyo 2024年", 2 * (3 / 4) * (3 / 3) / (3 / 4 + 1)),
        ("", "", 1.0),
        ("...", "!!", 1.0),  # no tokens on either side
        ("", "something", 0.0),
        ("something", "", 0.0),
    ],
)
def test_rouge_l_known_values(answer: str, reference: str, value: float) -> None:
    assert rouge_l(answer, reference) == pytest.approx(value)


def _lcs_table(a: list[str], b: list[str]) -> int:
    """The textbook dynamic programme, to check the bit-vector one against."""
    row = [0] * (len(b) + 1)
    for x in a:
        previous = row[:]
        for j, y in enumerate(b, start=1):
            row[j] = previous[j - 1] + 1 if x == y else max(previous[j], row[j - 1])
    return row[-1]


def test_lcs_agrees_with_the_textbook_table() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = rng.choices("abcd", k=rng.randint(0, 30))
        b = rng.choices("abcd", k=rng.randint(0, 90))  # more than 64 bits
        assert evaluation._lcs(a, b) == _lcs_table(a, b)


def test_rouge_l_caps_tokens_and_stays_fast() -> None:
    long = " ".join(f"w{i}" for i in range(5000))
    assert rouge_l(long, long) == 1.0
    assert rouge_l(long + " extra", long) == 1.0  # only the first 1000 tokens count


# -- validating eval cases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "expected"),
    [(m, "x") for m in METRICS]
    + [
        ("exact_match", ["a", "b"]),
        ("rouge_l", ("a",)),
        ("regex", r"^\d{3}-\d{4}$"),
    ],
)
def test_check_case_accepts(metric: str, expected: Any) -> None:
    check_case(metric, expected)


# (metric, expected, param, words the message must contain)
BAD_CASES: list[tuple[str, Any, str, list[str]]] = [
    ("bleu", "x", "metric", ["'bleu'", "exact_match, contains, regex, rouge_l"]),
    ("exact_match", "", "expected", ["non-empty string", "empty string"]),
    ("contains", "   ", "expected", ["empty string"]),
    ("contains", [], "expected", ["non-empty list", "[]"]),
    ("rouge_l", ["ok", ""], "expected", ["expected[1]", "''"]),
    ("exact_match", ["ok", 3], "expected", ["expected[1]", "3"]),
    ("exact_match", None, "expected", ["None"]),
    ("regex", "(unclosed", "expected", ["does not compile", "missing )"]),
    ("regex", "a" * 501, "expected", ["501 characters", "at most 500"]),
    ("regex", ["a", "b"], "expected", ["one non-empty pattern"]),
    ("regex", "", "expected", ["one non-empty pattern"]),
]


@pytest.mark.parametrize(("metric", "expected", "param", "words"), BAD_CASES)
def test_check_case_refuses(metric: str, expected: Any, param: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_case(metric, expected)
    assert caught.value.param == param
    for word in words:
        assert word in caught.value.message
    with pytest.raises(InvalidRequest):
        score(metric, "answer", expected)


def test_check_case_reports_every_problem_together() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_case("bleu", "")
    assert "metric:" in caught.value.message
    assert "expected:" in caught.value.message
    assert caught.value.param == "metric"


@pytest.mark.parametrize("pattern", ["[", "a" * 501])
def test_regex_refuses_bad_patterns_itself(pattern: str) -> None:
    with pytest.raises(InvalidRequest, match="pattern"):
        regex("anything", pattern)


def test_contains_and_exact_match_take_a_single_string() -> None:
    assert contains("Kyoto Station", "kyoto") == 1.0
    assert exact_match("Kyoto", "KYOTO") == 1.0


# -- paired bootstrap --------------------------------------------------------------------------


def test_bootstrap_finds_a_clear_improvement() -> None:
    rng = random.Random(1)
    a = [rng.gauss(0.4, 0.05) for _ in range(60)]
    b = [x + 0.2 + rng.gauss(0, 0.02) for x in a]
    result = paired_bootstrap(a, b)
    assert result.n == 60
    assert result.delta == pytest.approx(sum(b) / 60 - sum(a) / 60)
    assert result.mean_b - result.mean_a == pytest.approx(result.delta)
    assert result.low < 0.2 < result.high
    assert result.low > 0  # zero is excluded
    assert result.low <= result.delta <= result.high
    assert result.to_dict() == {
        "n": 60,
        "mean_a": result.mean_a,
        "mean_b": result.mean_b,
        "delta": result.delta,
        "low": result.low,
        "high": result.high,
        "confidence": 0.95,
    }


def test_bootstrap_of_identical_scores_is_zero() -> None:
    scores = [0.0, 1.0, 1.0, 0.5, 0.0, 1.0]
    result = paired_bootstrap(scores, scores)
    assert result.delta == 0
    assert result.low <= 0 <= result.high


def test_bootstrap_is_deterministic_with_the_seed() -> None:
    rng = random.Random(2)
    a = [float(rng.random() < 0.5) for _ in range(40)]
    b = [float(rng.random() < 0.6) for _ in range(40)]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)


def test_bootstrap_wider_confidence_gives_a_wider_interval() -> None:
    a, b = [0.0, 1.0, 0.0, 1.0, 1.0] * 8, [1.0, 1.0, 0.0, 1.0, 0.0] * 8
    narrow, wide = paired_bootstrap(a, b, confidence=0.5), paired_bootstrap(a, b, confidence=0.99)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_bootstrap_of_one_case() -> None:
    assert paired_bootstrap([0.25], [1.0]) == Bootstrap(1, 0.25, 1.0, 0.75, 0.75, 0.75, 0.95)


def test_bootstrap_over_many_cases_works_in_chunks() -> None:
    a = [0.0] * 30_000
    b = [1.0] * 15_000 + [0.0] * 15_000
    result = paired_bootstrap(a, b, resamples=100)
    assert result.delta == 0.5
    assert 0.48 < result.low < 0.5 < result.high < 0.52


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 0.0], [1.0], {}, "equal length"),
        ([], [], {}, "at least one"),
        ([1.0, math.nan], [1.0, 0.0], {}, "finite"),
        ([1.0], [1.0], {"resamples": 0}, "resamples"),
        ([1.0], [1.0], {"confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_refuses(a: list[float], b: list[float], kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)


# -- answer loss -------------------------------------------------------------------------------


def _chat(question: str, answer: str | None = None) -> Chat:
    turns = [{"role": "user", "content": question}]
    return turns + ([{"role": "assistant", "content": answer}] if answer is not None else [])


CONVERSATIONS = [
    _chat("What time do you open?", "We open at 9."),
    _chat("営業時間は？", "９時から１７時までです。"),
    [
        {"role": "system", "content": "Be brief."},
        *_chat("Hi", "Hello!"),
        *_chat("Price of matcha?", "480 yen, a little longer answer to vary the lengths."),
    ],
    _chat("x", "y"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return load(make_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_answer_losses_batched_equal_one_by_one(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    batched = answer_losses(model, tokenizer, CONVERSATIONS, batch_size=3)
    one_by_one = [answer_losses(model, tokenizer, [c])[0] for c in CONVERSATIONS]
    assert all(math.isfinite(loss) and loss > 0 for loss in batched)
    assert batched == pytest.approx(one_by_one, abs=1e-4)  # padding changes nothing


def test_answer_loss_is_the_models_own_loss(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    encoded = encode(tokenizer, CONVERSATIONS[1], max_length=1024)
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor([encoded.input_ids]), labels=torch.tensor([encoded.labels])
        ).loss
    assert answer_losses(model, tokenizer, [CONVERSATIONS[1]])[0] == pytest.approx(
        float(expected), abs=1e-5
    )


def test_answer_losses_without_assistant_tokens_are_nan(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    losses = answer_losses(model, tokenizer, [_chat("only a question"), CONVERSATIONS[0]])
    assert math.isnan(losses[0])
    assert math.isfinite(losses[1])
    cut = answer_losses(model, tokenizer, [CONVERSATIONS[0]], max_length=10)
    assert math.isnan(cut[0])  # truncation cut the answer away
    assert answer_losses(model, tokenizer, []) == []


def test_answer_losses_leave_the_training_mode_as_it_was(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    model.train(True)
    try:
        answer_losses(model, tokenizer, CONVERSATIONS[:1])
        assert model.training
    finally:
        model.train(False)


def test_answer_loss_drops_after_training_on_the_conversation(tmp_path: Path) -> None:
    model, tokenizer = load(make_tiny_model(tmp_path / "tiny"))
    conversation = CONVERSATIONS[0]
    before = answer_losses(model, tokenizer, [conversation])[0]
    encoded = encode(tokenizer, conversation, max_length=1024)
    ids, labels = torch.tensor([encoded.input_ids]), torch.tensor([encoded.labels])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train(True)
    for _ in range(5):
        optimiser.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimiser.step()
    after = answer_losses(model, tokenizer, [conversation])[0]
    assert after < before - 0.1


@pytest.mark.parametrize(
    ("losses", "value"),
    [
        ([0.0, 0.0], 1.0),
        ([1.0, math.nan, 3.0], math.exp(2.0)),
        ([math.nan], math.nan),
        ([], math.nan),
        ([1000.0], math.inf),
    ],
)
def test_perplexity(losses: list[float], value: float) -> None:
    result = perplexity(losses)
    assert math.isnan(result) if math.isnan(value) else result == pytest.approx(value)


# -- pairwise judge ----------------------------------------------------------------------------

VERDICTS = [
    ("A", "A"),
    ("B", "B"),
    ("TIE", "tie"),
    ("tie", "tie"),
    ("b", "B"),
    ("a.", "A"),
    ("B!", "B"),
    ("Answer: B", "B"),
    ("Verdict: a", "A"),
    ("**A**", "A"),
    ("[[B]]", "B"),
    ("`TIE`", "tie"),
    ("「A」", "A"),
    ("回答：B", "B"),
    ("Ｂ", "B"),  # full width
    ("Aの方が良いです。", "A"),
    ("引き分け", "tie"),
    ("Answer B is more accurate.", "B"),
    ("It's a tie.", "tie"),
    ("<think>A looks short, B looks right</think>\nB", "B"),
    ("A or B", None),
    ("A is better than B", None),
    ("Both are wrong", None),
    ("", None),
    ("I cannot decide", None),
    ("Answer", None),
]


@pytest.mark.parametrize(("text", "verdict"), VERDICTS)
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


def test_judge_messages_show_both_answers_and_the_reference() -> None:
    system, user = judge_messages("Capital of Japan?", "Kyoto", "Tokyo", reference="Tokyo")
    assert system == {"role": "system", "content": evaluation.JUDGE_SYSTEM}
    assert user["role"] == "user"
    text = user["content"]
    assert text.index("Capital of Japan?") < text.index("Kyoto") < text.index("<answer_b>")
    assert "<reference>\nTokyo\n</reference>" in text
    assert "<reference>" not in judge_messages("q", "a", "b")[1]["content"]
    for word in ("A", "B", "TIE"):
        assert word in evaluation.JUDGE_SYSTEM


def _prefers(text: str) -> Callable[[Chat], str]:
    """A judge that picks whichever position holds ``text``."""

    def ask(messages: Chat) -> str:
        content = messages[-1]["content"]
        return "A" if f"<answer_a>\n{text}\n" in content else "B"

    return ask


# (judge, challenger's score)
JUDGES: list[tuple[Callable[[Chat], str], float | None]] = [
    (_prefers("challenger answer"), 1.0),
    (_prefers("champion answer"), 0.0),
    (lambda _: "A", 0.5),  # position bias cancels
    (lambda _: "TIE", 0.5),
    (lambda _: "no idea", None),
]


@pytest.mark.parametrize(("ask", "value"), JUDGES)
def test_pairwise(ask: Callable[[Chat], str], value: float | None) -> None:
    assert pairwise("q?", "champion answer", "challenger answer", ask) == value


def test_pairwise_uses_the_one_verdict_it_can_read() -> None:
    replies = iter(["B", "gibberish"])  # first the challenger is B: it wins
    assert pairwise("q?", "old", "new", lambda _: next(replies)) == 1.0
    replies = iter(["???", "B"])  # then the challenger is A: B means it lost
    assert pairwise("q?", "old", "new", lambda _: next(replies)) == 0.0


def test_pairwise_passes_the_reference_both_times() -> None:
    seen: list[Chat] = []

    def ask(messages: Chat) -> str:
        seen.append(messages)
        return "TIE"

    assert pairwise("q?", "old", "new", ask, reference="ref") == 0.5
    assert len(seen) == 2
    assert all("<reference>\nref\n</reference>" in m[-1]["content"] for m in seen)
    assert "<answer_a>\nold\n" in seen[0][-1]["content"]
    assert "<answer_a>\nnew\n" in seen[1][-1]["content"]


# -- generation --------------------------------------------------------------------------------


def test_generate_answers_every_conversation_in_order(tmp_path: Path) -> None:
    model, tokenizer = load(make_tiny_model(tmp_path / "tiny"))
    conversations = [[{"role": "user", "content": text}] for text in ("a", "長い質問です", "b c")]
    one_by_one = [generate(model, tokenizer, [c], max_new_tokens=5)[0] for c in conversations]
    batched = generate(model, tokenizer, conversations, max_new_tokens=5, batch_size=2)
    assert batched == one_by_one  # left padding does not change greedy answers
    assert tokenizer.padding_side == "right"  # restored afterwards
