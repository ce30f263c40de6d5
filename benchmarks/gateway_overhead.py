"""Gateway overhead: the full ``/v1`` HTTP path around an engine that answers instantly.

The server is the real app (``create_app`` with ``engine_factory=lambda path: StubEngine()``)
under uvicorn with the options ``loraloop up`` uses, in a subprocess of its own (this script
re-invoked with ``--serve``), on a temporary data folder holding one user, one base-model row,
a deployment of it and an API key with a high rate limit (no token limits). Every chat request
therefore goes through authentication, the key's rate-limit window, the deployment lookup,
metering, the usage row, the day's totals and the trace, exactly as in production. Measured
from this (parent) process:

* **engine in-process**: p50 of ``chat_prompt`` + ``submit`` + consuming the generation of a
  :class:`~loraloop.testing.StubEngine`, the floor any server adds to;
* **sequential latency**: p50 and p90 of non-streaming ``POST /v1/chat/completions`` over one
  keep-alive connection (``http.client``); overhead = p50 of that − the engine's p50;
* **throughput**: ``--connections`` keep-alive connections (one thread each) sending requests
  back to back for ``--seconds``: requests/s of the chat path and, as the baseline measured in
  the same run with the same client, of ``GET /healthz`` (a bare route: one ``SELECT 1``);
  the two alternate for ``--rounds`` rounds and the best round of each counts, so a burst of
  other work on the machine does not decide the figure.

Goals (from the issue, on 2 cores): ≥ 500 chat requests/s and ≤ 2 ms p50 overhead.

Usage: python benchmarks/gateway_overhead.py [--database-url URL] [--requests 2000]
       [--seconds 5] [--connections 8] [--rounds 3] [--quick]
Prints ``ratio = chat path req/s / bare route req/s``. The database is emptied first: point
``--database-url`` at a scratch database (default: a temporary SQLite file). ``--quick`` is a
smoke run of a few seconds whose figures mean little.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.db.tables import BaseModel
from loraloop.gateway import deployments
from loraloop.gateway.credentials import Vault
from loraloop.identity import accounts, api_keys
from loraloop.testing import StubEngine

GOAL_RPS, GOAL_OVERHEAD_MS = 500.0, 2.0
MODEL = "bench"
MESSAGES = [{"role": "user", "content": "Hello, Kumo Coffee! What do you serve?"}]
MAX_TOKENS = 16
SECRET_KEY = "gateway-benchmark-secret-not-default"  # noqa: S105 - a scratch server's secret
STARTUP_SECONDS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="scratch database (default SQLite)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput run")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (best counts)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.home, args.database_url, args.port)
        return
    if args.quick:
        args.requests, args.seconds, args.connections, args.rounds = 200, 1.0, 4, 1
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as scratch:
        _measure(args, Path(scratch))


# --- the server (a subprocess) -------------------------------------------------------------


def _settings(home: Path, url: str) -> Settings:
    return Settings(env="development", home=home, database_url=url, secret_key=SECRET_KEY)


def _serve(home: Path, url: str, port: int) -> None:
    import uvicorn

    from loraloop import logs
    from loraloop.api.app import create_app

    settings = _settings(home, url)
    app = create_app(settings, Database(url), engine_factory=lambda path: StubEngine())
    logs.configure()
    # The options of ``loraloop up`` (cli._run); only the address differs.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", proxy_headers=False)


# --- the parent: data, the server, three measurements ---------------------------------------


def _measure(args: argparse.Namespace, scratch: Path) -> None:
    url = args.database_url or f"sqlite:///{scratch}/bench.db"
    secret = _prepare(_settings(scratch / "home", url), url)
    port = _free_port()
    serve = [sys.executable, __file__, "--serve", "--home", str(scratch / "home")]
    log = (scratch / "server.log").open("w")
    server = subprocess.Popen(  # noqa: S603 - this script, with arguments it chose
        [*serve, "--database-url", url, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_until_healthy(port, server, scratch / "server.log")
        results = _run_all(args, port, secret)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    _print(results, args, make_url(url).get_backend_name())


def _prepare(settings: Settings, url: str) -> str:
    """An empty database with one user, base row, deployment and key; returns the key."""
    db = Database(url)
    if db.dialect == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(db.engine)
    with db.session() as session:
        user = accounts.create_user(
            session, email="bench@example.com", password="correct horse battery staple"
        )
        base = BaseModel(
            name="stub-base",
            source="local",
            path=str(settings.home / "models" / "stub"),  # the stub never reads it
            architecture="LlamaForCausalLM",
            model_type="llama",
            parameters=1,
            context_length=4096,
            chat_template=None,
            sha256="0" * 64,
        )
        session.add(base)
        session.flush()
        vault = Vault(settings.secret())
        deployments.create(session, user, vault, name=MODEL, base_model_id=base.id)
        issued = api_keys.create(session, user, name="bench", rate_limit_per_minute=100_000)
    db.dispose()
    return issued.secret


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_healthy(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server stopped while starting:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"the server did not answer within {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


Request = Callable[[http.client.HTTPConnection], None]


def _requests(secret: str) -> dict[str, Request]:
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS})
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    def chat(conn: http.client.HTTPConnection) -> None:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        _expect_ok(conn.getresponse())

    def healthz(conn: http.client.HTTPConnection) -> None:
        conn.request("GET", "/healthz")
        _expect_ok(conn.getresponse())

    return {"chat": chat, "healthz": healthz}


def _expect_ok(response: http.client.HTTPResponse) -> None:
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")


def _run_all(args: argparse.Namespace, port: int, secret: str) -> dict[str, float]:
    requests = _requests(secret)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(max(50, args.requests // 10)):  # warm up: imports, pools, caches
        requests["chat"](conn)
    engine = _percentiles(_engine_latencies(args.requests))
    chat = _percentiles(_latencies(conn, requests["chat"], args.requests))
    conn.close()
    rates: dict[str, list[float]] = {"chat": [], "healthz": []}
    for _ in range(args.rounds):
        for name, rate in rates.items():
            rate.append(_throughput(port, requests[name], args.connections, args.seconds))
    return {
        "engine_p50": engine[0],
        "chat_p50": chat[0],
        "chat_p90": chat[1],
        "chat_rps": max(rates["chat"]),
        "healthz_rps": max(rates["healthz"]),
    }


def _engine_latencies(count: int) -> list[float]:
    from loraloop.ml.engine import SamplingParams

    engine = StubEngine()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        prompt_ids = engine.chat_prompt(MESSAGES)
        generation = engine.submit(prompt_ids, SamplingParams(max_tokens=MAX_TOKENS))
        for _delta in generation:
            pass
        latencies.append(time.perf_counter() - started)
    return latencies


def _latencies(conn: http.client.HTTPConnection, request: Request, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        request(conn)
        latencies.append(time.perf_counter() - started)
    return latencies


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p90 in milliseconds."""
    cuts = statistics.quantiles(latencies, n=10)
    return statistics.median(latencies) * 1000, cuts[8] * 1000


