"""tflite bundles against onnx bundles of the same model, and against onnx2tf's own default INT8, in one run.

``python -m edgec.benchmarks.tflite_vs_onnx [--runs N] [--models digits minilm] [--out DIR]``

Per model (the digits CNN, trained here; MiniLM-L6 sentence embeddings with a fixed 1x32 token window):

- **onnx fp32 / onnx int8**: ``edgec build --target onnx`` (onnxruntime; int8 in ``auto`` mode);
- **tflite fp32 / fp16 / int8**: ``edgec build --target tflite`` (LiteRT; int8 = full-integer with the
  calibration set as representative data, float model IO);
- **onnx2tf int8**: onnx2tf's own INT8 recipe (``output_integer_quantized_tflite``, its
  ``*_integer_quant.tflite``: per-channel, builtin INT8 ops plus TF Select ops, float IO), run on the onnx
  fp32 bundle's ``model.onnx`` with the same calibration data (mean 0, std 1: the data is already
  preprocessed). Where onnx2tf fails, the row says why.

Latency: batch 1, 2 threads in both runtimes, warm-up, then the median of ``--runs`` calls measured in
alternating rounds so that load from other processes hits every variant alike. Size: the model file.
Fidelity: digits, held-out top-1 accuracy; MiniLM, mean cosine to the PyTorch FP32 embeddings.

``ratios(work, runs)`` gives the same numbers as rows for ``python -m edgec.benchmarks.compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.types import Feed

TITLE = "tflite vs onnx"
THREADS = 2
WARMUP = 10
ROUNDS = 5
MINILM_SEQ = 32
MODELS = ("digits", "minilm")



@dataclass
class Variant:
    """One deployable model: its file, how to run it, and what was measured."""

    name: str
    path: Path | None
    runtime: str
    size: int = 0
    latency_ms: float | None = None
    fidelity: float | None = None
    note: str = ""


@dataclass
class ModelResult:
    """Every variant of one model, with the fidelity metric's name."""

    model: str
    fidelity_name: str
    variants: list[Variant] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True)
class Case:
    """What a model brings to the benchmark: a source, calibration data, one feed and a fidelity metric."""

    model: str
    source: str
    calib: Path
    feed: Feed
    fidelity: Callable[[Any, bool], float]
    fidelity_name: str
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def digits_case(work: Path) -> Case:
    """Train the digits CNN, export it, and score runners by held-out top-1 (NHWC for LiteRT)."""
    from edgec.benchmarks.zoo import digits

    assets = digits.prepare(work)
    data, pt2, calib = assets.data, assets.pt2, assets.calib

    def top1(runner: Any, channels_last: bool) -> float:
        x = np.ascontiguousarray(data.x_test.transpose(0, 2, 3, 1)) if channels_last else data.x_test
        return digits.accuracy(next(iter(runner.infer({runner.input_names[0]: x}).values())), data.y_test)

    return Case("digits CNN", str(pt2), calib, {"x": data.x_test[:1]}, top1, "top-1")


def minilm_case(work: Path) -> Case:
    """MiniLM with a 1x32 token window, scored by mean cosine to the PyTorch embeddings."""
    from edgec.benchmarks.zoo import minilm

    calib = minilm.save_calib(work / "calib.npz", max_length=MINILM_SEQ)
    reference = minilm.embed_torch(minilm.load_module(), minilm.SENTENCES)
    feeds = [minilm.tokenize([s], max_length=MINILM_SEQ) for s in minilm.SENTENCES]

    def mean_cosine(runner: Any, channels_last: bool) -> float:
        got = np.stack([next(iter(runner.infer(f).values()))[0] for f in feeds])
        return float(minilm.cosine_rows(reference, got).mean())

    shapes = {name: (1, MINILM_SEQ) for name in minilm.INPUT_NAMES}
    return Case("MiniLM-L6", "edgec.benchmarks.zoo.minilm:factory", calib, feeds[6], mean_cosine, "mean cos", shapes)


