"""Which member a request belongs to: the classifier behind an app's semantic router.

    members' texts ─┐                       character n-grams ──▶ TF-IDF ──▶ softmax regression
    general texts ──┴──▶ Router.fit ──▶     (+ on first need: the texts' sentence embeddings,
                                               and a softmax regression on them)

    request ──n-grams──▶ p(class)  ── top p ≥ SURE? ──yes──▶ Decision(strategy="ngrams")
                                                    └─no──▶ embedding of the request
        log p(class) + log q(class | embedding) + β·(best cosine to the class's texts)
                                              ──softmax──▶ Decision(strategy="ngrams+encoder")

The classes are the members plus one *general* class, fitted on :data:`GENERAL_REQUESTS`
(requests no domain member should take), so "write me a poem" has somewhere to go: it is how
the router tells an out-of-scope request from an in-scope one without a negative example from
the app's owner. Character n-grams need no tokenizer, so they work for Japanese (kanji runs,
single kanji and kanji pairs, katakana words) as for English (words and 3-5 letter pieces).
The embedder the gateway passes is multilingual (:mod:`loraloop.ml.multilingual`), so a
Japanese request reaches a member whose training questions say the same in other words or in
English. Fitting is under a second; a decision is about a millisecond plus one embedding.
Pure numpy: nothing here knows about apps or databases.

Plugins add named *strategies* (:func:`register_strategy`): a function of the request text and
the members that names the member to answer, or None to leave the decision to the classifier
and the default. :func:`pick` runs one and turns any failure into a ``StrategyFailed`` that
names it, so a broken strategy costs a request its shortcut, never its answer.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loraloop.ml.general_requests import GENERAL_REQUESTS

__all__ = [
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

SURE = 0.9
"""The n-gram model's top probability from which it decides alone (no embedding is made)."""
BETA = 15.0
"""Weight of the best cosine of the request to one of a class's texts, against the two
models' log-probabilities (nearest examples catch what a linear model smooths away)."""
TRUSTED = 20
"""Texts per member from which the n-gram model's evidence counts in full; below, its logits
are scaled by (fewest texts of a member) / TRUSTED, so an app whose members have only a
description leaves the decision to the embeddings."""
_L2, _STEPS, _RATE = 3e-5, 300, 0.05
"""Softmax regression: L2 penalty, Adam steps (full batch) and step size."""
_DENSE_L2, _DENSE_SCALE = 1e-3, 10.0
"""The embedding model's L2 penalty, and the factor on its unit-row inputs."""

