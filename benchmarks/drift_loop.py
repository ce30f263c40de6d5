"""The maintenance loop end to end: does drift monitoring notice a new sub-topic, and does
retraining on the owner's corrections fix it without breaking the rest?

A deployment of the Kumo Coffee example (``examples/kumo_coffee``) is simulated. One fact
category (``--topic``, default ``allergens``: 127 training conversations, 14 eval cases) is
held out: the champion is trained on ``--examples`` conversations (a seeded sample) of the
others and has never seen it.

1. **Drift.** The reference is every user turn of the champion's training file, embedded with
   MiniLM (``ml.embeddings.load_minilm``), as ``mlops.drift_job`` builds it. Traffic is
   ``--before`` in-domain requests, then ``--after`` requests of which ``--share`` ask about
   the held-out category (the shift at request T). In-domain traffic is not the training texts
   replayed: each request picks a fact of the other categories and one of *all* the
   generator's phrasings for its kind (its train and its eval templates), in Japanese or
   English, and a third of them get a greeting, a follow-up opener, a closing phrase, lower
   case or no final punctuation. Exactly like ``mlops.monitor``, a check runs once
   ``drift_window`` requests exist and again every ``drift_every`` requests, on the last user
   turn of the newest ``drift_window`` requests, with ``ml.drift.input_drift`` at
   ``drift_alpha`` (alarm: the MMD permutation test *and* the out-of-distribution binomial
   test both at p ≤ alpha; 1000 permutations, seed 0, as the drift job runs it). Window,
   cadence and alpha are the defaults of ``loraloop.config.Settings``. Each distinct text is
   embedded once (a window's rows are those embeddings, up to float rounding from padding).
   Reported: false alarms among the checks before T (goal 0), the detection delay (requests
   after T until the first alarming check; goal ≤ 200) and the out-of-distribution clusters
   of that check.
2. **Retraining.** As ``mlops.policy`` retrains, the challenger is trained from the base model
   with the champion's options on the champion's data plus the accepted corrections, here the
   held-out category's training conversations (``ml.training.train``). Both versions answer
   the held-out eval cases of the new sub-topic and of the old topics greedily
   (``ml.evaluation.generate``, ``eval_max_new_tokens`` from the settings), scored with the
   ``contains`` metric the eval ``expected`` lists are written for, and the platform's gate
   (``mlops.gate.compare``, margin 0.02, tolerance 0.02) decides. Goal: promote, with a
   significant gain on the new sub-topic and no regression on the old topics.

The baseline is the champion measured in the same run: ``ratio = challenger / champion`` on the
new sub-topic's metric. The default base (SmolLM2-135M-Instruct) on a 2-core CPU bounds the
run: the champion gets 200 of the 427 held-in conversations and both train 3 epochs (the
output says what was limited).

Usage: python benchmarks/drift_loop.py [--topic allergens] [--before 2000] [--after 600]
       [--share 0.5] [--lang both|en|ja] [--examples 200] [--epochs 3]
       [--models-dir data/models] [--only drift|retrain] [--quick]
``--quick`` uses 1,000 + 200 requests and a tiny random model for the training part (a smoke
test: its quality figures mean nothing; the drift part uses the real MiniLM).
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
#: Categories with enough distinct questions in both train.jsonl and eval.jsonl.
TOPICS = ("allergens", "season", "price")
#: Training options of both versions: the platform's default LoRA (rank 16, alpha 32 on the
#: attention projections); a higher learning rate and short rows (more optimizer steps per
#: epoch) so that 3 epochs teach the 135M model some facts within the time on a CPU.
LEARNING_RATE = 2e-3
ROW_LENGTH, ROWS_PER_BATCH = 256, 1
PERTURBED = 1 / 3
GREETINGS = {
    "en": ("Hi, ", "Hello! ", "Excuse me, ", "Quick question: "),
    "ja": ("こんにちは。", "すみません、", "あの、", "ちょっとお聞きしたいのですが、"),
}
CLOSINGS = {"en": (" Thanks!", " Thank you."), "ja": ("よろしくお願いします。", "教えてください。")}

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Split:
    """The example domain with one fact category held out."""

    held_in: list[Conversation]
    """Training conversations that do not touch the held-out category."""
    corrections: list[Conversation]
    """Training conversations that do: what the owner's corrections would be."""
    eval_new: list[dict[str, Any]]
    eval_old: list[dict[str, Any]]
    questions_in: list[tuple[str, str]]
    """(language, question) for every fact of the other categories and every phrasing."""
    questions_new: list[tuple[str, str]]


