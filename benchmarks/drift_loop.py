"""The maintenance loop end to end: does drift monitoring notice a new sub-topic, and does
retraining on the owner's corrections fix it without breaking the rest?

A deployment of the Kumo Coffee example (``examples/kumo_coffee``) is simulated. One fact
category (``--topic``, default ``allergens``) is held out: the champion never trained on it.

1. **Drift.** The reference is every user turn of the champion's training file, embedded with
   MiniLM (``ml.embeddings.load_minilm``), as ``mlops.drift_job`` does. Traffic is
   ``--before`` in-domain requests (questions about the other categories), then ``--after``
   requests of which ``--share`` ask about the held-out category. In-domain traffic is not the
   training texts replayed: each request picks a fact and one of *all* the generator's
   phrasings for its kind (train and eval templates, so most (phrasing, fact) pairs were never
   trained on), in Japanese or English, and a third get a greeting, a follow-up opener, a
   thank-you, lower case or no final punctuation. Exactly like ``mlops.monitor``, a check runs
   once ``drift_window`` requests exist and then every ``drift_every`` requests, on the last
   user turn of the newest ``drift_window`` requests, with ``ml.drift.input_drift`` at
   ``drift_alpha`` (alarm: MMD permutation test *and* out-of-distribution binomial test both
   at p ≤ alpha), 1000 permutations, seed 0 (the settings' defaults, read from
   ``loraloop.config.Settings``). Reported: false alarms among the checks before the shift
   (goal 0), the detection delay (requests after the shift until the first alarming check;
   goal ≤ 200) and the out-of-distribution clusters at detection.
2. **Retraining.** The champion is trained (``ml.training.train``, from the base model) on the
   held-in conversations; the challenger on those plus the held-out category's conversations
   (what the owner's corrections would be), as ``mlops.policy`` retrains: the dataset plus the
   accepted corrections, the champion's options. Both answer the held-out eval cases of the
   new sub-topic and of the old topics (``ml.evaluation.generate``, greedy, scored with the
   ``contains`` metric the eval ``expected`` lists are written for), and the platform's gate
   (``mlops.gate.compare``, margin 0.02, tolerance 0.02) decides. Goal: promote, with a
   significant gain on the new sub-topic and no regression on the old topics.

The baseline of the ratio is the champion measured in the same run: ``ratio = challenger /
champion`` on the new sub-topic's metric.

Usage: python benchmarks/drift_loop.py [--topic allergens] [--before 2000] [--after 600]
       [--share 0.5] [--epochs 2] [--max-new-tokens 48] [--models-dir data/models] [--quick]
``--quick`` uses fewer requests and a tiny random model for the training part (a smoke test:
its quality figures mean nothing; the drift figures use the real MiniLM).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kumo_coffee"
SEED = 0
MARGIN = TOLERANCE = 0.02
GOAL_DELAY = 200
LEARNING_RATE = 2e-4
ROW_LENGTH, ROWS_PER_BATCH = 1024, 2
#: Categories with enough distinct questions in both train.jsonl and eval.jsonl.
TOPICS = ("allergens", "season", "price")
PERTURBED = 1 / 3
GREETINGS = {
    "en": ("Hi, ", "Hello! ", "Excuse me, ", "Quick question: "),
    "ja": ("こんにちは。", "すみません、", "あの、", "ちょっとお聞きしたいのですが、"),
}
THANKS = {"en": (" Thanks!", " Thank you."), "ja": ("よろしくお願いします。", "教えてください。")}

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Split:
    """The example domain with one fact category held out."""

    held_in: list[Conversation]
    corrections: list[Conversation]
    """Training conversations that touch the held-out category."""
    eval_new: list[dict[str, Any]]
    eval_old: list[dict[str, Any]]
    questions_in: list[tuple[str, str]]
    """(language, question) for every fact of the other categories and every phrasing."""
    questions_new: list[tuple[str, str]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", choices=TOPICS, default="allergens", help="held-out category")
    parser.add_argument("--before", type=int, default=2000, help="in-domain requests before T")
    parser.add_argument("--after", type=int, default=600, help="requests after T")
    parser.add_argument("--share", type=float, default=0.5, help="new-topic share after T")
    parser.add_argument("--epochs", type=float, default=2.0, help="training passes, both models")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length in eval")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--only", choices=["drift", "retrain"], help="run one part only")
    parser.add_argument("--quick", action="store_true", help="fewer requests, tiny model")
    args = parser.parse_args()
    if args.quick:
        args.before, args.after = min(args.before, 1000), min(args.after, 300)
    started = time.perf_counter()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    split = _split(args.topic)
    print(
        f"data: examples/kumo_coffee, topic '{args.topic}' held out: champion trains on "
        f"{len(split.held_in)} conversations, the corrections are {len(split.corrections)}; "
        f"eval cases: {len(split.eval_new)} new topic, {len(split.eval_old)} old topics",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="drift-loop-") as scratch:
        work = Path(scratch)
        champion_file = _write(work / "champion.jsonl", split.held_in)
        if args.only != "retrain":
            _drift(args, split, champion_file)
        if args.only != "drift":
            challenger_file = _write(work / "challenger.jsonl", split.held_in + split.corrections)
            _retrain(args, split, champion_file, challenger_file, work)
    print(f"wall time: {time.perf_counter() - started:.1f} s")


# --- data -----------------------------------------------------------------------------------


def _generator() -> ModuleType:
    """``examples/kumo_coffee/generate.py`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("kumo_coffee_generate", EXAMPLE / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _split(topic: str) -> Split:
    generate = _generator()
    facts = generate.build_facts()
    kind_of = {answer: fact.kind for fact in facts for answer in fact.answers}
    held_in: list[Conversation] = []
    corrections: list[Conversation] = []
    for messages in _read(EXAMPLE / "train.jsonl"):
        kinds = {kind_of[m["content"]] for m in messages if m["role"] == "assistant"}
        (corrections if topic in kinds else held_in).append(messages)
    cases = _read_rows(EXAMPLE / "eval.jsonl")
    questions: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for fact in facts:
        train, held_out = generate.QUESTIONS[fact.kind][fact.lang]
        for template in (*train, *held_out):
            questions[fact.kind == topic].append((fact.lang, generate.ask(fact, template)))
    return Split(
        held_in=held_in,
        corrections=corrections,
        eval_new=[c for c in cases if c["fact"].split(":")[0] == topic],
        eval_old=[c for c in cases if c["fact"].split(":")[0] != topic],
        questions_in=questions[False],
        questions_new=questions[True],
    )


def _traffic(split: Split, before: int, after: int, share: float) -> list[tuple[str, bool]]:
    """``before`` in-domain requests, then ``after`` with ``share`` on the new topic:
    (text, is_new) in arrival order."""
    generate = _generator()
    rng = random.Random(SEED)
    requests = []
    for index in range(before + after):
        new = index >= before and rng.random() < share
        lang, question = rng.choice(split.questions_new if new else split.questions_in)
        requests.append((_perturb(question, lang, rng, generate.FOLLOW_UPS[lang]), new))
    return requests


def _perturb(question: str, lang: str, rng: random.Random, follow_ups: tuple[str, ...]) -> str:
    """The question as a customer might type it: a third get one small change."""
    if rng.random() >= PERTURBED:
        return question
    change = rng.randrange(5)
    if change == 0:
        return rng.choice(GREETINGS[lang]) + question
    if change == 1:
        return (
            rng.choice(follow_ups).strip() + " " + question
            if lang == "en"
            else (rng.choice(follow_ups) + question)
        )
    if change == 2:
        return question + rng.choice(THANKS[lang])
    if change == 3 and lang == "en":
        return question.lower()
    return question.rstrip("?？。.")


def _read(path: Path) -> list[Conversation]:
    return [row["messages"] for row in _read_rows(path)]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write(path: Path, conversations: list[Conversation]) -> Path:
    lines = (json.dumps({"messages": m}, ensure_ascii=False) for m in conversations)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- part 1: drift --------------------------------------------------------------------------


def _drift(args: argparse.Namespace, split: Split, champion_file: Path) -> None:
    import numpy as np

    from loraloop.config import Settings
    from loraloop.ml import drift, embeddings
    from loraloop.mlops.drift_job import training_inputs

    fields = Settings.model_fields
    window, every = fields["drift_window"].default, fields["drift_every"].default
    alpha = fields["drift_alpha"].default
    requests = _traffic(split, args.before, args.after, args.share)
    trained = set(training_inputs(champion_file))
    literal = sum(text in trained for text, _ in requests[: args.before]) / args.before
    print(
        f"traffic: {args.before} in-domain requests, then {args.after} with "
        f"{args.share:.0%} on '{args.topic}' (T = request {args.before + 1}); "
        f"{literal:.0%} of the in-domain requests are literally a training question",
        flush=True,
    )
    print(f"monitor: window {window}, every {every} requests, alpha {alpha}", flush=True)
    model = embeddings.load_minilm()
    clock = time.perf_counter()
    ref = drift.reference(model.embed(training_inputs(champion_file)))
    distinct = sorted({text for text, _ in requests})
    rows = dict(zip(distinct, model.embed(distinct), strict=True))
    checks: list[tuple[int, Any]] = []
    seen = 0
    for n in range(window, len(requests) + 1):
        if n - seen < every:
            continue
        texts = [text for text, _ in requests[n - window : n]]
        matrix = np.stack([rows[text] for text in texts])
        checks.append((n, drift.input_drift(ref, matrix, texts, alpha=alpha)))
        seen = n
    seconds = time.perf_counter() - clock
    _report_drift(checks, requests, args.before, window, seconds)


def _report_drift(
    checks: list[tuple[int, Any]],
    requests: list[tuple[str, bool]],
    before: int,
    window: int,
    seconds: float,
) -> None:
    pre = [(n, r) for n, r in checks if n <= before]
    post = [(n, r) for n, r in checks if n > before]
    false = [n for n, r in pre if r.alarm]
    worst = min(pre, key=lambda c: max(c[1].p_value, c[1].ood_p_value))[1]
    print(
        f"false alarms before T: {len(false)} of {len(pre)} checks "
        f"(goal 0{'; at requests ' + ', '.join(map(str, false)) if false else ''}); "
        f"closest call: MMD p {worst.p_value:.4f}, OOD {worst.ood_count}/{worst.n} "
        f"p {worst.ood_p_value:.2g}; OOD share mean "
        f"{sum(r.ood_share for _, r in pre) / len(pre):.1%} (expected {worst.expected_share:.0%})"
    )
    for n, r in post[:6]:
        new = sum(is_new for _, is_new in requests[n - window : n])
        print(
            f"  check at request {n}: {new}/{window} new-topic requests in the window, "
            f"MMD p {r.p_value:.4f}, OOD {r.ood_count}/{r.n} p {r.ood_p_value:.2g}"
            f"{', ALARM' if r.alarm else ''}"
        )
    detected = next(((n, r) for n, r in post if r.alarm), None)
    if detected is None:
        print(f"detection delay: none within {len(requests) - before} requests (goal ≤ 200)")
    else:
        n, r = detected
        texts = requests[n - window : n]
        ood_new = sum(texts[i][1] for c in r.clusters for i in c.members)
        print(
            f"detection delay: {n - before} requests after T (goal ≤ {GOAL_DELAY}: "
            f"{'met' if n - before <= GOAL_DELAY else 'NOT met'}); "
            f"{ood_new} of the {r.ood_count} out-of-distribution requests are on the new topic"
        )
        for c in r.clusters:
            print(f"  OOD cluster of {c.size}: " + " | ".join(c.examples))
    print(f"alarms after T: {sum(r.alarm for _, r in post)} of {len(post)} checks")
    print(f"monitor time: {seconds:.1f} s for {len(checks)} checks (embedding included)")


def _retrain(
    args: argparse.Namespace,
    split: Split,
    champion_file: Path,
    challenger_file: Path,
    work: Path,
) -> None:
    from loraloop.mlops.gate import compare

    base = _base(args, work)
    suites = {"new": split.eval_new, "old": split.eval_old}
    names = {"new": f"new sub-topic ({args.topic})", "old": "old topics"}
    scores = {}
    for role, train_file in (("champion", champion_file), ("challenger", challenger_file)):
        adapter, seconds, steps = _train(args, base, train_file, work / role)
        clock = time.perf_counter()
        scores[role] = _evaluate(base, adapter, suites, args.max_new_tokens)
        print(
            f"{role}: trained {steps} steps in {seconds:.1f} s, evaluated in "
            f"{time.perf_counter() - clock:.1f} s",
            flush=True,
        )
    verdict = compare(
        scores["champion"], scores["challenger"], names, margin=MARGIN, tolerance=TOLERANCE
    )
    _report_gate(verdict, names, quick=args.quick)


def _base(args: argparse.Namespace, work: Path) -> Path:
    if args.quick:
        from loraloop.testing import make_tiny_model

        args.epochs, args.max_new_tokens = 1.0, 8
        split_note = "a tiny random model"
        path = make_tiny_model(work / "tiny")
    else:
        from loraloop.ml.models import ensure_default_base

        split_note = "SmolLM2-135M-Instruct"
        path = ensure_default_base(args.models_dir).path
    print(
        f"training: {split_note}, LoRA rank 16 alpha 32 on attention, {args.epochs:g} epochs at "
        f"learning rate {LEARNING_RATE}, {ROW_LENGTH}-token rows; eval: greedy, "
        f"{args.max_new_tokens} new tokens at most",
        flush=True,
    )
    return path


def _train(
    args: argparse.Namespace, base: Path, train_file: Path, out: Path
) -> tuple[Path, float, int]:
    from loraloop.ml.training import TrainSpec, train

    spec = TrainSpec(
        base_path=base,
        train_file=train_file,
        output_dir=out,
        learning_rate=LEARNING_RATE,
        epochs=args.epochs,
        row_length=ROW_LENGTH,
        rows_per_batch=ROWS_PER_BATCH,
        eval_every=10**6,
        checkpoint_every=10**6,
        seed=SEED,
    )
    result = train(spec)
    assert result.adapter_dir is not None
    return result.adapter_dir, result.seconds, result.steps


def _evaluate(
    base: Path, adapter: Path, suites: dict[str, list[dict[str, Any]]], max_new_tokens: int
) -> dict[str, Any]:
    """Per suite, the ``contains`` score of each case, as ``mlops.evaluate_job`` reports it."""
    from peft import PeftModel

    from loraloop.ml import evaluation
    from loraloop.ml.models import load

    model, tokenizer = load(base)
    model = PeftModel.from_pretrained(model, adapter)
    model.train(False)
    out: dict[str, Any] = {}
    for sid, cases in suites.items():
        answers = evaluation.generate(
            model, tokenizer, [c["messages"] for c in cases], max_new_tokens=max_new_tokens
        )
        out[sid] = {
            "cases": [
                {
                    "id": c["fact"] + ":" + c["lang"],
                    "score": evaluation.score("contains", a, c["expected"]),
                    "answer": a,
                }
                for c, a in zip(cases, answers, strict=True)
            ]
        }
    return out


def _report_gate(verdict: Any, names: dict[str, str], *, quick: bool) -> None:
    for sid, name in names.items():
        s = verdict.suites[sid]
        print(
            f"{name}: champion {s['mean_a']:.3f}, challenger {s['mean_b']:.3f} over {s['n']} "
            f"cases (delta {s['delta']:+.3f}, 95% interval [{s['low']:+.3f}, {s['high']:+.3f}])"
        )
    new = verdict.suites["new"]
    ratio = new["mean_b"] / new["mean_a"] if new["mean_a"] else float("inf")
    print(f"ratio = {ratio:.2f} (challenger / champion on the new sub-topic)")
    pooled = verdict.pooled
    print(
        f"gate (margin {MARGIN}, tolerance {TOLERANCE}): pooled delta {pooled['delta']:+.3f}, "
        f"95% interval [{pooled['low']:+.3f}, {pooled['high']:+.3f}] over {pooled['n']} cases"
    )
    print(f"verdict: {verdict.outcome} ({verdict.reason})")
    if quick:
        print("quick mode: a tiny random model, so the quality figures above mean nothing")


if __name__ == "__main__":
    main()
