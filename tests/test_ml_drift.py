"""Drift statistics: synthetic unit vectors around a few directions, plus one real-MiniLM case."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import numpy as np
import pytest

from loraloop.ml import drift
from loraloop.ml.drift import (
    binomial_tail,
    change_point,
    clusters,
    input_drift,
    mmd_test,
    nearest_distances,
    quality_drift,
    reference,
)
from loraloop.ml.embeddings import MiniLM, load_minilm

DIM = 32


def _directions(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random unit directions in DIM dimensions (nearly orthogonal)."""
    centers = np.random.default_rng(seed).standard_normal((count, DIM))
    unit: np.ndarray = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    return unit


def _sample(
    centers: np.ndarray,
    n: int,
    seed: int,
    weights: Sequence[float] | None = None,
    spread: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors scattered around ``centers`` (mixed by ``weights``), and their group."""
    rng = np.random.default_rng(seed)
    group = rng.choice(len(centers), size=n, p=weights)
    noise = spread * rng.standard_normal((n, DIM)) / math.sqrt(DIM)
    points = centers[group] + noise
    return points / np.linalg.norm(points, axis=1, keepdims=True), group


CENTERS = _directions(4)
KNOWN = CENTERS[:3]  # the training topics; CENTERS[3] is a new one


@pytest.fixture(scope="module")
def ref() -> drift.Reference:
    train, _ = _sample(KNOWN, 1500, seed=1)
    return reference(train)


def _texts(n: int) -> list[str]:
    return [f"request {i}" for i in range(n)]


def test_public_names() -> None:
    assert set(drift.__all__) == {
        "ChangePoint",
        "Cluster",
        "InputDrift",
        "QualityDrift",
        "Reference",
        "binomial_tail",
        "change_point",
        "clusters",
        "input_drift",
        "mmd_test",
        "nearest_distances",
        "quality_drift",
        "reference",
    }


# --- reference and nearest distances ---------------------------------------------------------


def test_reference_threshold_leaves_about_five_percent_out(ref: drift.Reference) -> None:
    fresh, _ = _sample(KNOWN, 4000, seed=2)
    share = float(np.mean(nearest_distances(ref, fresh) > ref.threshold))
    assert ref.quantile == 0.95
    assert 0.03 <= share <= 0.08
    shifted, _ = _sample(CENTERS[3:], 500, seed=3)
    assert float(np.mean(nearest_distances(ref, shifted) > ref.threshold)) > 0.9


def test_reference_subsamples_deterministically() -> None:
    train, _ = _sample(KNOWN, 300, seed=4)
    a = reference(train, max_size=100, seed=7)
    b = reference(train, max_size=100, seed=7)
    c = reference(train, max_size=100, seed=8)
    assert a.embeddings.shape == (100, DIM)
    assert a.embeddings.dtype == np.float32
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.threshold == b.threshold
    assert not np.array_equal(a.embeddings, c.embeddings)
    # every kept row is one of the inputs
    assert np.allclose((a.embeddings @ train.T).max(axis=1), 1.0, atol=1e-5)


def test_reference_normalises_rows() -> None:
    ref = reference(np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    np.testing.assert_allclose(np.linalg.norm(ref.embeddings, axis=1), 1.0, atol=1e-6)
    # each point's nearest other point is the diagonal one, 45° away
    assert ref.threshold == pytest.approx(1 - math.cos(math.pi / 4), abs=1e-6)


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "messages"),
    [
        (np.ones((1, 4)), {}, ["at least 2 rows", "(1, 4)"]),
        (np.ones(4), {}, ["at least 2 rows", "(4,)"]),
        (np.eye(3), {"quantile": 1.5}, ["quantile: 1.5"]),
        (
            np.ones((1, 4)),
            {"quantile": 0.0, "max_size": 1},
            ["quantile: 0.0", "max_size: 1", "rows"],
        ),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), {}, ["row 1 is all zeros"]),
        (np.array([[1.0, 0.0], [np.nan, 1.0]]), {}, ["NaN"]),
    ],
)
def test_reference_validation_names_every_problem(
    embeddings: np.ndarray, kwargs: dict[str, float], messages: list[str]
) -> None:
    with pytest.raises(ValueError, match=r"embeddings|quantile|max_size") as error:
        reference(embeddings, **kwargs)  # type: ignore[arg-type]
    for message in messages:
        assert message in str(error.value)


def test_nearest_distances() -> None:
    ref = reference(np.eye(3))
    x = np.array([[0.0, 2.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        nearest_distances(ref, x), [0.0, 1 - 1 / math.sqrt(2), 1.0], atol=1e-6
    )
    assert nearest_distances(ref, np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match=r"expected shape \(n, 3\)"):
        nearest_distances(ref, np.ones((2, 4)))


# --- MMD -------------------------------------------------------------------------------------


def _direct_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook double sums, with the median-distance Gaussian bandwidth."""
    z = np.vstack([x, y])
    pairs = [float(np.sum((a - b) ** 2)) for i, a in enumerate(z) for b in z[i + 1 :]]
    sigma2 = float(np.median(pairs))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_textbook_estimator() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3)) + 0.5
    mmd2, _ = mmd_test(x, y, permutations=10)
    assert mmd2 == pytest.approx(_direct_unbiased_mmd2(x, y), rel=1e-9)


