"""Drift statistics on embeddings and on quality signals: pure numpy, deterministic seeds.

Input drift compares a window of recent requests with the training inputs two ways, and
alarms only when both agree (it runs every 50 requests, so false alarms must be rare):

    training embeddings ──▶ Reference (subsample, leave-one-out nearest-neighbour threshold)
                                   │
    window embeddings ──┬── mmd_test: kernel two-sample test  ────────────────┐
                        └── nearest distance > threshold: OOD share vs 1 - q ──┴─▶ alarm
                                   │
                      OOD texts ──▶ clusters (spherical k-means) ──▶ what users now ask

Quality drift finds the single most likely change in the rate of bad answers.

References: Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (unbiased MMD²);
Rousseeuw, "Silhouettes", J. Comput. Appl. Math. 1987; Arthur & Vassilvitskii,
"k-means++", SODA 2007.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
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
]

#: mmd_test subsamples each side to this many rows: the pooled kernel matrix stays small.
_MMD_MAX_ROWS = 500
#: Permutations are evaluated this many at a time to bound memory.
_PERMUTATION_CHUNK = 256
#: A window smaller than this never alarms.
_MIN_WINDOW = 10
#: Below this mean silhouette a split is not worth showing: one cluster.
_MIN_SILHOUETTE = 0.1
_KMEANS_RESTARTS = 4
_KMEANS_ITERATIONS = 100


@dataclass(frozen=True)
class Reference:
    """The training inputs an input window is compared with."""

    embeddings: np.ndarray
    """Unit rows (float32), subsampled to at most ``max_size`` rows."""
    threshold: float
    """The ``quantile`` of leave-one-out nearest-neighbour cosine distances inside the set."""
    quantile: float
    """So about ``1 - quantile`` of in-distribution inputs lie beyond ``threshold``."""


@dataclass(frozen=True)
class Cluster:
    """A group of similar texts."""

    size: int
    examples: list[str]
    """Distinct texts closest to the group's centroid, closest first."""
    members: list[int]
    """Indices into the texts given, ascending."""


@dataclass(frozen=True)
class InputDrift:
    """One window of requests against the reference. ``n < 10`` never alarms."""

    n: int
    mmd2: float
    p_value: float
    ood_share: float
    ood_count: int
    threshold: float
    expected_share: float
    ood_p_value: float
    alarm: bool
    clusters: list[Cluster]
    """Groups among the out-of-distribution texts only, largest first."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready builtins (clusters as dicts)."""
        return asdict(self)


@dataclass(frozen=True)
class ChangePoint:
    """The most likely single change in mean of a sequence."""

    index: int
    """The first element of the new regime."""
    before: float
    after: float
    p_value: float


