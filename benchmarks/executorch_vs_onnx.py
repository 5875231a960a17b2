"""executorch bundles against onnx and tflite bundles of the same models, in one run.

``python -m edgec.benchmarks.executorch_vs_onnx [--runs N] [--models digits minilm onet digits_wide] [--out DIR]``

Per model (the digits CNN and the wider 32x32 digits CNN, trained here; MiniLM-L6 sentence embeddings with a
fixed 1x32 token window; MTCNN's pretrained ONet, :mod:`edgec.benchmarks.zoo.mtcnn`, on 48x48 photo windows):

- **onnx fp32 / onnx int8**: ``edgec build --target onnx`` (onnxruntime; int8 in ``auto`` mode: static QDQ for
  the CNNs, dynamic for MiniLM);
- **tflite fp32 / tflite int8**: ``edgec build --target tflite`` (LiteRT through onnx2tf; int8 full-integer
  with float IO, NHWC inputs);
- **executorch fp32 / fp16 / int8**: ``edgec build --target executorch`` (XNNPACK; int8 in ``auto`` mode: PT2E
  static for the CNNs, dynamic for MiniLM), with ``max_dim`` capping the planned batch (and sequence).

Latency: batch 1, 2 threads in every runtime, warm-up, then the median of ``--runs`` calls measured in
alternating rounds so that load from other processes hits every variant alike. Size: the model file.
Fidelity: mean row cosine of the outputs to the PyTorch FP32 model's on held-out data (digits: the 450 test
images, also scored by top-1 against the labels; MiniLM: the evaluation sentences; ONet: 256 windows of a photo
calibration never saw, its three heads side by side per row, and "top-1" is agreement with FP32's face/non-face
decision). Ratios are executorch over onnx and over tflite at the same precision: below 1 means executorch is
faster or smaller.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

THREADS = 2
WARMUP = 10
ROUNDS = 5
MINILM_SEQ = 32
EVAL_BATCH = 64
"""Digits are scored in chunks of this many images; the executorch bundles plan for this batch."""
MODELS = ("digits", "minilm", "onet", "digits_wide")
DEFAULT_MODELS = ("digits", "minilm", "onet")
ONET_EVAL = 256
Precision = Literal["fp32", "fp16", "int8"]
VARIANTS: tuple[tuple[str, Precision], ...] = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"),
                                               ("executorch", "fp32"), ("executorch", "fp16"), ("executorch", "int8"))
BASELINES = ("onnx", "tflite")

Feed = dict[str, np.ndarray]


@dataclass
class Variant:
    """One bundle: its model file, runtime and what was measured."""

    target: str
    precision: Precision
    path: Path | None = None
    channels_last: bool = False
    """The bundle takes NHWC inputs (tflite bundles from the ONNX route)."""
    size: int = 0
    latency_ms: float | None = None
    cosine: float | None = None
    top1: float | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.target} {self.precision}"


@dataclass(frozen=True)
class Case:
    """A model: its source, calibration data, executorch options, one batch-1 feed and the scoring data."""

    model: str
    source: str
    calib: Path
    options: tuple[tuple[str, str], ...]
    feed: Feed
    outputs: Callable[[Any, bool], np.ndarray]
    """A runner's outputs on the scoring data, one row per sample (the bool: the runner takes NHWC)."""
    reference: np.ndarray
    labels: np.ndarray | None = None
    scores: slice = field(default_factory=lambda: slice(None))
    """The columns of a row whose argmax is compared with ``labels`` (top-1)."""
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _torch_logits(pt2: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from edgec.frameworks.torch_utils import safe_load_pt2

    with torch.no_grad():
        return safe_load_pt2(pt2).module()(torch.from_numpy(x)).numpy()


def digits_case(work: Path, wide: bool) -> Case:
    """Train a digits CNN, export it, and score runners on the held-out images in chunks."""
    from edgec.benchmarks.zoo import digits, digits_wide

    assets = (digits_wide if wide else digits).prepare(work)
    x = assets.data.x_test

    def logits(runner: Any, channels_last: bool) -> np.ndarray:
        chunks = [_layout(x[i:i + EVAL_BATCH], channels_last) for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate([next(iter(runner.infer({runner.input_names[0]: c}).values())) for c in chunks])

    name = "digits-wide CNN" if wide else "digits CNN"
    return Case(name, str(assets.pt2), assets.calib, (("max_dim", f"batch={EVAL_BATCH}"),), {"x": x[:1]}, logits,
                _torch_logits(assets.pt2, x), assets.data.y_test)


def minilm_case(work: Path) -> Case:
    """MiniLM with a 1x32 token window, scored against the PyTorch embeddings of the evaluation sentences."""
    from edgec.benchmarks.zoo import minilm

    calib = minilm.save_calib(work / "calib.npz", max_length=MINILM_SEQ)
    reference = minilm.embed_torch(minilm.load_module(), minilm.SENTENCES)
    feeds = [minilm.tokenize([s], max_length=MINILM_SEQ) for s in minilm.SENTENCES]

    def embeddings(runner: Any, channels_last: bool) -> np.ndarray:
        return np.stack([next(iter(runner.infer(f).values()))[0] for f in feeds])

    shapes: dict[str, tuple[int, ...]] = {name: (1, MINILM_SEQ) for name in minilm.INPUT_NAMES}
    options = (("max_dim", f"batch=1,seq={MINILM_SEQ}"),)
    return Case("MiniLM-L6", "edgec.benchmarks.zoo.minilm:factory", calib, options, feeds[6], embeddings, reference,
                input_shapes=shapes)


def onet_case(work: Path) -> Case:
    """MTCNN's pretrained ONet on held-out photo windows: its three heads per row, top-1 = FP32's face decision."""
    import torch

    from edgec.benchmarks.zoo import mtcnn

    calib = mtcnn.save_calib(work / "calib.npz")
    x = mtcnn.eval_windows(ONET_EVAL)
    with torch.no_grad():
        reference = np.concatenate([t.numpy() for t in mtcnn.load_onet()(torch.from_numpy(x))], axis=1)

    def heads(runner: Any, channels_last: bool) -> np.ndarray:
        chunks = [_layout(x[i:i + EVAL_BATCH], channels_last) for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate([_onet_row(runner.infer({runner.input_names[0]: c})) for c in chunks])

    face = slice(14, 16)
    return Case("MTCNN ONet", "edgec.benchmarks.zoo.mtcnn:factory", calib, (("max_dim", f"batch={EVAL_BATCH}"),),
                {"x": x[:1]}, heads, reference, reference[:, face].argmax(axis=1), face)


def _onet_row(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """ONet's heads side by side (box 4, landmarks 10, face probability 2), found by width: runtimes name and
    order outputs their own way."""
    by_width = {np.asarray(v).reshape(len(v), -1).shape[1]: np.asarray(v).reshape(len(v), -1) for v in outputs.values()}
    return np.concatenate([by_width[4], by_width[10], by_width[2]], axis=1)


def _layout(x: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last and x.ndim == 4 else x


def build_bundles(case: Case, out: Path) -> list[Variant]:
    """The onnx and executorch bundles of one model (a failed build is a row that says why)."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from edgec.core.errors import EdgecError
    from edgec.targets.base import target_options

    variants = []
    for target, precision in VARIANTS:
        variant = Variant(target, precision)
        options = case.options if target == "executorch" else ()
        shapes = case.input_shapes if target in ("onnx", "tflite") else {}
        flags = " ".join(f"--target-option {k}={v}" for k, v in options)
        print(f"$ edgec build {case.source} --target {target} --precision {precision} --calib {case.calib} {flags}", flush=True)
        try:
            config = BuildConfig(source=case.source, target=target, precision=precision, calib=case.calib, out=out,
                                 input_shapes=shapes, target_options=target_options(target, options), force=True)
            outcome = build(config)
            variant.path = outcome.bundle_dir / outcome.manifest.model_file
            variant.channels_last = any(s.extra.get("layout", "").upper() == "NHWC" for s in outcome.manifest.input_specs())
        except EdgecError as exc:
            variant.note = exc.one_line()
        variants.append(variant)
    return variants


def _runner(variant: Variant) -> Any:
    from edgec.runtime_shims.executorch import ExecuTorchRunner
    from edgec.runtime_shims.litert import LiteRtRunner
    from edgec.runtime_shims.ort import OrtRunner

    assert variant.path is not None
    cls = {"onnx": OrtRunner, "tflite": LiteRtRunner}.get(variant.target, ExecuTorchRunner)
    return cls(str(variant.path), threads=THREADS)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))))


def measure(case: Case, variants: list[Variant], runs: int) -> None:
    """Size, fidelity and batch-1 latency (alternating rounds) of every variant that built and runs."""
    from edgec.runtime_shims.base import RunnerError
    from edgec.runtime_shims.measure import interleaved_calls

    runners: dict[str, Any] = {}
    for v in variants:
        if v.path is None:
            continue
        v.size = v.path.stat().st_size
        runner = _runner(v)
        try:
            runner.activate()
            got = case.outputs(runner, v.channels_last)
        except RunnerError as exc:
            v.note = f"does not run: {str(exc)[:200]}"
            continue
        v.cosine = _row_cosine(got, case.reference)
        if case.labels is not None:
            v.top1 = float(np.mean(got[:, case.scores].argmax(axis=1) == case.labels))
        runners[v.name] = runner
    feeds = {v.name: {k: _layout(a, v.channels_last) for k, a in case.feed.items()} for v in variants if v.name in runners}
    times = interleaved_calls({name: _call(runner, feeds[name]) for name, runner in runners.items()}, runs, WARMUP, ROUNDS)
    for v in variants:
        if v.name in runners:
            v.latency_ms = statistics.median(times[v.name]) * 1000
            runners[v.name].deactivate()


def _call(runner: Any, feed: Feed) -> Callable[[], Any]:
    return lambda: runner.infer(feed)


def run_model(name: str, work: Path, runs: int) -> tuple[Case, list[Variant]]:
    """Build and measure every variant of one model."""
    if name == "minilm":
        case = minilm_case(work)
    elif name == "onet":
        case = onet_case(work)
    else:
        case = digits_case(work, wide=name == "digits_wide")
    variants = build_bundles(case, work / "bundles")
    print(f"measuring {case.model}: {runs} timed batch-1 runs per variant", flush=True)
    measure(case, variants, runs)
    return case, variants


def ratio_rows(case: Case, variants: list[Variant]) -> list[dict[str, Any]]:
    """executorch over each baseline (onnx, tflite) at each precision both have: latency and size ratios, and
    both cosines."""
    by_name = {v.name: v for v in variants}
    rows = []
    for baseline in BASELINES:
        for precision in ("fp32", "int8"):
            base, et = by_name.get(f"{baseline} {precision}"), by_name.get(f"executorch {precision}")
            if base is None or et is None or base.latency_ms is None or et.latency_ms is None:
                continue
            rows.append({"model": case.model, "baseline": baseline, "precision": precision,
                         "latency_ratio": et.latency_ms / base.latency_ms, "size_ratio": et.size / base.size,
                         "cosine_executorch": et.cosine, f"cosine_{baseline}": base.cosine,
                         "top1_executorch": et.top1, f"top1_{baseline}": base.top1})
    return rows


def format_table(results: list[tuple[Case, list[Variant]]], runs: int) -> str:
    """Every variant of every model, then the executorch/onnx ratios."""
    head = f"{'model':16} {'variant':16} {'size KB':>10} {'p50 ms':>9} {'cos vs fp32':>12} {'top-1':>7}"
    lines = [head, "-" * len(head)]
    for case, variants in results:
        for v in variants:
            size = f"{v.size / 1024:10.1f}" if v.size else f"{'-':>10}"
            lat = f"{v.latency_ms:9.4f}" if v.latency_ms is not None else f"{'-':>9}"
            cos = f"{v.cosine:12.6f}" if v.cosine is not None else f"{'-':>12}"
            top1 = f"{v.top1:7.4f}" if v.top1 is not None else f"{'-':>7}"
            lines.append(f"{case.model:16} {v.name:16} {size} {lat} {cos} {top1}")
    lines += ["", f"{'model':16} {'precision':9} {'vs':7} {'latency et/vs':>14} {'size et/vs':>11}"]
    for case, variants in results:
        for row in ratio_rows(case, variants):
            lines.append(f"{row['model']:16} {row['precision']:9} {row['baseline']:7} {row['latency_ratio']:14.2f} "
                         f"{row['size_ratio']:11.2f}")
    lines.append("")
    lines.append(f"latency: batch 1, {THREADS} threads, median of {runs} runs after {WARMUP} warm-up runs per round, "
                 f"{ROUNDS} alternating rounds")
    lines += [f"{case.model} {v.name}: {v.note}" for case, variants in results for v in variants if v.note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.executorch_vs_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 inferences per variant (default 100)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS),
                        help=f"default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--out", type=Path, help="keep models and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-evo-") as tmp:
        work = args.out or Path(tmp)
        results = [run_model(name, work / name, args.runs) for name in args.models]
    print()
    print(format_table(results, args.runs))
    print(f"\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({
            "variants": [{"model": c.model, **{k: (str(v) if isinstance(v, Path) else v) for k, v in var.__dict__.items()}}
                         for c, vs in results for var in vs],
            "ratios": [row for c, vs in results for row in ratio_rows(c, vs)]}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
