"""Does fp16 make a bundle faster on this CPU? fp16 versus fp32 latency and size, per target.

``python -m edgec.benchmarks.fp16_vs_fp32 [--model wide|digits] [--targets onnx,openvino,tflite]
[--runs N] [--threads T] [--out DIR] [--json FILE]``

Both precisions are built by edgec from the same ``torch.export`` program (the demo's 1.15M-parameter
digits CNN at 32x32 by default, trained here in about 15 s; ``--model digits`` for the 24k-parameter 8x8
one) and run through each bundle's own runner, as ``edgec bench`` and ``edgec serve`` run them.

Latency: batch 1, the same thread count for all, a warm-up, then alternating rounds of timed calls over
every bundle, so that load from other processes hits each alike; the number is the median over all calls.
The ratio printed is fp16 latency over fp32 latency: above 1 means fp16 is slower. These are the numbers
behind each target's ``precision_notes`` (``edgec targets``, and the build summary of an fp16 build).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.quant_vs_default import cpu_name  # one reading of /proc/cpuinfo for the scripts

TARGETS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16")
WARMUP = 20
ROUNDS = 5


@dataclass
class Row:
    """One target: batch-1 latency (ms) and model bytes per precision."""

    target: str
    latency_ms: dict[str, float]
    model_bytes: dict[str, int]

    @property
    def latency_ratio(self) -> float:
        """fp16 latency over fp32 latency (above 1: fp16 is slower)."""
        return self.latency_ms["fp16"] / self.latency_ms["fp32"]

    @property
    def size_ratio(self) -> float:
        """fp16 model bytes over fp32 model bytes."""
        return self.model_bytes["fp16"] / self.model_bytes["fp32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.fp16_vs_fp32",
                                     description="fp16 vs fp32 bundles: batch-1 latency and size per target on this host")
    parser.add_argument("--model", choices=("wide", "digits"), default="wide",
                        help="wide: the demo's 1.15M-parameter CNN at 32x32 (default); digits: the 24k-parameter 8x8 CNN")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 calls per bundle (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads for every bundle (default 1)")
    parser.add_argument("--out", type=Path, help="keep the model and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if args.runs < ROUNDS or not set(targets) <= set(TARGETS):
        parser.error(f"--runs must be at least {ROUNDS} and --targets a subset of {','.join(TARGETS)}")
    from edgec.core.errors import EdgecError

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="edgec-fp16-") as tmp:
            rows = run(args.out or Path(tmp), args.model, targets, args.runs, args.threads)
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    print()
    print(environment(args.threads))
    print(format_table(rows, args.runs))
    print(f"\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        document = {"environment": environment(args.threads), "model": args.model,
                    "rows": [{**asdict(r), "latency_ratio": round(r.latency_ratio, 3), "size_ratio": round(r.size_ratio, 3)}
                             for r in rows]}
        args.json.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


def run(work: Path, model: str, targets: list[str], runs: int, threads: int) -> list[Row]:
    """Train and capture the model, build every (target, precision) bundle, then time them all together."""
    pt2, sample = prepare(work, model)
    bundles = {(t, p): build_bundle(pt2, work / "bundles", t, p) for t in targets for p in PRECISIONS}
    times = latencies(bundles, sample, runs, threads)
    return [Row(t, {p: times[t, p] for p in PRECISIONS}, {p: model_bytes(bundles[t, p]) for p in PRECISIONS})
            for t in targets]


def prepare(work: Path, model: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The trained model as a ``.pt2`` and one held-out batch-1 input."""
    from edgec.benchmarks.zoo import digits, digits_wide

    zoo: Any = digits_wide if model == "wide" else digits
    print(f"training the {'digits-wide' if model == 'wide' else 'digits'} CNN")
    assets = zoo.prepare(work, "model.pt2")
    with np.load(assets.eval) as held_out:
        return assets.pt2, {"x": np.ascontiguousarray(held_out["x"][:1])}


def build_bundle(pt2: Path, out: Path, target: str, precision: str) -> Path:
    """``edgec build model.pt2 --target TARGET --precision PRECISION``."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    print(f"$ edgec build {pt2.name} --target {target} --precision {precision}")
    config = BuildConfig.model_validate({"source": str(pt2), "target": target, "precision": precision, "out": out, "force": True})
    return build(config).bundle_dir


def model_bytes(bundle: Path) -> int:
    """Model file bytes as the manifest counts them (openvino's .xml and .bin)."""
    from edgec.core.bundle import load_manifest

    return load_manifest(bundle).model_bytes()


def latencies(bundles: dict[tuple[str, str], Path], sample: dict[str, np.ndarray], runs: int,
              threads: int) -> dict[tuple[str, str], float]:
    """Median batch-1 latency (ms) per bundle over ``runs`` calls, in alternating rounds over all bundles."""
    from contextlib import ExitStack

    from edgec.core.bundle import load_manifest
    from edgec.targets.base import TARGETS as REGISTRY

    with ExitStack() as stack:
        runners = {}
        for key, bundle in bundles.items():
            manifest = load_manifest(bundle)
            runner = REGISTRY.get(manifest.target)().runner(bundle, manifest.model_file, threads=threads)
            runners[key] = stack.enter_context(runner)
        return _timed(runners, _bundle_feeds(bundles, sample), runs)


def _bundle_feeds(bundles: dict[tuple[str, str], Path], sample: dict[str, np.ndarray]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """The sample in each bundle's layout (TFLite bundles take NHWC where the manifest says so)."""
    from edgec.core.bundle import load_manifest

    feeds = {}
    for key, bundle in bundles.items():
        specs = {s["name"]: s for s in load_manifest(bundle).inputs}
        feeds[key] = {name: np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
                      if str(specs[name].get("layout", "")).upper() == "NHWC" and arr.ndim == 4 else arr
                      for name, arr in sample.items()}
    return feeds


def _timed(runners: dict[tuple[str, str], Any], feeds: dict[tuple[str, str], dict[str, np.ndarray]],
           runs: int) -> dict[tuple[str, str], float]:
    for key, runner in runners.items():
        for _ in range(WARMUP):
            runner.infer(feeds[key])
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    per_round = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for key, runner in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                runner.infer(feeds[key])
                times[key].append(time.perf_counter() - start)
    return {key: round(statistics.median(values) * 1e3, 4) for key, values in times.items()}


def environment(threads: int) -> str:
    """Host CPU, cores and the runtimes' versions."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("onnxruntime", "openvino", "ai-edge-litert"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return (f"host: {cpu_name()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
            f"{', '.join(found)}; {threads} inference thread{'' if threads == 1 else 's'}")


def format_table(rows: list[Row], runs: int) -> str:
    """A Markdown table: latency and size per precision, and fp16/fp32 ratios."""
    lines = ["| target | fp32 ms | fp16 ms | fp16/fp32 latency | fp32 MB | fp16 MB | fp16/fp32 size |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lat, size = r.latency_ms, r.model_bytes
        lines.append(f"| {r.target} | {lat['fp32']:.3f} | {lat['fp16']:.3f} | {r.latency_ratio:.2f}x | "
                     f"{size['fp32'] / 1e6:.2f} | {size['fp16'] / 1e6:.2f} | {r.size_ratio:.2f}x |")
    lines.append(f"\nlatency: median of {runs} batch-1 calls per bundle in {ROUNDS} alternating rounds; "
                 "a latency ratio above 1 means fp16 is slower than fp32 on this host")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
