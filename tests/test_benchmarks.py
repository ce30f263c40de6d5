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


ROUTER_SCRIPT = SCRIPT.parent / "router_accuracy.py"
_SHARE = r"(\d+\.\d+)% \((\d+)/(\d+)\)"


def test_router_accuracy_quick_prints_accuracy_and_latency() -> None:
    done = subprocess.run(
        [sys.executable, str(ROUTER_SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for label, total in (("with out-of-scope", 60), ("in scope", 50)):  # 10 a domain, 10 outside
        share = re.search(rf"^accuracy {label} = {_SHARE}$", out, re.MULTILINE)
        assert share, out
        assert int(share[3]) == total
        assert abs(float(share[1]) - 100 * int(share[2]) / total) < 0.01
        assert re.search(rf"^goal >= 95% accuracy \({label}\): (met|NOT met)$", out, re.M), out
    for lang in ("en", "ja"):
        assert re.search(rf"^  language {lang} \(in scope\): {_SHARE}$", out, re.M), out
    assert re.search(rf"^  out of scope -> default: {_SHARE};", out, re.MULTILINE), out
    blocks = out.split("latency of apps.plan, torch threads ")[1:]
    assert len(blocks) == 2, out  # torch's default thread count, then one thread
    for block in blocks:
        threads = block.split(",", 1)[0]
        for app in ("semantic router", "rule-only router", "single app"):
            assert re.search(rf"^  {app} +p50 +\d+\.\d+ ms, p95 +\d+\.\d+ ms ", block, re.M), out
        assert re.search(r"^  added p50 = -?\d+\.\d+ ms ", block, re.MULTILINE), out
        ratio = (
            rf"^ratio = \d+\.\d+ \(semantic router p50 / single app p50, torch threads {threads}\)$"
        )
        assert re.search(ratio, block, re.MULTILINE), out
        goal = rf"^goal <= 5 ms p50 added \(torch threads {threads}\): (met|NOT met)$"
        assert re.search(goal, block, re.MULTILINE), out


DRIFT_SCRIPT = SCRIPT.parent / "drift_loop.py"


def test_drift_loop_quick_prints_alarms_delay_and_the_gate() -> None:
    done = subprocess.run(
        [sys.executable, str(DRIFT_SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    false = re.search(r"^false alarms before T: (\d+) of (\d+) checks ", out, re.MULTILINE)
    assert false, out
    assert int(false.group(1)) == 0  # fixed seeds: the traffic and every test are deterministic
    assert int(false.group(2)) >= 10
    delay = re.search(r"^detection delay: (\d+) requests after T ", out, re.MULTILINE)
    assert delay, out
    assert 0 < int(delay.group(1)) <= 200
    assert re.search(r"^  OOD cluster of \d+: ", out, re.MULTILINE), out
    for suite in (r"new sub-topic \(allergens\)", "old topics"):
        line = rf"^{suite}: champion (\d\.\d+), challenger (\d\.\d+) over \d+ cases "
        assert re.search(line, out, re.MULTILINE), out
    assert re.search(r"^ratio = (\d+\.\d+|inf|nan) ", out, re.MULTILINE), out
    interval = r"95% interval \[([-+]\d\.\d+), ([-+]\d\.\d+)\] over \d+ cases$"
    assert re.search(rf"^gate .*pooled delta [-+]\d\.\d+, {interval}", out, re.MULTILINE), out
    assert re.search(r"^verdict: (promote|refuse) \(", out, re.MULTILINE), out
    assert "quick mode" in out