def build_bundles(case: Case, out: Path, timings: dict[str, float]) -> list[Variant]:
    """edgec bundles: onnx fp32/int8 and tflite fp32/fp16/int8."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from edgec.core.errors import EdgecError

    variants = []
    for target, precision in (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8")):
        name = f"{target} {precision}"
        print(f"$ edgec build {case.source} --target {target} --precision {precision} --calib {case.calib}", flush=True)
        start = time.perf_counter()
        try:
            config = BuildConfig(source=case.source, target=target, precision=precision, calib=case.calib, out=out,
                                 input_shapes=case.input_shapes, force=True)
            bundle = build(config).bundle_dir
            ext = "onnx" if target == "onnx" else "tflite"
            variants.append(Variant(name, bundle / f"model.{ext}", "onnxruntime" if target == "onnx" else "litert"))
        except EdgecError as exc:
            variants.append(Variant(name, None, target, note=exc.one_line()))
        timings[name] = time.perf_counter() - start
    return variants


def onnx2tf_default_int8(onnx_model: Path, calib: Path, work: Path) -> Variant:
    """onnx2tf's INT8 (``-oiqt``) on the same ONNX graph and calibration data, in a subprocess."""
    from edgec.calibration.dataset import load_calibration
    from edgec.frameworks import onnx_utils

    work = work.resolve()
    onnx_model = onnx_model.resolve()
    work.mkdir(parents=True, exist_ok=True)
    calibration = load_calibration(calib, onnx_utils.artifact_from_file(onnx_model).inputs)
    data = []
    for name, arr in calibration.arrays.items():
        samples = arr[:, 0]
        if samples.ndim == 4:
            samples = samples.transpose(0, 2, 3, 1)  # onnx2tf feeds its NHWC graph
        np.save(work / f"{name}.npy", np.ascontiguousarray(samples))
        data.append([name, str(work / f"{name}.npy"), 0.0, 1.0])
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy",
            np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    args = {"onnx": str(onnx_model), "out": str(work / "onnx2tf"), "data": data}
    code = ("import json, sys, onnx2tf; a = json.loads(sys.argv[1]); onnx2tf.convert(input_onnx_file_path=a['onnx'], "
            "output_folder_path=a['out'], output_integer_quantized_tflite=True, custom_input_op_name_np_data_path=a['data'], "
            "not_use_onnxsim=True, verbosity='error')")
    print(f"$ onnx2tf -i {onnx_model.name} -oiqt -cind <same calibration data>  # onnx2tf's own INT8", flush=True)
    log = work / "onnx2tf.log"
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=work, stdout=handle, stderr=subprocess.STDOUT,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=3600, check=False)
    path = work / "onnx2tf" / f"{onnx_model.stem}_integer_quant.tflite"
    if not path.is_file():
        return Variant("onnx2tf int8", None, "litert", note=f"onnx2tf wrote no INT8 model (log: {log})")
    return Variant("onnx2tf int8", path, "litert")


def runner_for(variant: Variant) -> Any:
    """An inactive runner with the benchmark's thread count."""
    from edgec.runtime_shims.litert import LiteRtRunner
    from edgec.runtime_shims.ort import OrtRunner

    assert variant.path is not None
    if variant.runtime == "onnxruntime":
        return OrtRunner(str(variant.path), threads=THREADS)
    return LiteRtRunner(str(variant.path), threads=THREADS)


def bundle_feed(feed: Feed, runtime: str) -> Feed:
    """The batch-1 feed in the variant's layout (LiteRT graphs from ONNX are channels-last)."""
    if runtime == "onnxruntime":
        return feed
    return {n: np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a for n, a in feed.items()}


def measure(case: Case, variants: list[Variant], runs: int) -> None:
    """Size, fidelity and batch-1 latency (alternating rounds) of every variant that exists and runs."""
    from edgec.runtime_shims.base import RunnerError
    from edgec.runtime_shims.measure import interleaved_calls

    runners: dict[str, Any] = {}
    for v in variants:
        if v.path is None:
            continue
        v.size = v.path.stat().st_size
        runner = runner_for(v)
        try:
            runner.activate()
            v.fidelity = case.fidelity(runner, v.runtime != "onnxruntime")
            runners[v.name] = runner
        except RunnerError as exc:
            v.note = f"does not run: {str(exc)[:200]}"
    feeds = {v.name: bundle_feed(case.feed, v.runtime) for v in variants if v.name in runners}
    times = interleaved_calls({name: _call(runner, feeds[name]) for name, runner in runners.items()}, runs, WARMUP, ROUNDS)
    for v in variants:
        if v.name in runners:
            v.latency_ms = statistics.median(times[v.name]) * 1000 if times[v.name] else None
            runners[v.name].deactivate()