_STOPWORD_TEXT = (
    "a an the i my me you your is are am be to of for in on at and or it this that do does did "
    "can could would should how what when where why who which with from have has was were will "
    "not no please there if so we our us"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""English words that say nothing about a domain (their letter pieces still count)."""

Embed = Callable[[Sequence[str]], np.ndarray]
"""Texts to unit rows (``Multilingual.embed``)."""


# --- strategies from plugins -------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A member a strategy may pick: its name in the app and the owner's description of it."""

    name: str
    description: str = ""


Strategy = Callable[[str, Sequence[Candidate]], str | None]
"""``strategy(text, members)``: the name of the member that answers, or None to pass."""

_STRATEGIES: dict[str, Strategy] = {}
_STRATEGY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class StrategyFailed(RuntimeError):
    """A strategy is not installed, raised, or named no member; the message says which."""


def register_strategy(name: str, strategy: Strategy) -> None:
    """Add the strategy ``name`` (from a plugin); the same function again is a no-op.

    Raises ``ValueError`` for a bad name, a non-callable or a name another plugin holds.
    """
    if not isinstance(name, str) or not _STRATEGY_NAME.fullmatch(name):
        raise ValueError(
            f"strategy name {name!r} must be 1-32 lower-case letters, digits or '_', "
            "starting with a letter"
        )
    if not callable(strategy):
        raise ValueError(f"strategy {name!r} must be callable")
    held = _STRATEGIES.get(name)
    if held is not None and held is not strategy:
        raise ValueError(f"strategy {name!r} is already added by another plugin")
    _STRATEGIES[name] = strategy


def unregister_strategy(name: str) -> None:
    """Forget the strategy ``name`` (nothing happens for an unknown name)."""
    _STRATEGIES.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """The strategies plugins added, in the order they were added."""
    return tuple(_STRATEGIES)


def pick(name: str, text: str, members: Sequence[Candidate]) -> str | None:
    """The member strategy ``name`` chooses for ``text`` (None: it passes); raises
    ``StrategyFailed`` when it is not installed, fails, or names no member."""
    strategy = _STRATEGIES.get(name)
    if strategy is None:
        raise StrategyFailed(f"strategy {name!r} is not installed")
    try:
        chosen = strategy(text, tuple(members))
    except Exception as error:
        raise StrategyFailed(
            f"strategy {name!r} failed: {type(error).__name__}: {error}"
        ) from error
    if chosen is not None and chosen not in {m.name for m in members}:
        raise StrategyFailed(f"strategy {name!r} chose {chosen!r}, which is not a member")
    return chosen


# --- features ---------------------------------------------------------------------------


def _script(char: str) -> str | None:
    code = ord(char)
    if 0x3040 <= code <= 0x309F:
        return "hiragana"
    if 0x30A0 <= code <= 0x30FF:
        return "katakana"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or char in "々〆":
        return "kanji"
    return "latin" if char.isalnum() else None


def _runs(text: str) -> list[tuple[str, str]]:
    """(script, run) for each maximal run of one script in the NFKC, case-folded text."""
    out: list[tuple[str, str]] = []
    current, script = "", None
    for char in unicodedata.normalize("NFKC", text).casefold():
        kind = _script(char)
        if kind != script:
            if current and script:
                out.append((script, current))
            current, script = "", kind
        current += char
    if current and script:
        out.append((script, current))
    return out


def ngrams(text: str) -> list[str]:
    """The features of ``text``: English words and their 3-5 letter pieces, kanji runs with
    their single kanji and pairs, katakana words and their 3-grams. Hiragana is left out (in
    short requests it is mostly grammar, shared by every domain)."""
    out: list[str] = []
    for script, run in _runs(text):
        if script == "latin":
            if run not in _STOPWORDS:
                out.append("w:" + run)
            if not run.isdigit():
                padded = f"<{run}>"
                for n in (3, 4, 5):
                    out += ["l:" + padded[i : i + n] for i in range(len(padded) - n + 1)]
        elif script == "kanji":
            out.append("k:" + run)
            out += ["k1:" + char for char in run]
            out += ["k2:" + run[i : i + 2] for i in range(len(run) - 1)]
        elif script == "katakana":
            out.append("t:" + run)
            out += ["t3:" + run[i : i + 3] for i in range(len(run) - 2)]
    return out


@dataclass(frozen=True)
class _Vectorizer:
    """TF-IDF over :func:`ngrams` (sublinear counts, smoothed idf, unit rows)."""

    vocabulary: dict[str, int]
    idf: np.ndarray

    @classmethod
    def fit(cls, texts: Sequence[str]) -> _Vectorizer:
        frequency: Counter[str] = Counter()
        for text in texts:
            frequency.update(set(ngrams(text)))
        names = sorted(frequency)
        idf = [math.log((1 + len(texts)) / (1 + frequency[name])) + 1 for name in names]
        return cls({name: i for i, name in enumerate(names)}, np.array(idf, dtype=np.float64))

    def sparse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, values) of the text's unit TF-IDF row; unseen n-grams dropped."""
        counts = Counter(g for g in ngrams(text) if g in self.vocabulary)
        columns = np.fromiter((self.vocabulary[g] for g in counts), dtype=np.int64)
        values = np.fromiter((1 + math.log(n) for n in counts.values()), dtype=np.float64)
        values *= self.idf[columns]
        norm = float(np.linalg.norm(values))
        return columns, values / norm if norm else values


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Where the router sends a request: ``member``, or None for the general class. ``best``
    is the most likely member either way, ``score`` its probability (0-1)."""

    member: str | None
    best: str
    score: float
    strategy: str
    """``"ngrams"`` (the cheap model was sure) or ``"ngrams+encoder"``."""
    cosine: float | None = None
    """Cosine of the request's embedding to ``best``'s closest text, when one was made."""


@dataclass
class Router:
    """A fitted classifier over members and, when fitted with general texts, the general
    class (the last column of :meth:`probabilities`); :meth:`route` is thread-safe."""

    members: list[str]
    texts: list[list[str]]
    """Per class (the members, then the general class when there is one), its texts."""
    vectorizer: _Vectorizer
    weights: np.ndarray
    bias: np.ndarray
    trust: float = 1.0
    """The scale of the n-gram logits (see :data:`TRUSTED`)."""
    _dense: _Dense | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def fit(
        cls, classes: Mapping[str, Sequence[str]], *, general: Sequence[str] = GENERAL_REQUESTS
    ) -> Router:
        """Fit on ``{member: texts}`` (members without texts are left out) plus ``general``.
        Every class weighs the same in the loss, whatever its number of texts."""
        members = [name for name, group in classes.items() if group]
        if not members:
            raise ValueError("a router needs at least one member with a text")
        texts = [list(classes[name]) for name in members]
        if general:
            texts.append(list(general))
        flat = [text for group in texts for text in group]
        targets = np.concatenate([np.full(len(g), k) for k, g in enumerate(texts)])
        vectorizer = _Vectorizer.fit(flat)
        rows = [vectorizer.sparse(text) for text in flat]
        sample = np.array([1.0 / len(texts[k]) for k in targets]) / len(texts)
        weights, bias = _softmax_regression(rows, targets, len(texts), len(vectorizer.idf), sample)
        trust = min(1.0, min(len(texts[k]) for k in range(len(members))) / TRUSTED)
        return cls(members, texts, vectorizer, weights, bias, trust)

    def probabilities(self, text: str) -> np.ndarray:
        """The n-gram model's probability of each member, then of the general class."""
        columns, values = self.vectorizer.sparse(text)
        return _softmax(self.trust * (values @ self.weights[columns] + self.bias))

    def route(self, text: str, embed: Embed | None) -> Decision:
        """The n-gram model's decision when it is sure (or ``embed`` is None), else the
        decision of the n-grams and the embeddings together. A request with no n-gram the router
        knows is never sure: its probabilities would be the classes' priors."""
        columns, values = self.vectorizer.sparse(text)
        cheap = _softmax(self.trust * (values @ self.weights[columns] + self.bias))
        if embed is None or (len(columns) and float(cheap.max()) >= SURE):
            return self._decision(cheap, "ngrams", None)
        dense = self._dense_model(embed)
        query = embed([text])[0].astype(np.float64)
        cosines = np.array([float((matrix @ query).max()) for matrix in dense.prototypes])
        q = _softmax(_DENSE_SCALE * query @ dense.weights + dense.bias)
        fused = _softmax(_log(cheap) + _log(q) + BETA * cosines)
        return self._decision(fused, "ngrams+encoder", cosines)

    def _decision(self, p: np.ndarray, strategy: str, cosines: np.ndarray | None) -> Decision:
        top, best = int(p.argmax()), int(p[: len(self.members)].argmax())
        member = self.members[top] if top < len(self.members) else None
        cosine = round(float(cosines[best]), 4) if cosines is not None else None
        return Decision(member, self.members[best], float(p[best]), strategy, cosine)

    def _dense_model(self, embed: Embed) -> _Dense:
        """The classes' texts embedded and the softmax regression on them, made once."""
        with self._lock:
            if self._dense is None:
                flat = [t for group in self.texts for t in group]
                matrix = np.asarray(embed(flat), dtype=np.float64)
                bounds = np.cumsum([0] + [len(g) for g in self.texts])
                targets = np.concatenate([np.full(len(g), k) for k, g in enumerate(self.texts)])
                weights, bias = _dense_regression(_DENSE_SCALE * matrix, targets, len(self.texts))
                prototypes = [matrix[a:b] for a, b in itertools.pairwise(bounds)]
                self._dense = _Dense(prototypes, weights, bias)
            return self._dense


