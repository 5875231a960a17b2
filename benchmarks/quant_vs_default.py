"""edgec INT8 versus onnxruntime's default static INT8, on the two real models, in one run and one table.

``python -m edgec.benchmarks.quant_vs_default [--runs N]``

For each model (the digits CNN, trained here; MiniLM sentence embeddings) the same FP32 ONNX graph
(the fp32 bundle's ``model.onnx``) is quantized twice with the same calibration data:

- **edgec**: ``edgec build --target onnx --precision int8 --calib ...`` (``auto`` mode: static QDQ with
  per-channel weights for the CNN, dynamic per-channel for the MatMul-dominated transformer);
- **default**: ``onnxruntime.quantization.quantize_static`` with every option left at its default
  (QDQ, per-tensor, QInt8 activations and weights, MinMax), fed the same calibration feeds.
  ``quant_pre_process`` is not run: ``quantize_static`` works without it (it only logs a
  recommendation), and on MiniLM the full pre-processing fails (incomplete symbolic shape inference)
  while the variant that skips it left the default's fidelity unchanged (measured: 0.331 both ways).

Latency is batch 1 with the same session options for every model (onnxruntime CPU, 2 intra-op threads),
a warm-up, then the median of ``--runs`` timed calls, measured in alternating rounds so that load from
other processes hits all variants alike. Fidelity: digits, held-out top-1 accuracy; MiniLM, mean cosine
to FP32 over the fixed evaluation sentences.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.zoo import digits, minilm
from edgec.core.types import Feed

THREADS = 2
WARMUP = 10
ROUNDS = 5
VARIANTS = ("fp32", "edgec", "default")



@dataclass
class Row:
    """One model's measurements: latency (ms) and fidelity per variant, and the model file sizes."""

    model: str
    latency_ms: dict[str, float]
    fidelity: dict[str, float]
    fidelity_name: str
    size: dict[str, int]
    note: str


TITLE = "edgec INT8 vs onnxruntime quantize_static defaults"


def ratios(work: Path, runs: int) -> list[dict[str, Any]]:
    """Rows for ``python -m edgec.benchmarks.compare``: latency, fidelity and size, edgec against the default."""
    rows: list[dict[str, Any]] = []
    for row in (bench_digits(work / "digits", runs), bench_minilm(work / "minilm", runs)):
        for metric, values, better in (("p50 latency ms", row.latency_ms, "lower"), (row.fidelity_name, row.fidelity, "higher"),
                                       ("size bytes", row.size, "lower")):
            rows.append({"case": row.model, "metric": metric, "baseline": "default", "candidate": "edgec",
                         "baseline_value": float(values["default"]), "candidate_value": float(values["edgec"]), "better": better})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.quant_vs_default",
                                     description="edgec INT8 vs onnxruntime quantize_static defaults")
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 inferences per variant (default 100)")
    parser.add_argument("--out", type=Path, help="keep models and bundles here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    from edgec.core.errors import EdgecError

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="edgec-qvd-") as tmp:
            work = args.out or Path(tmp)
            rows = [bench_digits(work / "digits", args.runs), bench_minilm(work / "minilm", args.runs)]
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    print()
    print(environment())
    print(format_table(rows, args.runs))
    print(f"\ntotal time {time.perf_counter() - start:.0f}s")
    return 0


