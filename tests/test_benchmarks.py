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
