"""A real EVM node for end-to-end chain tests: ``anvil`` (npm ``@foundry-rs/anvil``, installed
into ``.tools/`` by ``scripts/test``, or on ``PATH``), started on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

CHAIN_ID = 31337
#: anvil's first development account (a published test key, funded with 10,000 ETH).
SIGNER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
_LOCAL = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin" / "anvil"


def binary() -> str | None:
    return str(_LOCAL) if _LOCAL.exists() else shutil.which("anvil")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running() -> Iterator[str]:
    """anvil on 127.0.0.1; yields its JSON-RPC URL (skips the test when anvil is missing)."""
    found = binary()
    if found is None:
        pytest.skip("the anvil test needs anvil: scripts/test installs it with npm")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [found, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"anvil did not start at {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