def test_mmd_p_value_separates_same_from_shifted() -> None:
    x, _ = _sample(KNOWN, 400, seed=5)
    same, _ = _sample(KNOWN, 100, seed=6)
    shifted, _ = _sample(CENTERS, 100, seed=7, weights=[0.2, 0.2, 0.2, 0.4])
    mmd_same, p_same = mmd_test(x, same, permutations=200)
    mmd_shifted, p_shifted = mmd_test(x, shifted, permutations=200)
    assert p_same > 0.05
    assert p_shifted == pytest.approx(1 / 201)  # no permutation reaches the observed value
    assert mmd_shifted > 10 * abs(mmd_same)


def test_mmd_is_deterministic_and_p_values_lie_on_the_permutation_grid() -> None:
    x, _ = _sample(KNOWN, 50, seed=8)
    y, _ = _sample(KNOWN, 30, seed=9)
    first = mmd_test(x, y, permutations=99, seed=3)
    assert first == mmd_test(x, y, permutations=99, seed=3)
    assert round(first[1] * 100, 9).is_integer()


def test_mmd_is_fast_enough_for_every_window() -> None:
    x, _ = _sample(KNOWN, 2000, seed=10)
    y, _ = _sample(KNOWN, 200, seed=11)
    started = time.perf_counter()
    mmd_test(x, y, permutations=500)
    assert time.perf_counter() - started < 1.0  # about 0.1 s on two cores


@pytest.mark.parametrize(
    ("x", "y", "permutations", "message"),
    [
        (np.ones((1, 3)), np.ones((4, 3)), 10, r"x: needs at least 2 rows"),
        (np.ones((4, 3)), np.ones(3), 10, r"y: needs at least 2 rows of a 2-D array, got \(3,\)"),
        (np.ones((4, 3)), np.ones((4, 2)), 10, r"widths differ \(3 and 2\)"),
        (np.ones((4, 3)), np.ones((4, 3)), 0, r"permutations: 0 must be at least 1"),
    ],
)
def test_mmd_validation(x: np.ndarray, y: np.ndarray, permutations: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mmd_test(x, y, permutations=permutations)


# --- binomial tail ---------------------------------------------------------------------------


def _direct_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(max(k, 0), n + 1))