@dataclass(frozen=True)
class _Dense:
    """Per class, its texts' embeddings; and the softmax regression fitted on them."""

    prototypes: list[np.ndarray]
    weights: np.ndarray
    bias: np.ndarray


def _log(p: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log(np.maximum(p, 1e-12))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    out: np.ndarray = e / e.sum()
    return out


def _softmax_regression(
    rows: list[tuple[np.ndarray, np.ndarray]],
    targets: np.ndarray,
    k: int,
    d: int,
    sample: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(d, k)`` and bias ``(k,)`` minimising the sample-weighted cross-entropy plus
    ``_L2/2·|W|²``, by full-batch Adam from zeros (deterministic). Rows with no feature only
    move the bias."""
    sizes = np.array([len(c) for c, _ in rows])
    row_of = np.repeat(np.arange(len(rows)), sizes)
    column = np.concatenate([c for c, _ in rows]).astype(np.int64)
    value = np.concatenate([v for _, v in rows])
    filled = np.flatnonzero(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[filled]
    by_column = np.argsort(column, kind="stable")
    columns, column_starts = np.unique(column[by_column], return_index=True)
    onehot = np.eye(k)[targets]
    weights, bias = np.zeros((d, k)), np.zeros(k)
    moments = [np.zeros((d, k)), np.zeros((d, k)), np.zeros(k), np.zeros(k)]
    for step in range(1, _STEPS + 1):
        logits = np.tile(bias, (len(rows), 1))
        if len(value):
            logits[filled] += np.add.reduceat(value[:, None] * weights[column], starts, axis=0)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        error = (p - onehot) * sample[:, None]
        grad_w = _L2 * weights
        if len(value):
            pieces = (value[:, None] * error[row_of])[by_column]
            grad_w[columns] += np.add.reduceat(pieces, column_starts, axis=0)
        _adam(step, (weights, bias), (grad_w, error.sum(axis=0)), moments)
    return weights, bias


def _dense_regression(
    inputs: np.ndarray, targets: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(d, k)`` and bias ``(k,)`` of a softmax regression on dense ``inputs``: every
    class weighs the same, L2 penalty :data:`_DENSE_L2`, full-batch Adam from zeros."""
    counts = np.bincount(targets, minlength=k)
    sample = 1.0 / (counts[targets] * k)
    onehot = np.eye(k)[targets]
    weights, bias = np.zeros((inputs.shape[1], k)), np.zeros(k)
    moments = [np.zeros_like(weights), np.zeros_like(weights), np.zeros(k), np.zeros(k)]
    for step in range(1, _STEPS + 1):
        logits = inputs @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        error = (p - onehot) * sample[:, None]
        grads = (inputs.T @ error + _DENSE_L2 * weights, error.sum(axis=0))
        _adam(step, (weights, bias), grads, moments)
    return weights, bias


def _adam(
    step: int,
    params: tuple[np.ndarray, ...],
    grads: tuple[np.ndarray, ...],
    moments: list[np.ndarray],
) -> None:
    """One Adam step (β 0.9 and 0.999, step size :data:`_RATE`) on ``params`` in place;
    ``moments`` holds each parameter's two running means, in order."""
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        m, v = moments[2 * i], moments[2 * i + 1]
        m *= 0.9
        m += 0.1 * grad
        v *= 0.999
        v += 0.001 * grad**2
        param -= _RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
