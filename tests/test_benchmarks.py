"""The training benchmark runs end to end in its quick mode (tiny model; no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def test_train_throughput_quick_prints_ratio_and_both_losses() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^ratio = \d+\.\d+$", done.stdout, re.MULTILINE), done.stdout
    losses = re.search(r"validation loss: baseline (\S+), loraloop (\S+) ", done.stdout)
    assert losses, done.stdout
    assert all(float(value) > 0 for value in losses.groups())


GATEWAY_SCRIPT = SCRIPT.parent / "gateway_overhead.py"


def test_gateway_overhead_quick_prints_ratio_and_goals() -> None:
    done = subprocess.run(
        [sys.executable, str(GATEWAY_SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ratio = re.search(
        r"^ratio = \d+\.\d+ \(chat path req/s / bare route req/s\)$", done.stdout, re.M
    )
    assert ratio, done.stdout
    assert re.search(r"^goal >= 500 req/s: (met|NOT met)$", done.stdout, re.MULTILINE), done.stdout


SERVE_SCRIPT = SCRIPT.parent / "serve_throughput.py"


def test_serve_throughput_quick_prints_every_ratio_and_the_greedy_match() -> None:
    done = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for ratio in ("engine / naive", "engine / batched base", "single stream engine / merged"):
        assert re.search(rf"^ratio {ratio} = \d+\.\d+ ", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"time to first token: engine p50 \d+\.\d+ s", done.stdout), done.stdout
    equal = re.search(r"^greedy outputs equal to naive: (\d+) of 16 ", done.stdout, re.MULTILINE)
    assert equal, done.stdout
    assert int(equal.group(1)) >= 15  # the tiny model's greedy outputs match PEFT's too