def environment() -> str:
    """Where the numbers came from: CPU, cores, library versions."""
    import onnxruntime

    from edgec.compiler import __version__

    return (f"host: {cpu_name()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
            f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider, {THREADS} intra-op threads), "
            f"edgec {__version__}")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what the platform module reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_pair(source: str, calib: Path, out: Path) -> dict[str, Path]:
    """edgec fp32 and int8 bundles of ``source`` calibrated on ``calib``: ``{"fp32": dir, "edgec": dir}``."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    bundles = {}
    for precision, key in (("fp32", "fp32"), ("int8", "edgec")):
        print(f"$ edgec build {source} --target onnx --precision {precision} --calib {calib} --out {out} --force")
        config = BuildConfig(source=source, target="onnx", precision=precision, calib=calib, out=out, force=True)
        bundles[key] = build(config).bundle_dir / "model.onnx"
    return bundles


def default_int8(fp32_model: Path, calib: Path, out: Path) -> Path:
    """onnxruntime ``quantize_static`` with all defaults, calibrated on the feeds edgec used."""
    from onnxruntime import quantization as q

    from edgec.calibration.dataset import load_calibration
    from edgec.frameworks import onnx_utils

    artifact = onnx_utils.artifact_from_file(fp32_model)
    calibration = load_calibration(calib, artifact.inputs)

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = calibration.feeds()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    print(f"$ quantize_static({fp32_model.name}, <{len(calibration)} calibration feeds>)  # onnxruntime defaults")
    logging.getLogger().setLevel(logging.ERROR)
    q.quantize_static(str(fp32_model), str(out), Reader())
    return out


def latencies(models: dict[str, Path], feed: Feed, runs: int) -> dict[str, float]:
    """Median batch-1 latency (ms) per model, same session options, measured in alternating rounds."""
    from edgec.runtime_shims.ort import OrtRunner

    runners = {k: OrtRunner(str(p), threads=THREADS).activate() for k, p in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        per_round = [runs // ROUNDS + (1 if i < runs % ROUNDS else 0) for i in range(ROUNDS)]
        for count in per_round:
            for key, runner in runners.items():
                times[key].extend(_timed(runner, feed, count))
    finally:
        for runner in runners.values():
            runner.deactivate()
    return {k: statistics.median(v) * 1000 for k, v in times.items() if v}


def _timed(runner: Any, feed: Feed, count: int) -> list[float]:
    """Seconds per call after the warm-up (the shim's timing loop, one round)."""
    from edgec.runtime_shims.measure import time_calls

    return time_calls(lambda: runner.infer(feed), count, WARMUP, repeats=1)[0]


def bench_digits(work: Path, runs: int) -> Row:
    """The digits CNN: trained here, exported, built, quantized both ways, measured."""
    from edgec.runtime_shims.ort import OrtRunner

    t0 = time.perf_counter()
    assets = digits.prepare(work)
    data, pt2, calib = assets.data, assets.pt2, assets.calib
    print(f"trained the digits CNN in {time.perf_counter() - t0:.1f}s")
    models = build_pair(str(pt2), calib, work / "bundles")
    models["default"] = default_int8(models["fp32"], calib, work / "digits-default-int8.onnx")

    def accuracy(path: Path) -> float:
        with OrtRunner(str(path), threads=THREADS) as runner:
            return digits.accuracy(next(iter(runner.infer({"x": data.x_test}).values())), data.y_test)

    return _row("digits CNN", models, {"x": data.x_test[:1]}, runs, accuracy, "top-1",
                f"held-out top-1 on {len(data.y_test)} images, batch-1 input 1x1x8x8")


def bench_minilm(work: Path, runs: int) -> Row:
    """MiniLM: built from its factory, quantized both ways, measured."""
    from edgec.runtime_shims.ort import OrtRunner

    calib = minilm.save_calib(work / "calib.npz")
    models = build_pair("edgec.benchmarks.zoo.minilm:factory", calib, work / "bundles")
    models["default"] = default_int8(models["fp32"], calib, work / "minilm-default-int8.onnx")
    with OrtRunner(str(models["fp32"]), threads=THREADS) as runner:
        reference = minilm.embed_with_runner(runner, minilm.SENTENCES)

    def mean_cosine(path: Path) -> float:
        with OrtRunner(str(path), threads=THREADS) as runner:
            return float(minilm.cosine_rows(reference, minilm.embed_with_runner(runner, minilm.SENTENCES)).mean())

    feed = minilm.tokenize([minilm.SENTENCES[6]])
    seq = feed["input_ids"].shape[1]
    return _row("MiniLM-L6", models, feed, runs, mean_cosine, "mean cos",
                f"mean cosine to fp32 on {len(minilm.SENTENCES)} sentences, batch-1 input 1x{seq} tokens")


def _row(name: str, models: dict[str, Path], feed: Feed, runs: int, fidelity: Callable[[Path], float],
         fidelity_name: str, note: str) -> Row:
    print(f"measuring {name}: {runs} timed runs per variant")
    return Row(name, latencies(models, feed, runs), {k: fidelity(p) for k, p in models.items()}, fidelity_name,
               {k: p.stat().st_size for k, p in models.items()}, note)


def format_table(rows: list[Row], runs: int) -> str:
    """One fixed-width table; ratio = edgec / default latency (below 1.0: edgec is faster)."""
    head = (f"{'model':10} {'fp32 ms':>8} {'edgec ms':>9} {'default ms':>11} {'ratio':>6}  "
            f"{'fidelity':9} {'fp32':>7} {'edgec':>7} {'default':>7}  {'size MB fp32/edgec/default':>26}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat, fid = r.latency_ms, r.fidelity
        sizes = "/".join(f"{r.size[k] / 1e6:.2f}" for k in VARIANTS)
        lines.append(
            f"{r.model:10} {lat['fp32']:8.4f} {lat['edgec']:9.4f} {lat['default']:11.4f} {lat['edgec'] / lat['default']:6.2f}  "
            f"{r.fidelity_name:9} {fid['fp32']:7.4f} {fid['edgec']:7.4f} {fid['default']:7.4f}  {sizes:>26}"
        )
    lines.append("")
    lines.append(f"latency: batch 1, median of {runs} runs after {WARMUP} warm-up runs per round, {ROUNDS} alternating rounds")
    lines.extend(f"{r.model}: {r.note}" for r in rows)
    lines.append("default = onnxruntime quantize_static defaults (QDQ, per-tensor, QInt8/QInt8, MinMax), same calibration feeds")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
