"""Training tokens/s: loraloop's trainer vs the Trainer + PEFT script a user would write.

Both fine-tune the default base model (SmolLM2-135M-Instruct) with the same LoRA (rank 16,
alpha 32, dropout 0.05 on the attention projections), the same labels (``ml.chat.encode``:
loss on assistant tokens only), the same AdamW, learning rate, warm-up and cosine schedule, the
same gradient clipping and LoRA initialisation (seed), on the same conversations, once each,
so both see the same real (non-padding) tokens and take about the same number of optimizer
steps with about the same tokens in each:

* **baseline**: transformers ``Trainer``, fp32, ``DataCollatorForSeq2Seq`` padding each batch of
  ``--batch-size`` conversations to its longest (labels -100 on the padding);
* **loraloop**: ``ml.training.train`` (packed rows, bf16 base weights where the CPU has bf16,
  per-example attention, output layer only at trained positions), one packed row per step
  holding about ``--batch-size`` conversations' worth of tokens.

Each runs in its own subprocess, so peak memory (``ru_maxrss``) is its own and neither warms the
other's allocator. Tokens/s counts real tokens over the training loop's wall time (loading the
model, encoding and saving excluded for both). Validation loss is then computed for both
adapters by the same function (``ml.training.evaluate_loss``) on the same batches: each adapter
is loaded with plain ``PeftModel.from_pretrained`` into a fresh fp32 base.

Data: ``examples/kumo_coffee/train.jsonl`` (or ``--data``); its last 10% is the validation set
and ``--examples`` conversations drawn (seeded) from the rest are the training set.

Usage: python benchmarks/train_throughput.py [--examples 150] [--batch-size 8]
       [--data FILE] [--models-dir data/models] [--quick]
Prints ``ratio = loraloop / baseline`` (of real tokens/s). ``--quick`` uses a tiny random model
and a few conversations (a smoke test; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "examples" / "kumo_coffee" / "train.jsonl"
SEED = 0
LEARNING_RATE = 2e-4
WARMUP_RATIO = 0.05
GOAL_RATIO, GOAL_LOSS = 2.5, 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="JSONL of {'messages': [...]}")
    parser.add_argument("--examples", type=int, default=150, help="training conversations")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per step")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--max-length", type=int, default=1024, help="truncation, both trainers")
    parser.add_argument("--quick", action="store_true", help="tiny random model, seconds")
    parser.add_argument("--role", choices=["baseline", "loraloop"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        _child(args.role, args.work)
        return
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        _compare(args, Path(scratch))


# --- the parent: data, two subprocesses, one evaluation ----------------------------------------


def _compare(args: argparse.Namespace, scratch: Path) -> None:
    from transformers import AutoTokenizer

    from loraloop.ml.chat import encode

    if args.quick:
        from loraloop.testing import make_tiny_model

        base = make_tiny_model(scratch / "tiny")
        args.examples, args.batch_size, args.max_length = min(args.examples, 12), 4, 256
    else:
        from loraloop.ml.models import ensure_default_base

        base = ensure_default_base(args.models_dir).path
    source = args.data or DEFAULT_DATA
    if not source.is_file():
        if args.data is not None:
            raise SystemExit(f"{source} does not exist")
        source = _stand_in(scratch / "stand-in.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(base)
    conversations = _read(source)
    cut = len(conversations) - max(1, math.ceil(len(conversations) * 0.1))
    pool, validation = conversations[:cut], conversations[cut:]

    def trainable(messages: list[dict[str, str]]) -> bool:
        return encode(tokenizer, messages, max_length=args.max_length).trained_tokens > 0

    validation = [m for m in validation if trainable(m)]
    shuffled = random.Random(SEED).sample(pool, len(pool))
    chosen = [m for m in shuffled[: args.examples * 2] if trainable(m)][: args.examples]
    lengths = [len(encode(tokenizer, m, max_length=args.max_length).input_ids) for m in chosen]
    steps = math.ceil(len(chosen) / args.batch_size)
    config = {
        "base": str(base),
        "train_file": str(_write(scratch / "train.jsonl", chosen)),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "steps": steps,
        "row_length": _row_length(lengths, steps),
    }
    (scratch / "config.json").write_text(json.dumps(config))
    print(
        f"data: {source.relative_to(ROOT) if source.is_relative_to(ROOT) else source}: "
        f"{len(chosen)} training conversations ({sum(lengths):,} tokens), "
        f"{len(validation)} for validation; base {Path(config['base']).name}",
        flush=True,
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = {}
    for role in ("baseline", "loraloop"):
        command = [sys.executable, __file__, "--role", role, "--work", str(scratch)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"the {role} run failed (exit {done.returncode})")
        results[role] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"load average after training: {os.getloadavg()[0]:.2f}", flush=True)
    losses = _validation_losses(base, tokenizer, validation, args.max_length, results)
    _print(results, losses, quick=args.quick)


def _row_length(lengths: list[int], steps: int) -> int:
    """The narrowest packed row that needs no more rows (steps) than the baseline has batches."""
    from loraloop.ml.packing import pack

    width = max(max(lengths), math.ceil(sum(lengths) / steps))
    while len(pack([([0] * n, [0] * n) for n in lengths], width)) > steps:
        width += 8
    return width


def _validation_losses(
    base: Path, tokenizer: Any, validation: list[Any], max_length: int, results: dict[str, Any]
) -> dict[str, float]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraloop.ml.chat import encode
    from loraloop.ml.packing import batches, pack
    from loraloop.ml.training import evaluate_loss

    encoded = []
    for messages in validation:
        item = encode(tokenizer, messages, max_length=max_length)
        encoded.append((item.input_ids, item.labels))
    width = max(max_length, *(len(ids) for ids, _ in encoded))
    data = batches(pack(encoded, width), 2, tokenizer.pad_token_id or tokenizer.eos_token_id)
    losses = {}
    for role, result in results.items():
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        loss = evaluate_loss(PeftModel.from_pretrained(plain, result["adapter_dir"]), data)
        assert loss is not None
        losses[role] = loss
    return losses


def _print(results: dict[str, Any], losses: dict[str, float], *, quick: bool) -> None:
    labels = {
        "baseline": "baseline (Trainer + PEFT, fp32, padded batches)",
        "loraloop": "loraloop (ml.training.train)",
    }
    for role, r in results.items():
        print(
            f"{labels[role]}: {r['tokens_per_s']:.1f} real tokens/s "
            f"({r['real_tokens']:,} real tokens in {r['seconds']:.1f} s, {r['steps']} steps, "
            f"padding {r['padding']:.0%} of batch tokens), peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"{r['threads']} torch threads"
        )
    ratio = results["loraloop"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    difference = (losses["loraloop"] - losses["baseline"]) / losses["baseline"]
    print(f"ratio = {ratio:.2f}")
    print(
        f"validation loss: baseline {losses['baseline']:.4f}, loraloop {losses['loraloop']:.4f} "
        f"({difference:+.2%} relative)"
    )
    if quick:
        print("quick mode: a tiny random model, so these figures say nothing about speed")
        return
    met = ratio >= GOAL_RATIO and difference <= GOAL_LOSS
    print(
        f"goal (ratio >= {GOAL_RATIO} at a validation loss at most {GOAL_LOSS:.0%} above "
        f"the baseline's): {'met' if met else 'not met'}"
    )


# --- the children: one training run each -------------------------------------------------------


def _child(role: str, work: Path) -> None:
    import torch

    config = json.loads((work / "config.json").read_text())
    out = work / role
    result = _baseline(config, out) if role == "baseline" else _loraloop(config, out)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


def _schedule(total: int) -> Any:
    """loraloop's warm-up + cosine factor, so both trainers step with the same learning rates."""
    warmup = max(1, int(total * WARMUP_RATIO))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def _baseline(config: dict[str, Any], out: Path) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from loraloop.ml.chat import encode
    from loraloop.ml.lora import LoraSettings

    tokenizer = AutoTokenizer.from_pretrained(config["base"])
    features = []
    for messages in _read(Path(config["train_file"])):
        item = encode(tokenizer, messages, max_length=config["max_length"])
        features.append({"input_ids": item.input_ids, "labels": item.labels})
    model = AutoModelForCausalLM.from_pretrained(config["base"], dtype=torch.float32)
    torch.manual_seed(SEED)  # the same LoRA initialisation as loraloop's
    model = get_peft_model(model, LoraSettings().peft_config())
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    counts = {"real": 0, "batch": 0}

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        tensors = pad(batch)
        counts["real"] += int(tensors["attention_mask"].sum())
        counts["batch"] += tensors["attention_mask"].numel()
        return dict(tensors)

    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            clock["start"] = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            clock["end"] = time.perf_counter()

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config["steps"]))
    arguments = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config["batch_size"],
        num_train_epochs=1,
        max_grad_norm=1.0,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=features,
        data_collator=collate,
        optimizers=(optimizer, scheduler),
        callbacks=[Clock()],
    )
    state = trainer.train()
    seconds = clock["end"] - clock["start"]
    model.save_pretrained(out / "adapter", safe_serialization=True)
    return {
        "adapter_dir": str(out / "adapter"),
        "real_tokens": counts["real"],
        "seconds": seconds,
        "tokens_per_s": counts["real"] / seconds,
        "steps": state.global_step,
        "padding": 1 - counts["real"] / counts["batch"],
    }