@dataclass(frozen=True)
class Request:
    """One simulated request, as the monitor sees it (its last user turn)."""

    text: str
    lang: str
    new: bool
    """About the held-out category."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", choices=TOPICS, default="allergens", help="held-out category")
    parser.add_argument("--before", type=int, default=2000, help="in-domain requests before T")
    parser.add_argument("--after", type=int, default=600, help="requests from T on")
    parser.add_argument("--share", type=float, default=0.5, help="new-topic share from T on")
    parser.add_argument(
        "--lang", choices=["both", "en", "ja"], default="both", help="language of the traffic"
    )
    parser.add_argument("--examples", type=int, default=200, help="champion's conversations")
    parser.add_argument("--epochs", type=float, default=3.0, help="training passes, both")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--only", choices=["drift", "retrain"], help="run one part only")
    parser.add_argument("--quick", action="store_true", help="fewer requests, tiny model")
    args = parser.parse_args()
    if args.quick:
        args.before, args.after = min(args.before, 1000), min(args.after, 200)
    started = time.perf_counter()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    split = _split(args.topic, args.examples, args.lang)
    print(
        f"data: examples/kumo_coffee with '{args.topic}' held out: the champion trains on "
        f"{len(split.held_in)} conversations of the other categories, the corrections are "
        f"the {len(split.corrections)} on '{args.topic}'; eval cases: {len(split.eval_new)} "
        f"on the new sub-topic, {len(split.eval_old)} on the old topics",
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


def _split(topic: str, examples: int, lang: str = "both") -> Split:
    """Train conversations by category (every answer of the generator names its fact), a
    seeded sample of ``examples`` held-in ones (0: all), and the questions traffic asks (in
    ``lang``, or both languages)."""
    generate = _generator()
    facts = generate.build_facts()
    kind_of = {answer: fact.kind for fact in facts for answer in fact.answers}
    held_in: list[Conversation] = []
    corrections: list[Conversation] = []
    for messages in _read(EXAMPLE / "train.jsonl"):
        kinds = {kind_of[m["content"]] for m in messages if m["role"] == "assistant"}
        (corrections if topic in kinds else held_in).append(messages)
    if 0 < examples < len(held_in):
        held_in = random.Random(SEED).sample(held_in, examples)
    cases = _read_rows(EXAMPLE / "eval.jsonl")
    questions: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for fact in (f for f in facts if lang in ("both", f.lang)):
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


def _traffic(split: Split, before: int, after: int, share: float) -> list[Request]:
    """``before`` in-domain requests, then ``after`` with ``share`` on the new topic."""
    follow_ups = _generator().FOLLOW_UPS
    rng = random.Random(SEED)
    requests = []
    for index in range(before + after):
        new = index >= before and rng.random() < share
        lang, question = rng.choice(split.questions_new if new else split.questions_in)
        requests.append(Request(_perturb(question, lang, rng, follow_ups[lang]), lang, new))
    return requests


def _perturb(question: str, lang: str, rng: random.Random, follow_ups: tuple[str, ...]) -> str:
    """The question as a customer might type it: a third get one small change."""
    if rng.random() >= PERTURBED:
        return question
    change = rng.randrange(5)
    space = " " if lang == "en" else ""
    if change == 0:
        return rng.choice(GREETINGS[lang]) + question
    if change == 1:
        return rng.choice(follow_ups).strip() + space + question
    if change == 2:
        return question + rng.choice(CLOSINGS[lang])
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
    literal = sum(r.text in trained for r in requests[: args.before]) / args.before
    print(
        f"traffic ({'Japanese and English' if args.lang == 'both' else args.lang}): "
        f"{args.before} in-domain requests, then {args.after} with {args.share:.0%} on "
        f"'{args.topic}' (T = request {args.before + 1}); {literal:.0%} of the in-domain "
        f"requests are literally a question of the training file",
        flush=True,
    )
    print(f"monitor: window {window}, every {every} requests, alpha {alpha}", flush=True)
    clock = time.perf_counter()
    model = embeddings.load_minilm()
    ref = drift.reference(model.embed(training_inputs(champion_file)))
    distinct = sorted({r.text for r in requests})
    rows = dict(zip(distinct, model.embed(distinct), strict=True))
    checks: list[tuple[int, Any]] = []
    seen = 0
    for n in range(window, len(requests) + 1):
        if n - seen < every:
            continue
        texts = [r.text for r in requests[n - window : n]]
        matrix = np.stack([rows[text] for text in texts])
        checks.append((n, drift.input_drift(ref, matrix, texts, alpha=alpha)))
        seen = n
    seconds = time.perf_counter() - clock
    _report_drift(checks, requests, args.before, window)
    print(f"monitor time: {seconds:.1f} s for {len(checks)} checks (MiniLM included)", flush=True)


def _report_drift(
    checks: list[tuple[int, Any]], requests: list[Request], before: int, window: int
) -> None:
    pre = [(n, r) for n, r in checks if n <= before]
    post = [(n, r) for n, r in checks if n > before]
    if not pre or not post:
        raise SystemExit(f"no check on one side of T: --before ≥ {window} and a longer --after")
    false = [n for n, r in pre if r.alarm]
    closest = min((r for _, r in pre), key=lambda r: max(r.p_value, r.ood_p_value))
    where = f": at requests {', '.join(map(str, false))}" if false else ""
    print(
        f"false alarms before T: {len(false)} of {len(pre)} checks (goal 0{where}); closest "
        f"call MMD p {closest.p_value:.4f}, OOD {closest.ood_count}/{closest.n} p "
        f"{closest.ood_p_value:.2g}; mean OOD share {_mean(r.ood_share for _, r in pre):.1%} "
        f"(expected {closest.expected_share:.0%})"
    )
    for n, r in post[:4]:
        new = sum(q.new for q in requests[n - window : n])
        print(
            f"  check at request {n}: {new}/{window} on the new topic, MMD p {r.p_value:.4f}, "
            f"OOD {r.ood_count}/{r.n} p {r.ood_p_value:.2g}{', ALARM' if r.alarm else ''}"
        )
    detected = next(((n, r) for n, r in post if r.alarm), None)
    if detected is None:
        print(f"detection delay: none within {len(requests) - before} requests (goal ≤ 200)")
    else:
        _report_detection(*detected, requests, before, window)
    print(f"alarms from T on: {sum(r.alarm for _, r in post)} of {len(post)} checks")


def _report_detection(
    n: int, result: Any, requests: list[Request], before: int, window: int
) -> None:
    shown = requests[n - window : n]
    ood = {i for c in result.clusters for i in c.members}
    on_topic = sum(shown[i].new for i in ood)
    met = "met" if n - before <= GOAL_DELAY else "NOT met"
    print(
        f"detection delay: {n - before} requests after T (goal ≤ {GOAL_DELAY}: {met}); "
        f"{on_topic} of its {len(ood)} out-of-distribution requests are on the new topic"
    )
    for lang in ("en", "ja"):
        asked = [i for i, q in enumerate(shown) if q.new and q.lang == lang]
        flagged = sum(i in ood for i in asked)
        print(f"  new-topic requests in {lang} flagged out of distribution: {flagged}/{len(asked)}")
    for cluster in result.clusters:
        print(f"  OOD cluster of {cluster.size}: " + " | ".join(cluster.examples))


def _mean(values: Any) -> float:
    listed = list(values)
    return sum(listed) / len(listed) if listed else 0.0


# --- part 2: retraining and the gate --------------------------------------------------------


def _retrain(
    args: argparse.Namespace,
    split: Split,
    champion_file: Path,
    challenger_file: Path,
    work: Path,
) -> None:
    from loraloop.config import Settings
    from loraloop.mlops.gate import compare

    max_new_tokens = Settings.model_fields["eval_max_new_tokens"].default
    if args.quick:
        from loraloop.testing import make_tiny_model

        base, label = make_tiny_model(work / "tiny"), "a tiny random model"
        args.epochs, max_new_tokens = 1.0, 8
    else:
        from loraloop.ml.models import ensure_default_base

        base, label = ensure_default_base(args.models_dir).path, "SmolLM2-135M-Instruct"
    print(
        f"training: {label} from scratch for each version, LoRA rank 16 alpha 32 on the "
        f"attention projections, epochs {args.epochs:g}, learning rate {LEARNING_RATE}, "
        f"{ROWS_PER_BATCH} packed row of {ROW_LENGTH} tokens per step; eval: greedy, at most "
        f"{max_new_tokens} new tokens",
        flush=True,
    )
    print(
        f"limited for CPU time: the champion's data is {len(split.held_in)} of the held-in "
        f"conversations (--examples), epochs {args.epochs:g} (--epochs)",
        flush=True,
    )
    suites = {"new": split.eval_new, "old": split.eval_old}
    names = {"new": f"new sub-topic ({args.topic})", "old": "old topics"}
    scores = {}
    for role, train_file in (("champion", champion_file), ("challenger", challenger_file)):
        adapter, trained = _train(base, train_file, work / role, args.epochs)
        clock = time.perf_counter()
        scores[role] = _evaluate(base, adapter, suites, max_new_tokens)
        print(f"{role}: {trained}, evaluated in {time.perf_counter() - clock:.1f} s", flush=True)
    verdict = compare(
        scores["champion"], scores["challenger"], names, margin=MARGIN, tolerance=TOLERANCE
    )
    _report_gate(verdict, names, quick=args.quick)


def _train(base: Path, train_file: Path, out: Path, epochs: float) -> tuple[Path, str]:
    from loraloop.ml.training import TrainSpec, train

    spec = TrainSpec(
        base_path=base,
        train_file=train_file,
        output_dir=out,
        learning_rate=LEARNING_RATE,
        epochs=epochs,
        row_length=ROW_LENGTH,
        rows_per_batch=ROWS_PER_BATCH,
        eval_every=10**6,
        checkpoint_every=10**6,
        seed=SEED,
    )
    result = train(spec)
    assert result.adapter_dir is not None
    summary = (
        f"trained {result.steps} steps ({result.real_tokens:,} tokens) in {result.seconds:.1f} s, "
        f"final loss {result.train_loss:.3f}"
    )
    return result.adapter_dir, summary


def _evaluate(
    base: Path, adapter: Path, suites: dict[str, list[dict[str, Any]]], max_new_tokens: int
) -> dict[str, Any]:
    """Per suite, each case's ``contains`` score, shaped as ``mlops.evaluate_job`` reports it."""
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
        scored = [
            {
                "id": f"{c['fact']}:{c['lang']}",  # unique: one case per fact and language
                "score": evaluation.score("contains", a, c["expected"]),
                "answer": a,
            }
            for c, a in zip(cases, answers, strict=True)
        ]
        out[sid] = {"cases": scored}
    return out


def _report_gate(verdict: Any, names: dict[str, str], *, quick: bool) -> None:
    for sid, name in names.items():
        s = verdict.suites[sid]
        print(
            f"{name}: champion {s['mean_a']:.3f}, challenger {s['mean_b']:.3f} over {s['n']} "
            f"cases (delta {s['delta']:+.3f}, 95% interval [{s['low']:+.3f}, {s['high']:+.3f}])"
        )
    new = verdict.suites["new"]
    if new["mean_a"]:
        ratio = new["mean_b"] / new["mean_a"]
    else:  # the champion never answers the new sub-topic: any gain is an infinite ratio
        ratio = float("inf") if new["mean_b"] else float("nan")
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
