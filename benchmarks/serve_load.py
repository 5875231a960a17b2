"""Serving throughput with dynamic batching on and off: a bounded load generator on 127.0.0.1.

For the digits CNN and MiniLM (INT8 onnx bundles), ``edgec serve`` runs in its own process on a
loopback port; a fixed number of requests is sent at a fixed concurrency with httpx, once with
batching off (``--max-batch 1``) and once on (``--max-batch 16``). Single-request latency (concurrency
1, batching off) is the reference for p99. Printed: throughput, p50 and p99 per case, and the ratios
the issue sets targets for (MiniLM at concurrency 16: throughput x2 or more with batching, p99 within
3x the single-request latency).

``python -m edgec.benchmarks.serve_load [--requests N] [--concurrency C]``; exposes ``ratios()`` for
``python -m edgec.benchmarks.compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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


async def _load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    import httpx

    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(body: bytes) -> None:
            async with limit:
                start = time.perf_counter()
                response = await client.post(f"{url}/v1/predict", content=body, headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        await one(bodies[0])  # warm-up
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start, latencies


def measure(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Throughput and latency percentiles of ``len(bodies)`` requests at ``concurrency``."""
    elapsed, latencies = asyncio.run(_load(url, bodies, concurrency))
    ms = np.asarray(latencies) * 1000
    return {"requests": len(bodies), "throughput_rps": len(bodies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


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


def run_model(model: str, work: Path, requests: int, concurrency: int) -> dict[str, Any]:
    """Single-request latency, then batching off and on at ``concurrency``."""
    bundle = build_bundle(model, work / model)
    bodies = bodies_for(model, requests)
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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgec-serve-load-") as tmp:
        work = args.out or Path(tmp)
        results = [run_model(m, work, args.requests or (400 if m == "digits" else 192), args.concurrency) for m in args.models]
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