def _call(runner: Any, feed: Feed) -> Callable[[], Any]:
    return lambda: runner.infer(feed)


def run_model(name: str, work: Path, runs: int) -> ModelResult:
    """Build, convert and measure every variant of one model."""
    case = digits_case(work) if name == "digits" else minilm_case(work)
    result = ModelResult(case.model, case.fidelity_name)
    result.variants = build_bundles(case, work / "bundles", result.seconds)
    onnx_fp32 = result.get("onnx fp32").path
    if onnx_fp32 is not None:
        start = time.perf_counter()
        result.variants.append(onnx2tf_default_int8(onnx_fp32, case.calib, work / "onnx2tf-default"))
        result.seconds["onnx2tf int8"] = time.perf_counter() - start
    print(f"measuring {case.model}: {runs} timed batch-1 runs per variant", flush=True)
    measure(case, result.variants, runs)
    return result


def format_table(results: list[ModelResult], runs: int) -> str:
    """One fixed-width table of every variant of every model."""
    head = f"{'model':11} {'variant':13} {'runtime':11} {'size KB':>9} {'p50 ms':>8} {'fidelity':>13} {'build s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        for v in r.variants:
            size = f"{v.size / 1024:9.1f}" if v.size else f"{'-':>9}"
            lat = f"{v.latency_ms:8.4f}" if v.latency_ms is not None else f"{'-':>8}"
            fid = f"{r.fidelity_name} {v.fidelity:.4f}" if v.fidelity is not None else "-"
            lines.append(f"{r.model:11} {v.name:13} {v.runtime:11} {size} {lat} {fid:>13} {r.seconds.get(v.name, 0):8.1f}")
    lines.append("")
    lines.append(f"latency: batch 1, {THREADS} threads, median of {runs} runs after {WARMUP} warm-up runs per round, "
                 f"{ROUNDS} alternating rounds")
    lines += [f"{r.model} {v.name}: {v.note}" for r in results for v in r.variants if v.note]
    return "\n".join(lines)


def ratios(work: Path, runs: int) -> list[dict[str, Any]]:
    """Rows for ``python -m edgec.benchmarks.compare``: tflite against onnx, and edgec's INT8 against onnx2tf's."""
    rows: list[dict[str, Any]] = []
    for name in MODELS:
        result = run_model(name, work / name, runs)
        pairs = [("onnx fp32", "tflite fp32"), ("onnx int8", "tflite int8"), ("onnx2tf int8", "tflite int8")]
        for base_name, cand_name in pairs:
            base, cand = result.get(base_name), result.get(cand_name)
            for metric, attr, better in (("p50 latency ms", "latency_ms", "lower"), ("size bytes", "size", "lower"),
                                         (result.fidelity_name, "fidelity", "higher")):
                b, c = getattr(base, attr), getattr(cand, attr)
                if b and c:
                    rows.append({"case": result.model, "metric": metric, "baseline": base_name, "candidate": cand_name,
                                 "baseline_value": float(b), "candidate_value": float(c), "better": better})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.tflite_vs_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 inferences per variant (default 100)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="default: both")
    parser.add_argument("--out", type=Path, help="keep models and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-tvo-") as tmp:
        work = args.out or Path(tmp)
        results = [run_model(name, work / name, args.runs) for name in args.models]
    print()
    print(format_table(results, args.runs))
    print(f"\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([{"model": r.model, "fidelity": r.fidelity_name, "build_seconds": r.seconds,
                                          "variants": [{**v.__dict__, "path": str(v.path)} for v in r.variants]}
                                         for r in results], indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