def _throughput(port: int, request: Request, connections: int, seconds: float) -> float:
    counts = [0] * connections
    errors: list[BaseException] = []
    start = threading.Barrier(connections + 1)

    def work(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        request(conn)  # connect outside the timed window
        start.wait()
        try:
            while time.perf_counter() < deadline:
                request(conn)
                counts[index] += 1
        except Exception as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + seconds + 0.1
    start.wait()
    begun = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} connections failed, first: {errors[0]!r}")
    return sum(counts) / (time.perf_counter() - begun)


def _print(results: dict[str, float], args: argparse.Namespace, db_name: str) -> None:
    overhead = results["chat_p50"] - results["engine_p50"]
    ratio = results["chat_rps"] / results["healthz_rps"]
    print(
        f"database: {db_name}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{args.requests} sequential requests, {args.connections} connections x "
        f"{args.seconds:g} s, best of {args.rounds}"
    )
    print(f"  engine in-process      p50 {results['engine_p50']:7.3f} ms")
    print(
        f"  chat over HTTP         p50 {results['chat_p50']:7.3f} ms, "
        f"p90 {results['chat_p90']:7.3f} ms"
    )
    print(f"  overhead (p50)             {overhead:7.3f} ms")
    print(f"  chat completions     {results['chat_rps']:9.1f} req/s")
    print(f"  GET /healthz         {results['healthz_rps']:9.1f} req/s")
    print(f"ratio = {ratio:.2f} (chat path req/s / bare route req/s)")
    rps_ok, overhead_ok = results["chat_rps"] >= GOAL_RPS, overhead <= GOAL_OVERHEAD_MS
    print(f"goal >= {GOAL_RPS:.0f} req/s: {'met' if rps_ok else 'NOT met'}")
    print(f"goal <= {GOAL_OVERHEAD_MS:.0f} ms p50 overhead: {'met' if overhead_ok else 'NOT met'}")
    if args.quick:
        print("quick mode: a smoke run, so these figures say little about speed")


if __name__ == "__main__":
    main()