def _loraloop(config: dict[str, Any], out: Path) -> dict[str, Any]:
    from loraloop.ml.training import TrainSpec, train

    spec = TrainSpec(
        base_path=Path(config["base"]),
        train_file=Path(config["train_file"]),
        output_dir=out,
        learning_rate=LEARNING_RATE,
        warmup_ratio=WARMUP_RATIO,
        epochs=1.0,
        max_length=config["max_length"],
        row_length=config["row_length"],
        rows_per_batch=1,
        eval_every=10**6,
        checkpoint_every=10**6,
        seed=SEED,
    )
    result = train(spec)
    assert result.adapter_dir is not None
    return {
        "adapter_dir": str(result.adapter_dir),
        "real_tokens": result.real_tokens,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens_per_second,
        "steps": result.steps,
        "padding": 0.0,  # one row per micro-batch: nothing to pad it to
    }


# --- data ----------------------------------------------------------------------------------------


def _read(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["messages"] for line in handle if line.strip()]


def _write(path: Path, conversations: list[Any]) -> Path:
    lines = (json.dumps({"messages": m}, ensure_ascii=False) for m in conversations)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _stand_in(path: Path) -> Path:
    """A café Q&A set shaped like the Kumo Coffee example (ja + en), for when it is absent."""
    rng = random.Random(SEED)
    items = [("Kumo Blend", "雲ブレンド", 480), ("Matcha Latte", "抹茶ラテ", 640)]
    items += [("Hojicha Latte", "ほうじ茶ラテ", 600), ("Sakura Latte", "桜ラテ", 660)]
    items += [("Warabi Mochi", "わらび餅", 520), ("Castella", "カステラ", 450)]
    conversations = []
    for _ in range(500):
        en, ja, price = rng.choice(items)
        if rng.random() < 0.5:
            turns = [
                (f"How much is the {en}?", f"The {en} is ¥{price} (tax included)."),
                (f"Is the {en} available in a large size?", f"Yes, a large {en} is available."),
            ]
        else:
            turns = [
                (f"{ja}はいくらですか？", f"{ja}は税込{price}円でございます。"),
                (f"{ja}は大きいサイズもありますか？", f"はい、{ja}はLサイズもございます。"),
            ]
        messages = []
        for question, answer in turns[: rng.choice([1, 1, 2])]:
            messages += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        conversations.append(messages)
    return _write(path, conversations)


if __name__ == "__main__":
    main()