@pytest.mark.parametrize("n", [1, 2, 5, 12, 30])
@pytest.mark.parametrize("p", [0.01, 0.05, 0.3, 0.5, 0.9])
def test_binomial_tail_matches_a_direct_sum(n: int, p: float) -> None:
    for k in range(-1, n + 2):
        assert binomial_tail(k, n, p) == pytest.approx(_direct_tail(k, n, p), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 10, 0.3, 1.0),
        (0, 0, 0.3, 1.0),
        (11, 10, 0.3, 0.0),
        (1, 0, 0.5, 0.0),
        (1, 10, 0.0, 0.0),
        (10, 10, 1.0, 1.0),
        (10, 10, 0.5, 0.5**10),
    ],
)
def test_binomial_tail_edges(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(expected, rel=1e-12)


def test_binomial_tail_is_stable_for_large_n() -> None:
    # symmetry at p = 1/2: P[X ≥ k] + P[X ≥ n - k + 1] = 1
    assert binomial_tail(480, 1000, 0.5) + binomial_tail(521, 1000, 0.5) == pytest.approx(1.0)
    for k in (60, 100, 200):  # p = 1/20, summed exactly in integers
        exact = sum(math.comb(1000, j) * 19 ** (1000 - j) for j in range(k, 1001))
        log_exact = math.log(exact) - 1000 * math.log(20)
        assert math.log(binomial_tail(k, 1000, 0.05)) == pytest.approx(log_exact, rel=1e-9)
    tiny = binomial_tail(900, 1000, 0.05)  # about 1e-1040: underflows cleanly
    assert tiny == 0.0


@pytest.mark.parametrize(("n", "p"), [(-1, 0.5), (10, 1.5), (10, -0.1)])
def test_binomial_tail_validation(n: int, p: float) -> None:
    with pytest.raises(ValueError, match=rf"n={n}, p={p}"):
        binomial_tail(1, n, p)


# --- clusters --------------------------------------------------------------------------------


def _planted(sizes: Sequence[int], seed: int = 12) -> tuple[np.ndarray, list[str], np.ndarray]:
    centers = _directions(len(sizes), seed=seed)
    parts = [
        _sample(centers[g : g + 1], size, seed=seed + g, spread=0.5)[0]
        for g, size in enumerate(sizes)
    ]
    group = np.concatenate([np.full(size, g) for g, size in enumerate(sizes)])
    order = np.random.default_rng(seed).permutation(len(group))  # interleave the groups
    texts = [f"topic {g} question {i}" for i, g in enumerate(group[order])]
    return np.vstack(parts)[order], texts, group[order]


def test_clusters_recover_planted_groups() -> None:
    points, texts, group = _planted([30, 20, 10])
    found = clusters(points, texts)
    assert [c.size for c in found] == [30, 20, 10]
    for cluster, expected in zip(found, [0, 1, 2], strict=True):
        assert set(group[cluster.members]) == {expected}
        assert cluster.members == sorted(cluster.members)
        assert 1 <= len(cluster.examples) <= 3
        assert all(text.startswith(f"topic {expected} ") for text in cluster.examples)


def test_cluster_examples_are_the_most_central_distinct_texts() -> None:
    points, texts, group = _planted([12, 12])
    first = int(np.flatnonzero(group == 0)[0])
    center = points[group == 0].mean(axis=0)
    points = np.vstack([points, center, center])  # two copies of the exact centroid
    texts = [*texts, "the centre", "the centre"]
    found = clusters(points, texts, examples=2)
    by_topic = next(c for c in found if first in c.members)
    assert by_topic.examples[0] == "the centre"
    assert len(by_topic.examples) == 2
    assert by_topic.examples[1] != "the centre"


def test_clusters_is_deterministic() -> None:
    points, texts, _ = _planted([15, 15, 15])
    assert clusters(points, texts, seed=3) == clusters(points, texts, seed=3)


@pytest.mark.parametrize(
    ("points", "expected_sizes"),
    [
        (np.zeros((0, DIM)), []),
        (_directions(1), [1]),
        (_directions(5), [5]),  # too few points to split
        (np.random.default_rng(0).standard_normal((60, DIM)), [60]),  # no structure
    ],
)
def test_clusters_fall_back_to_one_group(points: np.ndarray, expected_sizes: list[int]) -> None:
    found = clusters(points, _texts(len(points)))
    assert [c.size for c in found] == expected_sizes
    assert all(c.members == list(range(len(points))) for c in found)


def test_clusters_respect_k_max() -> None:
    points, texts, _ = _planted([20, 20, 20])
    assert len(clusters(points, texts, k_max=2)) <= 2
    assert len(clusters(points, texts, k_max=1)) == 1


def test_clusters_validation() -> None:
    with pytest.raises(ValueError, match=r"expected 2 rows.*k_max: 0.*examples: -1"):
        clusters(np.ones((3, 4)), ["a", "b"], k_max=0, examples=-1)


# --- input drift -----------------------------------------------------------------------------


def test_same_distribution_windows_do_not_alarm(ref: drift.Reference) -> None:
    reports = [
        input_drift(
            ref,
            _sample(KNOWN, 100, seed=100 + i)[0],
            _texts(100),
            seed=i,
            permutations=250,
            alpha=0.004,
        )
        for i in range(50)
    ]
    p_values = np.array([r.p_value for r in reports])
    assert not any(r.alarm for r in reports)
    # roughly uniform: centred, spread out, nothing extreme
    assert 0.35 <= float(p_values.mean()) <= 0.65
    assert float(np.mean(p_values < 0.2)) <= 0.35
    assert float(np.mean(p_values > 0.8)) <= 0.35
    assert int(np.sum(p_values <= 0.01)) <= 3  # 0.5 expected
    assert 0.03 <= float(np.mean([r.ood_share for r in reports])) <= 0.08


@pytest.mark.parametrize(
    "weights", [[0.2, 0.2, 0.2, 0.4], [0.0, 0.0, 0.0, 1.0]], ids=["new-topic-40%", "all-new"]
)
def test_shifted_window_alarms_and_shows_the_new_topic(
    ref: drift.Reference, weights: list[float]
) -> None:
    window, group = _sample(CENTERS, 100, seed=13, weights=weights)
    texts = [f"topic {g} request {i}" for i, g in enumerate(group)]
    report = input_drift(ref, window, texts)
    assert report.alarm
    assert report.n == 100
    assert report.p_value <= 0.001
    assert report.ood_p_value < 1e-10
    assert report.ood_share >= weights[3] - 0.05
    assert report.ood_count == round(report.ood_share * 100)
    assert report.expected_share == pytest.approx(0.05)
    largest = report.clusters[0]
    # members index the whole window and the largest OOD group is the new topic
    assert np.mean(group[largest.members] == 3) > 0.9
    assert all(text.startswith("topic 3 ") for text in largest.examples)
    assert sum(c.size for c in report.clusters) == report.ood_count


def test_small_window_never_alarms(ref: drift.Reference) -> None:
    window, _ = _sample(CENTERS[3:], 9, seed=14)
    report = input_drift(ref, window, _texts(9))
    assert report.n == 9
    assert not report.alarm
    assert (report.mmd2, report.p_value) == (0.0, 1.0)
    assert report.ood_count == 9  # still measured


def test_empty_window(ref: drift.Reference) -> None:
    report = input_drift(ref, np.zeros((0, DIM)), [])
    assert (report.n, report.ood_share, report.alarm, report.clusters) == (0, 0.0, False, [])


def test_input_drift_report_is_json_ready(ref: drift.Reference) -> None:
    window, _ = _sample(CENTERS, 40, seed=15, weights=[0.1, 0.1, 0.1, 0.7])
    data = json.loads(json.dumps(input_drift(ref, window, _texts(40)).to_dict()))
    assert set(data) == {
        "n",
        "mmd2",
        "p_value",
        "ood_share",
        "ood_count",
        "threshold",
        "expected_share",
        "ood_p_value",
        "alarm",
        "clusters",
    }
    assert data["clusters"]
    assert set(data["clusters"][0]) == {"size", "examples", "members"}


def test_input_drift_validation(ref: drift.Reference) -> None:
    with pytest.raises(ValueError, match=r"expected 3 rows.*alpha: 0.0001 must be in"):
        input_drift(ref, np.ones((2, DIM)), ["a", "b", "c"], alpha=0.0001, permutations=1000)
    with pytest.raises(ValueError, match=r"permutations: 0"):
        input_drift(ref, np.ones((2, DIM)), ["a", "b"], permutations=0)


# --- change points and quality drift ---------------------------------------------------------


def _bernoulli(rates: Sequence[tuple[int, float]], seed: int) -> list[float]:
    """Concatenated 0/1 segments of (length, rate)."""
    rng = np.random.default_rng(seed)
    return [float(v) for length, rate in rates for v in rng.random(length) < rate]


def test_change_point_finds_a_planted_rise() -> None:
    values = _bernoulli([(120, 0.1), (80, 0.5)], seed=16)
    change = change_point(values)
    assert change is not None
    assert abs(change.index - 120) <= 20  # the 97th percentile of the error over seeds
    assert change.before == pytest.approx(np.mean(values[: change.index]))
    assert change.before < 0.2 < 0.4 < change.after
    assert change.p_value <= 0.01


def test_change_point_on_real_values() -> None:
    rng = np.random.default_rng(17)
    values = np.concatenate([rng.normal(0.8, 0.1, 60), rng.normal(0.6, 0.1, 40)])
    change = change_point(values)
    assert change is not None
    assert abs(change.index - 60) <= 5
    assert change.after < change.before
    assert change.p_value <= 0.01


def test_change_point_is_rarely_significant_at_a_constant_rate() -> None:
    p_values = []
    for seed in range(30):
        change = change_point(_bernoulli([(150, 0.2)], seed=seed), permutations=200, seed=seed)
        assert change is not None
        p_values.append(change.p_value)
    assert sum(p <= 0.05 for p in p_values) <= 5  # about 1.5 expected
    assert float(np.mean(p_values)) > 0.3


@pytest.mark.parametrize(
    "values", [[0.0] * 19, [1.0] * 50, [0.3] * 40], ids=["too-short", "all-bad", "constant"]
)
def test_change_point_none(values: list[float]) -> None:
    assert change_point(values, min_segment=10) is None


def test_change_point_respects_min_segment() -> None:
    values = [1.0] * 3 + [0.0] * 40
    change = change_point(values, min_segment=10)
    assert change is not None
    assert change.index == 10
    assert change_point(values, min_segment=1) == change_point(values, min_segment=1)
    found = change_point(values, min_segment=1)
    assert found is not None
    assert found.index == 3


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([0.0, 1.0], {"min_segment": 0}, "min_segment: 0"),
        ([0.0, 1.0], {"permutations": 0}, "permutations: 0"),
        ([0.0, math.nan], {}, "finite numbers"),
    ],
)
def test_change_point_validation(values: list[float], kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        change_point(values, **kwargs)


@pytest.mark.parametrize(
    ("segments", "alarm"),
    [
        ([(150, 0.05), (60, 0.4)], True),
        ([(150, 0.4), (60, 0.05)], False),  # quality improved
        ([(210, 0.1)], False),
    ],
    ids=["rising", "falling", "steady"],
)
def test_quality_drift_alarms_only_when_bad_answers_rise(
    segments: list[tuple[int, float]], alarm: bool
) -> None:
    bad = [v == 1.0 for v in _bernoulli(segments, seed=18)]
    report = quality_drift(bad)
    assert report.alarm is alarm
    assert report.n == 210
    assert report.rate == pytest.approx(np.mean(bad))
    assert report.recent_rate == pytest.approx(np.mean(bad[-50:]))
    if len(segments) == 2:
        assert report.change is not None
        assert report.change.p_value <= 0.01
        assert abs(report.change.index - 150) <= 20


def test_quality_drift_report_is_json_ready() -> None:
    empty = quality_drift([])
    assert (empty.n, empty.rate, empty.change, empty.alarm) == (0, 0.0, None, False)
    data = json.loads(json.dumps(quality_drift([False] * 30 + [True] * 30).to_dict()))
    assert data["alarm"] is True
    assert data["change"]["index"] == 30


def test_quality_drift_validation() -> None:
    with pytest.raises(ValueError, match="recent: 0"):
        quality_drift([True], recent=0)
    with pytest.raises(ValueError, match=r"alpha: 1\.5"):
        quality_drift([True], alpha=1.5)


# --- the real thing: café questions and a new sub-topic --------------------------------------

ITEMS = [
    "latte",
    "cappuccino",
    "espresso",
    "flat white",
    "matcha latte",
    "chai",
    "hot chocolate",
    "croissant",
    "cheesecake",
    "banana bread",
    "scone",
    "bagel",
    "carrot cake",
    "iced tea",
]
DAYS = ["Monday", "Saturday", "Sunday", "public holidays", "weekends", "Christmas Eve"]
DIETS = ["vegan", "gluten-free", "dairy-free", "nut-free", "halal", "low sugar"]
CAFE = [
    "What time do you open on {day}?",
    "Are you open on {day}?",
    "When do you close on {day}?",
    "How much is a {item}?",
    "Is the {item} {diet}?",
    "Do you have a {diet} {item}?",
    "Can I get my {item} with oat milk?",
    "Which allergens are in the {item}?",
    "Do you still have {item} today?",
    "Can I order a {item} to take away?",
    "Is there wifi in the cafe?",
    "Do you take card payments?",
    "Is there parking near the cafe?",
    "Can I bring my dog inside?",
]
EVENTS = [
    "wedding reception",
    "wedding party",
    "corporate lunch",
    "birthday party",
    "engagement party",
    "baby shower",
]
GUESTS = ["30", "50", "80", "120", "200"]
CATERING = [
    "Do you cater for a {event} of {guests} guests?",
    "Can you provide catering for our {event}?",
    "How much would catering cost for {guests} people at a {event}?",
    "I'm planning a {event} for {guests} people, could you do the food?",
    "Can we book you to cater a {event} next June?",
    "Do you offer buffet menus for a {event}?",
    "What's the deposit to book catering for a {event}?",
    "Could you deliver platters for {guests} guests to our {event} venue?",
    "Do you do tasting sessions before we book catering for our {event}?",
    "Is there a minimum number of guests for {event} catering?",
]


def _questions(templates: list[str], n: int, seed: int, **slots: list[str]) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        templates[rng.integers(len(templates))].format(
            **{name: values[rng.integers(len(values))] for name, values in slots.items()}
        )
        for _ in range(n)
    ]


def _cafe(n: int, seed: int) -> list[str]:
    return _questions(CAFE, n, seed, item=ITEMS, day=DAYS, diet=DIETS)


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return load_minilm()


def test_minilm_catering_questions_alarm_and_fresh_cafe_questions_do_not(minilm: MiniLM) -> None:
    ref = reference(minilm.embed(_cafe(200, seed=1)))
    fresh = _cafe(80, seed=2)
    catering = _questions(CATERING, 48, seed=3, event=EVENTS, guests=GUESTS)
    mixed = catering + _cafe(32, seed=4)

    calm = input_drift(ref, minilm.embed(fresh), fresh)
    drifted = input_drift(ref, minilm.embed(mixed), mixed)

    assert not calm.alarm
    assert calm.p_value > 0.01
    assert drifted.alarm
    assert drifted.ood_share >= 0.5
    ood_texts = {mixed[i] for c in drifted.clusters for i in c.members}
    assert len(ood_texts & set(catering)) >= 0.9 * len(ood_texts)
    assert all(
        "cater" in e or "food" in e or "buffet" in e or "platters" in e
        for c in drifted.clusters
        for e in c.examples
    )
