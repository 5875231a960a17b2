"""Serving throughput with dynamic batching on and off: a bounded load generator on 127.0.0.1.

For the digits CNN and MiniLM (INT8 onnx bundles), ``edgec serve`` runs in its own process on a
loopback port; a fixed number of requests is sent at a fixed concurrency over keep-alive connections
(a minimal HTTP/1.1 client, so the load generator takes little of the cores it shares), once with
batching off (``--max-batch 1``) and once on (``--max-batch 16``). Single-request latency (concurrency
1, batching off) is the reference for p99. Printed: throughput, p50 and p99 per case, and the ratios
the issue sets targets for (MiniLM at concurrency 16: throughput x2 or more with batching, p99 within
3x the single-request latency).

``python -m edgec.benchmarks.serve_load [--requests N] [--concurrency C] [--bundle NAME=PATH ...]``; exposes ``ratios()`` for
``python -m edgec.benchmarks.compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TITLE = "serving: dynamic batching on vs off"
MAX_WAIT_MS = 10.0
THREADS: int | None = None
"""Runtime threads of the server (None: the runtime's default). Measured on a 2-core machine, 1 thread
did not change the outcome: the Python HTTP/JSON path, not the model, bounds throughput there."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(bundle: Path, max_batch: int, threads: int | None = THREADS) -> Iterator[str]:
    """``edgec serve`` in its own process on a free loopback port (the load generator must not share
    the server's interpreter), stopped afterwards."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "edgec.compiler", "serve", str(bundle), "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(MAX_WAIT_MS), *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"edgec serve exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("edgec serve did not become ready")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Connection:
    """One keep-alive HTTP/1.1 connection that posts prepared requests: a few microseconds of client
    Python per request (httpx's client spent about 1 ms of the shared cores on each)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> _Connection:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, request: bytes) -> None:
        """Send one prepared request and read its whole answer.

        Raises:
            RuntimeError: the answer's status is not 200.
        """
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            status = head.split(b"\r\n", 1)[0].decode()
            raise RuntimeError(f"request failed: {status}: {body[:200]!r}")

    def close(self) -> None:
        self.writer.close()


def prepare(body: bytes, content_type: str = "application/json") -> bytes:
    """A complete ``POST /v1/predict`` request."""
    head = f"POST /v1/predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    requests = [prepare(b) for b in bodies]
    connections = [await _Connection.open(url) for _ in range(concurrency)]
    latencies: list[float] = []
    pending = iter(requests)

    async def client(connection: _Connection) -> None:
        for request in pending:
            start = time.perf_counter()
            await connection.post(request)
            latencies.append(time.perf_counter() - start)

    try:
        for connection in connections:  # warm-up: one request per connection
            await connection.post(requests[0])
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        return time.perf_counter() - start, latencies
    finally:
        for connection in connections:
            connection.close()


def measure(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Throughput and latency percentiles of ``len(bodies)`` requests at ``concurrency``."""
    elapsed, latencies = asyncio.run(_load(url, bodies, concurrency))
    ms = np.asarray(latencies) * 1000
    return {"requests": len(bodies), "throughput_rps": len(bodies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def bundle_bodies(bundle: Path, count: int) -> list[bytes]:
    """JSON bodies of one sample each, cycling through the bundle's golden inputs."""
    from edgec.core.bundle import load_manifest, read_golden

    inputs, _ = read_golden(bundle / load_manifest(bundle).golden)
    samples = [{k: v[i:i + 1] for k, v in feed.items()} for feed in inputs for i in range(len(next(iter(feed.values()))))]
    return [json.dumps({"inputs": {k: v.tolist() for k, v in samples[i % len(samples)].items()}}).encode() for i in range(count)]


def bodies_for(model: str, count: int) -> list[bytes]:
    """Distinct JSON request bodies (one sample each, equal shapes so they can batch)."""
    if model == "digits":
        from edgec.benchmarks.zoo import digits

        x = digits.load_data().x_test
        return [json.dumps({"inputs": {"x": x[i % len(x)][None].tolist()}}).encode() for i in range(count)]
    from edgec.benchmarks.zoo import minilm

    sentences = list(minilm.SENTENCES) + minilm.calibration_sentences()
    feeds = minilm.tokenize(sentences, max_length=32)
    return [json.dumps({"inputs": {k: v[i % len(sentences)][None].tolist() for k, v in feeds.items()}}).encode()
            for i in range(count)]


def build_bundle(model: str, work: Path) -> Path:
    """The INT8 onnx bundle of the model (cached stages make reruns quick)."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    work.mkdir(parents=True, exist_ok=True)
    if model == "digits":
        from edgec.benchmarks.zoo import digits

        assets = digits.prepare(work)
        return build(BuildConfig(source=str(assets.pt2), precision="int8", calib=assets.calib, out=work / "bundles",
                                 force=True)).bundle_dir
    from edgec.benchmarks.zoo import minilm

    calib = minilm.save_calib(work / "calib.npz")
    return build(BuildConfig(source="edgec.benchmarks.zoo.minilm:factory", precision="int8", calib=calib,
                             out=work / "bundles", force=True)).bundle_dir


def run_model(model: str, work: Path, requests: int, concurrency: int, bundle: Path | None = None) -> dict[str, Any]:
    """Single-request latency, then batching off and on at ``concurrency`` (on ``bundle``, else a fresh build)."""
    if bundle is None:
        bundle = build_bundle(model, work / model)
        bodies = bodies_for(model, requests)
    else:
        bodies = bundle_bodies(bundle, requests)
    with serving(bundle, 1) as url:
        single = measure(url, bodies[: max(20, requests // 8)], 1)
        off = measure(url, bodies, concurrency)
    with serving(bundle, 16) as url:
        on = measure(url, bodies, concurrency)
    return {"model": model, "bundle": bundle.name, "concurrency": concurrency, "single": single, "off": off, "on": on,
            "throughput_gain": on["throughput_rps"] / off["throughput_rps"], "p99_vs_single": on["p99_ms"] / single["p50_ms"]}


def ratios(work: Path, runs: int) -> list[dict[str, Any]]:
    """Rows for ``python -m edgec.benchmarks.compare``."""
    rows = []
    for model, requests in (("digits", max(200, runs * 2)), ("minilm", max(96, runs))):
        r = run_model(model, work, requests, 16)
        rows.append({"case": f"{model} c=16", "metric": "throughput req/s", "baseline": "batching off", "candidate": "batching on",
                     "baseline_value": r["off"]["throughput_rps"], "candidate_value": r["on"]["throughput_rps"], "better": "higher"})
        rows.append({"case": f"{model} c=16", "metric": "p99 ms", "baseline": "single request p50", "candidate": "batching on p99",
                     "baseline_value": r["single"]["p50_ms"], "candidate_value": r["on"]["p99_ms"], "better": "lower"})
    return rows


def format_table(results: list[dict[str, Any]]) -> str:
    """One line per model and case, then the target ratios."""
    lines = [f"{'model':8} {'case':22} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}"]
    for r in results:
        for case, key in (("single (c=1, no batch)", "single"), (f"c={r['concurrency']}, batching off", "off"),
                          (f"c={r['concurrency']}, batching on", "on")):
            m = r[key]
            lines.append(f"{r['model']:8} {case:22} {m['throughput_rps']:>9.1f} {m['p50_ms']:>9.2f} {m['p99_ms']:>9.2f}")
    for r in results:
        lines.append(f"{r['model']}: batching raises throughput x{r['throughput_gain']:.2f}; "
                     f"p99 with batching is {r['p99_vs_single']:.2f}x the single-request p50")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=0, help="requests per case (default: 400 digits, 192 MiniLM)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--models", nargs="+", choices=["digits", "minilm"], default=["digits", "minilm"])
    parser.add_argument("--out", type=Path, help="keep the bundles here (default: a temporary folder)")
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH",
                        help="serve this existing bundle instead of building the models (bodies from its golden inputs); repeatable")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    given = [(name, Path(path)) for name, _, path in (b.partition("=") for b in args.bundle)]
    cases: list[tuple[str, Path | None]] = given or [(m, None) for m in args.models]
    with tempfile.TemporaryDirectory(prefix="edgec-serve-load-") as tmp:
        work = args.out or Path(tmp)
        results = [run_model(m, work, args.requests or (400 if m == "digits" else 192), args.concurrency, bundle) for m, bundle in cases]
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