@dataclass(frozen=True)
class QualityDrift:
    """The trend of bad answers (thumbs down, failed checks) over time."""

    n: int
    rate: float
    recent_rate: float
    change: ChangePoint | None
    alarm: bool

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready builtins (``change`` as a dict or None)."""
        return asdict(self)


def reference(
    embeddings: np.ndarray, *, quantile: float = 0.95, max_size: int = 2000, seed: int = 0
) -> Reference:
    """A :class:`Reference` from ``embeddings`` (n ≥ 2 rows), subsampled without replacement."""
    problems = []
    if not 0.0 < quantile < 1.0:
        problems.append(f"quantile: {quantile} must be strictly between 0 and 1")
    if max_size < 2:
        problems.append(f"max_size: {max_size} must be at least 2")
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        problems.append(
            f"embeddings: a reference needs at least 2 rows of a 2-D array, got shape "
            f"{embeddings.shape}"
        )
    if problems:
        raise ValueError("; ".join(problems))
    unit = _unit(embeddings, "embeddings")
    if unit.shape[0] > max_size:
        keep = np.random.default_rng(seed).choice(unit.shape[0], size=max_size, replace=False)
        unit = unit[np.sort(keep)]
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    loo = 1.0 - similarity.max(axis=1)
    threshold = float(np.quantile(np.clip(loo, 0.0, 2.0), quantile))
    return Reference(embeddings=unit, threshold=threshold, quantile=quantile)


def nearest_distances(ref: Reference, x: np.ndarray) -> np.ndarray:
    """For each row of ``x``, the cosine distance (1 - similarity) to its nearest reference row."""
    if x.ndim != 2 or x.shape[1] != ref.embeddings.shape[1]:
        raise ValueError(
            f"x: expected shape (n, {ref.embeddings.shape[1]}) like the reference, got {x.shape}"
        )
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    similarity = _unit(x, "x") @ ref.embeddings.T
    distances: np.ndarray = np.clip(1.0 - similarity.max(axis=1), 0.0, 2.0).astype(np.float64)
    return distances


def mmd_test(
    x: np.ndarray, y: np.ndarray, *, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """``(mmd2, p_value)``: unbiased MMD² with a Gaussian kernel and its permutation p-value.

    The bandwidth is the median pairwise distance of the pooled sample. Each side is first
    subsampled (deterministically, by ``seed``) to at most 500 rows. The p-value is
    ``(1 + #{permuted MMD² ≥ observed}) / (1 + permutations)``.
    """
    problems = []
    for name, array in (("x", x), ("y", y)):
        if array.ndim != 2 or array.shape[0] < 2:
            problems.append(f"{name}: needs at least 2 rows of a 2-D array, got {array.shape}")
    if not problems and x.shape[1] != y.shape[1]:
        problems.append(f"x and y: widths differ ({x.shape[1]} and {y.shape[1]})")
    if permutations < 1:
        problems.append(f"permutations: {permutations} must be at least 1")
    if problems:
        raise ValueError("; ".join(problems))
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, _MMD_MAX_ROWS, rng), _subsample(y, _MMD_MAX_ROWS, rng)
    kernel = _gaussian_kernel(np.vstack([x, y]).astype(np.float64))
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimator leaves out i == j
    m, total = x.shape[0], kernel.shape[0]
    labels = np.zeros(total)
    labels[:m] = 1.0
    observed = float(_mmd2(kernel, labels[None, :], m)[0])
    exceed = 0
    for start in range(0, permutations, _PERMUTATION_CHUNK):
        count = min(_PERMUTATION_CHUNK, permutations - start)
        shuffled = rng.permuted(np.tile(labels, (count, 1)), axis=1)
        exceed += int(
            np.count_nonzero(_mmd2(kernel, shuffled, m) >= observed - _tolerance(observed))
        )
    return observed, (1 + exceed) / (1 + permutations)


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P[X ≥ k]`` for ``X ~ Binomial(n, p)``, summed exactly in log space."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_tail needs n ≥ 0 and 0 ≤ p ≤ 1, got n={n}, p={p}")
    if k <= 0:
        return 1.0
    if k > n or p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    mode = math.floor((n + 1) * p)
    total = -math.inf
    for j in range(k, n + 1):
        term = log_n - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
        total = _logaddexp(total, term)
        # past the mode the terms only shrink: stop once they no longer change a double
        if j > mode and term < total - 40.0:
            break
    return min(1.0, math.exp(total))


def clusters(
    embeddings: np.ndarray,
    texts: Sequence[str],
    *,
    k_max: int = 5,
    examples: int = 3,
    seed: int = 0,
) -> list[Cluster]:
    """Groups of ``texts`` by spherical k-means, largest first; k in 1..k_max by silhouette.

    k = 1 when there are too few points to split (fewer than 3 per group) or when no split
    reaches a mean silhouette of 0.1. No rows give an empty list.
    """
    problems = []
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        problems.append(
            f"embeddings: expected {len(texts)} rows (one per text) of a 2-D array, got "
            f"shape {embeddings.shape}"
        )
    if k_max < 1:
        problems.append(f"k_max: {k_max} must be at least 1")
    if examples < 0:
        problems.append(f"examples: {examples} must not be negative")
    if problems:
        raise ValueError("; ".join(problems))
    n = embeddings.shape[0]
    if n == 0:
        return []
    unit = _unit(embeddings, "embeddings").astype(np.float64)
    labels = np.zeros(n, dtype=np.int64)
    best = _MIN_SILHOUETTE
    distance = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    for k in range(2, min(k_max, n // 3) + 1):
        candidate = _spherical_kmeans(unit, k, np.random.default_rng(seed))
        score = _silhouette(distance, candidate, k)
        if score > best:
            best, labels = score, candidate
    groups = [_cluster(unit, texts, np.flatnonzero(labels == g), examples) for g in set(labels)]
    return sorted(groups, key=lambda c: (-c.size, c.members[0]))


def input_drift(
    ref: Reference,
    window: np.ndarray,
    texts: Sequence[str],
    *,
    alpha: float = 0.001,
    permutations: int = 1000,
    seed: int = 0,
) -> InputDrift:
    """The window's drift report; ``alarm`` needs both the MMD and the OOD p-value ≤ ``alpha``.

    A window of fewer than 10 texts never alarms and skips the MMD test (``mmd2`` 0,
    ``p_value`` 1); its OOD share and clusters are still reported.
    """
    problems = []
    if window.ndim != 2 or window.shape[0] != len(texts):
        problems.append(
            f"window: expected {len(texts)} rows (one per text) of a 2-D array, got "
            f"shape {window.shape}"
        )
    if permutations < 1:
        problems.append(f"permutations: {permutations} must be at least 1")
    elif not 0.0 < alpha < 1.0 or alpha < 1.0 / (1 + permutations):
        problems.append(
            f"alpha: {alpha} must be in [1/(1 + permutations), 1) = "
            f"[{1.0 / (1 + permutations):.6f}, 1), or no window could ever alarm"
        )
    if problems:
        raise ValueError("; ".join(problems))
    n = window.shape[0]
    ood = nearest_distances(ref, window) > ref.threshold
    ood_count = int(np.count_nonzero(ood))
    expected = 1.0 - ref.quantile
    ood_p = binomial_tail(ood_count, n, expected)
    mmd2, p_value = 0.0, 1.0
    if n >= _MIN_WINDOW:
        mmd2, p_value = mmd_test(ref.embeddings, window, permutations=permutations, seed=seed)
    ood_rows = np.flatnonzero(ood)
    return InputDrift(
        n=n,
        mmd2=mmd2,
        p_value=p_value,
        ood_share=ood_count / n if n else 0.0,
        ood_count=ood_count,
        threshold=ref.threshold,
        expected_share=expected,
        ood_p_value=ood_p,
        alarm=n >= _MIN_WINDOW and p_value <= alpha and ood_p <= alpha,
        clusters=_relabel(
            clusters(window[ood_rows], [texts[int(i)] for i in ood_rows], seed=seed), ood_rows
        ),
    )


def change_point(
    values: Sequence[float] | np.ndarray,
    *,
    min_segment: int = 10,
    permutations: int = 500,
    seed: int = 0,
) -> ChangePoint | None:
    """The single most likely change in mean, with both segments ≥ ``min_segment`` long.

    0/1 sequences use the Bernoulli likelihood ratio, others the Gaussian (CUSUM) statistic;
    the p-value compares the maximum with that of shuffled sequences. None when the sequence
    is shorter than ``2 * min_segment`` or constant.
    """
    problems = []
    if min_segment < 1:
        problems.append(f"min_segment: {min_segment} must be at least 1")
    if permutations < 1:
        problems.append(f"permutations: {permutations} must be at least 1")
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        problems.append("values: must be a flat sequence of finite numbers")
    if problems:
        raise ValueError("; ".join(problems))
    n = array.shape[0]
    if n < 2 * min_segment or np.all(array == array[0]):
        return None
    binary = bool(np.all((array == 0.0) | (array == 1.0)))
    statistic = _split_statistics(array[None, :], min_segment, binary)[0]
    split = int(np.argmax(statistic)) + min_segment
    observed = float(statistic.max())
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, permutations, _PERMUTATION_CHUNK):
        count = min(_PERMUTATION_CHUNK, permutations - start)
        shuffled = rng.permuted(np.tile(array, (count, 1)), axis=1)
        maxima = _split_statistics(shuffled, min_segment, binary).max(axis=1)
        exceed += int(np.count_nonzero(maxima >= observed - _tolerance(observed)))
    return ChangePoint(
        index=split,
        before=float(array[:split].mean()),
        after=float(array[split:].mean()),
        p_value=(1 + exceed) / (1 + permutations),
    )


def quality_drift(
    bad: Sequence[bool],
    *,
    recent: int = 50,
    alpha: float = 0.01,
    min_segment: int = 10,
    permutations: int = 500,
    seed: int = 0,
) -> QualityDrift:
    """The bad-answer trend; ``alarm`` when a change with p ≤ ``alpha`` raised the rate."""
    if recent < 1:
        raise ValueError(f"recent: {recent} must be at least 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: {alpha} must be strictly between 0 and 1")
    flags = np.asarray([bool(b) for b in bad], dtype=np.float64)
    change = change_point(flags, min_segment=min_segment, permutations=permutations, seed=seed)
    alarm = change is not None and change.p_value <= alpha and change.after > change.before
    return QualityDrift(
        n=int(flags.shape[0]),
        rate=float(flags.mean()) if flags.size else 0.0,
        recent_rate=float(flags[-recent:].mean()) if flags.size else 0.0,
        change=change,
        alarm=alarm,
    )


def _unit(array: np.ndarray, name: str) -> np.ndarray:
    """Rows of ``array`` scaled to norm 1 (float32); refuses non-finite or zero rows."""
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError(f"{name}: row {int(np.flatnonzero(norms == 0.0)[0])} is all zeros")
    unit: np.ndarray = (array / norms).astype(np.float32)
    return unit


def _subsample(array: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if array.shape[0] <= size:
        return array
    return array[np.sort(rng.choice(array.shape[0], size=size, replace=False))]


def _gaussian_kernel(z: np.ndarray) -> np.ndarray:
    """``exp(-|a - b|² / (2 σ²))`` over the rows of ``z``, σ the median pairwise distance."""
    squared = np.sum(z * z, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * (z @ z.T), 0.0)
    median = float(np.median(d2[np.triu_indices_from(d2, k=1)]))
    kernel: np.ndarray = np.exp(-d2 / (2.0 * median)) if median > 0.0 else np.ones_like(d2)
    return kernel


def _mmd2(kernel: np.ndarray, labels: np.ndarray, m: int) -> np.ndarray:
    """Unbiased MMD² for each row of 0/1 ``labels`` (1 = first sample, ``m`` ones a row).

    ``kernel`` has a zero diagonal, so the quadratic forms sum over i ≠ j only.
    """
    n = kernel.shape[0] - m
    row_sums = kernel.sum(axis=1)
    xx = np.einsum("pi,pi->p", labels @ kernel, labels)
    x_all = labels @ row_sums
    xy = x_all - xx
    yy = row_sums.sum() - 2.0 * x_all + xx
    result: np.ndarray = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)
    return result


def _tolerance(value: float) -> float:
    """Slack for float ties when comparing a permuted statistic with the observed one."""
    return 1e-12 * max(1.0, abs(value))


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _split_statistics(rows: np.ndarray, min_segment: int, binary: bool) -> np.ndarray:
    """Per row, the two-segment statistic at each split ``t`` in ``min_segment..n - min_segment``.

    Column ``j`` is the split after ``min_segment + j`` elements.
    """
    n = rows.shape[1]
    t = np.arange(min_segment, n - min_segment + 1, dtype=np.float64)
    left = np.cumsum(rows, axis=1)[:, min_segment - 1 : n - min_segment]
    total = rows.sum(axis=1, keepdims=True)
    if not binary:
        # between-segment sum of squares; the total variance is the same under permutation
        statistic: np.ndarray = (left - t * total / n) ** 2 * n / (t * (n - t))
        return statistic
    split_ll = _bernoulli_ll(left, t) + _bernoulli_ll(total - left, n - t)
    ratio: np.ndarray = split_ll - _bernoulli_ll(total, n)
    return ratio


def _bernoulli_ll(successes: np.ndarray, trials: np.ndarray | float) -> np.ndarray:
    """The maximised Bernoulli log-likelihood ``k log(k/n) + (n-k) log(1 - k/n)``, 0 log 0 = 0."""
    failures = trials - successes
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = np.where(successes > 0, successes * np.log(successes / trials), 0.0) + np.where(
            failures > 0, failures * np.log(failures / trials), 0.0
        )
    result: np.ndarray = ll
    return result


def _spherical_kmeans(unit: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Labels of the best of a few k-means++ restarts, by total similarity to the centroids."""
    best_labels, best_score = np.zeros(unit.shape[0], dtype=np.int64), -math.inf
    for _ in range(_KMEANS_RESTARTS):
        centroids = _kmeans_pp(unit, k, rng)
        labels = np.full(unit.shape[0], -1, dtype=np.int64)
        for _ in range(_KMEANS_ITERATIONS):
            new = np.argmax(unit @ centroids.T, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            centroids = _centroids(unit, labels, k, centroids)
        score = float(np.sum(np.max(unit @ centroids.T, axis=1)))
        if score > best_score:
            best_labels, best_score = labels, score
    return best_labels


def _kmeans_pp(unit: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centroids, each drawn with probability ∝ squared distance to the chosen."""
    chosen = [int(rng.integers(unit.shape[0]))]
    closest = np.full(unit.shape[0], np.inf)
    for _ in range(1, k):
        # for unit vectors |a - b|² = 2 (1 - a·b)
        closest = np.minimum(closest, np.clip(2.0 - 2.0 * unit @ unit[chosen[-1]], 0.0, None))
        weights = closest.sum()
        nxt = int(rng.choice(unit.shape[0], p=closest / weights)) if weights > 0 else 0
        chosen.append(nxt)
    centroids: np.ndarray = unit[chosen].copy()
    return centroids


def _centroids(unit: np.ndarray, labels: np.ndarray, k: int, previous: np.ndarray) -> np.ndarray:
    """Normalised mean of each group; an emptied group keeps its previous centroid."""
    sums = np.zeros_like(previous)
    np.add.at(sums, labels, unit)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    result: np.ndarray = np.where(norms > 0, sums / np.where(norms > 0, norms, 1.0), previous)
    return result


def _silhouette(distance: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette over all points (0 for a point alone in its group)."""
    onehot = np.eye(k)[labels]
    counts = onehot.sum(axis=0)
    if np.count_nonzero(counts) < 2:
        return -1.0
    sums = distance @ onehot
    rows = np.arange(labels.shape[0])
    own = counts[labels] - 1
    a = np.where(own > 0, sums[rows, labels] / np.maximum(own, 1), 0.0)
    mean_other = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    mean_other[rows, labels] = np.inf
    b = mean_other.min(axis=1)
    denominator = np.maximum(a, b)
    s = np.where(
        (own > 0) & (denominator > 0), (b - a) / np.where(denominator > 0, denominator, 1), 0
    )
    return float(s.mean())


def _cluster(unit: np.ndarray, texts: Sequence[str], members: np.ndarray, examples: int) -> Cluster:
    """A :class:`Cluster` of ``members`` with its distinct most central texts."""
    centroid = unit[members].sum(axis=0)
    order = members[np.argsort(-(unit[members] @ centroid), kind="stable")]
    picked: list[str] = []
    for i in order:
        if len(picked) == examples:
            break
        if texts[i] not in picked:
            picked.append(texts[i])
    return Cluster(size=int(members.size), examples=picked, members=[int(i) for i in members])


def _relabel(found: list[Cluster], rows: np.ndarray) -> list[Cluster]:
    """Clusters of a subset, with member indices mapped back to the full window."""
    return [
        Cluster(size=c.size, examples=c.examples, members=[int(rows[i]) for i in c.members])
        for c in found
    ]
