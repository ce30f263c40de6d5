"""The semantic router's classifier: features, fitting, the cheap path and the the encoder path."""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from loraloop.ml import router
from loraloop.ml.general_requests import GENERAL_REQUESTS
from loraloop.ml.router import Decision, Router, ngrams

SUPPORT = [
    "How do I return an item I bought online?",
    "I want a refund for my order.",
    "My package hasn't arrived yet.",
    "注文した商品を返品したいです。",
    "返金はいつ頃になりますか？",
    "荷物がまだ届きません。",
]
LEGAL = [
    "Can you review this contract before I sign it?",
    "What does an indemnification clause mean?",
    "Is this non-disclosure agreement enforceable?",
    "この契約書を確認してもらえますか？",
    "損害賠償条項の意味を教えてください。",
    "秘密保持契約の有効期間はどのくらいですか？",
]


class BagOfWords:
    """A stand-in for the encoder: hashed words, unit rows; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % 64] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def never(texts: Sequence[str]) -> np.ndarray:
    raise AssertionError(f"the encoder should not run, it was asked for {list(texts)}")


@pytest.fixture(scope="module")
def desk() -> Router:
    return Router.fit({"support": SUPPORT * 4, "legal": LEGAL * 4, "general": []})


def test_public_names() -> None:
    assert sorted(router.__all__) == sorted(
        [
            "BETA",
            "SURE",
            "TRUSTED",
            "Candidate",
            "Decision",
            "Router",
            "Strategy",
            "StrategyFailed",
            "ngrams",
            "pick",
            "register_strategy",
            "strategy_names",
            "unregister_strategy",
        ]
    )


NGRAM_CASES = [
    ("english words without stopwords", "Refund my order", {"w:refund", "w:order"}, {"w:my"}),
    ("letter pieces", "VPN", {"l:<vp", "l:vpn", "l:pn>", "l:<vpn", "l:vpn>", "l:<vpn>"}, set()),
    ("full-width folded", "ＶＰＮ", {"w:vpn"}, set()),
    ("kanji run, singles, pairs", "返品", {"k:返品", "k1:返", "k1:品", "k2:返品"}, set()),
    ("katakana word and 3-grams", "パスワード", {"t:パスワード", "t3:パスワ", "t3:ワード"}, set()),
    ("hiragana left out", "ありがとう", set(), {"w:ありがとう"}),
    ("mixed", "VPNにつながりません", {"w:vpn"}, set()),
]


@pytest.mark.parametrize(("name", "text", "present", "absent"), NGRAM_CASES)
def test_ngrams(name: str, text: str, present: set[str], absent: set[str]) -> None:
    found = set(ngrams(text))
    assert present <= found, name
    assert not absent & found, name
    if text == "ありがとう":
        assert found == set()


def test_fit_needs_a_member_with_a_text() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        Router.fit({"a": [], "b": []})


def test_members_without_texts_are_left_out(desk: Router) -> None:
    assert desk.members == ["support", "legal"]
    assert len(desk.texts) == 3  # the two members and the general class
    assert desk.texts[-1] == list(GENERAL_REQUESTS)
    assert desk.probabilities("refund").shape == (3,)


def test_fitting_is_deterministic() -> None:
    one = Router.fit({"support": SUPPORT, "legal": LEGAL})
    two = Router.fit({"support": SUPPORT, "legal": LEGAL})
    np.testing.assert_array_equal(one.weights, two.weights)
    np.testing.assert_array_equal(one.bias, two.bias)


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("I would like a refund for the order, it never arrived.", "support"),
        ("返品と返金をお願いします。", "support"),
        ("Please review the indemnification clause of this contract.", "legal"),
        ("契約書の条項を確認してください。", "legal"),
    ],
)
def test_a_clear_request_is_decided_by_ngrams_alone(desk: Router, text: str, member: str) -> None:
    decision = desk.route(text, never)
    assert decision.member == member
    assert decision.best == member
    assert decision.strategy == "ngrams"
    assert decision.cosine is None
    assert router.SURE <= decision.score <= 1


def test_a_general_request_goes_to_no_member(desk: Router) -> None:
    decision = desk.route("Write a short poem about the moon and the stars.", BagOfWords())
    assert decision.member is None
    assert decision.best in ("support", "legal")
    assert decision.score < 0.5


def test_an_unsure_request_asks_minilm_and_embeds_the_prototypes_once(desk: Router) -> None:
    fresh = Router.fit({"support": SUPPORT * 4, "legal": LEGAL * 4})
    embed = BagOfWords()
    text = "hmm"  # no n-gram the router knows: its probabilities are only the priors
    first = fresh.route(text, embed)
    second = fresh.route(text, embed)
    assert first == second
    assert first.strategy == "ngrams+encoder"
    assert first.cosine is not None
    prototypes = len(SUPPORT) * 8 + len(GENERAL_REQUESTS)
    assert embed.calls == [prototypes, 1, 1]  # the prototypes once, then each request


def test_without_an_embedder_the_ngrams_decide(desk: Router) -> None:
    decision = desk.route("hmm", None)
    assert decision.strategy == "ngrams"


def test_members_with_only_a_description_leave_the_decision_to_minilm() -> None:
    fitted = Router.fit(
        {
            "support": ["Returns, refunds, exchanges, shipping and problems with an order."],
            "legal": ["Contracts, agreements, clauses, terms and conditions, legal questions."],
        }
    )
    assert fitted.trust == pytest.approx(1 / router.TRUSTED)
    probabilities = fitted.probabilities("refunds")
    assert float(probabilities.max()) < router.SURE  # never sure: the encoder decides
    decision = fitted.route("legal clauses, contracts, agreements", BagOfWords())
    assert decision == Decision("legal", "legal", decision.score, "ngrams+encoder", decision.cosine)
    assert decision.score > 0.5


def test_texts_without_any_feature_are_fitted_and_routed() -> None:
    fitted = Router.fit({"thanks": ["ありがとう", "どうも"], "legal": LEGAL})
    p = fitted.probabilities("？？？")
    assert p.shape == (3,)
    assert float(p.sum()) == pytest.approx(1.0)


def test_routing_is_thread_safe(desk: Router) -> None:
    fresh = Router.fit({"support": SUPPORT * 4, "legal": LEGAL * 4})
    embed = BagOfWords()
    results: list[Decision] = []

    def ask() -> None:
        results.append(fresh.route("hmm", embed))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert embed.calls.count(len(SUPPORT) * 8 + len(GENERAL_REQUESTS)) == 1
