"""Peak memory of a static INT8 build versus the number of calibration samples, per calibration method: edgec's
one-sample-at-a-time histogram calibration against onnxruntime's all-at-once one, on a zoo model.

``python -m edgec.benchmarks.calibration_memory [--model ppocr_rec] [--samples 8 32] [--methods minmax entropy
percentile] [--json FILE]`` (with ``EDGEC_ZOO_CACHE`` set to the zoo cache)

Each build runs in a fresh process, which reports its peak resident memory (``VmHWM``): an FP32 build (the
floor: import, reference outputs, golden, no calibration), then an INT8 build per method and sample count with
``chunked`` calibration (edgec's :mod:`edgec.compiler.passes._chunked_calibration`) and with ``whole``
(``quantize_static`` calibrating itself: every intermediate tensor of every sample held before the histograms
are made, as edgec did before issue 19). ``minmax`` has one path, onnxruntime's (its calibrator keeps a min and
a max per tensor and sample). The last columns compare each chunked bundle with the whole one: the largest
relative difference over all initializers (scales and zero points included; 0 means the same model, hence the
same task metric).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("chunked", "whole")


def prepare(folder: Path, model_name: str, samples: int) -> tuple[Path, Path, dict[str, tuple[int, ...]]]:
    """The zoo model's file, ``samples`` calibration samples of its data and its build shapes."""
    from edgec.benchmarks.zoo import data, models

    model = models.get(model_name)
    path = models.fetch(model)
    calib = folder / "calib.npz"
    np.savez(calib, **data.MAKERS[model.data](path, samples, 0))
    return path, calib, dict(model.inputs)


def peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One build in this (fresh) process; ``spec``: source, calib, shapes, method (None: FP32), samples, path, out."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.passes import quantize_static
    from edgec.compiler.pipeline import build

    if spec["path"] == "whole":
        quantize_static.cache_option = lambda *args: contextlib.nullcontext({})  # type: ignore[assignment]  # onnxruntime calibrates
    int8 = {"precision": "int8", "calib": spec["calib"], "calib_samples": spec["samples"], "calib_method": spec["method"],
            "allow_degraded": True} if spec["method"] else {}
    config = BuildConfig(source=spec["source"], input_shapes=spec["shapes"], out=Path(spec["out"]), cache=False, **int8)
    start = time.perf_counter()
    bundle = build(config).bundle_dir
    return {**spec, "bundle": str(bundle), "peak_mb": round(peak_mb(), 1), "seconds": round(time.perf_counter() - start, 1)}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`child` in a fresh process (peak memory is per process)."""
    args = [sys.executable, "-m", "edgec.benchmarks.calibration_memory", "--child", json.dumps(spec)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"build {spec} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def max_relative_difference(a: Path, b: Path) -> float:
    """The largest ``|x - y| / max|y|`` over the initializers of two ONNX models (inf if their names differ)."""
    import onnx
    from onnx import numpy_helper

    def arrays(path: Path) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(str(path)).graph.initializer}

    x, y = arrays(a), arrays(b)
    if x.keys() != y.keys() or any(x[k].shape != y[k].shape for k in x):
        return float("inf")
    return max((float(np.max(np.abs(x[k] - y[k])) / max(float(np.max(np.abs(y[k]))), 1e-30)) for k in x if y[k].size),
               default=0.0)


def specs(source: Path, calib: Path, shapes: dict[str, Any], args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """The builds to measure: the FP32 floor, then per method and sample count each path it has."""
    base = {"source": str(source), "calib": str(calib), "shapes": shapes, "out": str(out)}
    rows = [{**base, "method": None, "samples": 0, "path": "fp32"}]
    for method in args.methods:
        for samples in args.samples:
            paths = ("onnxruntime",) if method == "minmax" else PATHS
            rows += [{**base, "method": method, "samples": samples, "path": p, "out": str(out / f"{method}-{samples}-{p}")}
                     for p in paths]
    return rows


def compare(rows: list[dict[str, Any]]) -> None:
    """Adds to each chunked row its peak ratio to the whole one and their models' largest difference."""
    by_key = {(r["method"], r["samples"], r["path"]): r for r in rows}
    for row in rows:
        whole = by_key.get((row["method"], row["samples"], "whole"))
        if row["path"] == "chunked" and whole:
            row["whole_over_chunked"] = round(whole["peak_mb"] / row["peak_mb"], 2)
            row["max_rel_diff"] = max_relative_difference(Path(row["bundle"]) / "model.onnx", Path(whole["bundle"]) / "model.onnx")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'build':<12} {'samples':>7} {'path':<12} {'peak RSS MiB':>13} {'seconds':>8} {'whole/chunked':>14} {'max rel diff':>13}"]
    for r in rows:
        ratio = f"{r['whole_over_chunked']:.2f}x" if "whole_over_chunked" in r else ""
        diff = f"{r['max_rel_diff']:.2g}" if "max_rel_diff" in r else ""
        lines.append(f"{r['method'] or 'fp32':<12} {r['samples'] or '':>7} {r['path']:<12} {r['peak_mb']:>13.1f} "
                     f"{r['seconds']:>8.1f} {ratio:>14} {diff:>13}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.calibration_memory",
                                     description="peak memory of static INT8 calibration versus sample count")
    parser.add_argument("--model", default="ppocr_rec", help="a zoo model with a fixed build shape (default ppocr_rec)")
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--methods", nargs="+", choices=("minmax", "entropy", "percentile"),
                        default=["minmax", "entropy", "percentile"])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgec-calibration-memory-") as tmp:
        source, calib, shapes = prepare(Path(tmp), args.model, max(args.samples))
        rows = []
        for spec in specs(source, calib, shapes, args, Path(tmp) / "bundles"):
            rows.append(measure(spec))
            print(f"  {spec['method'] or 'fp32'} {spec['samples']} {spec['path']}: {rows[-1]['peak_mb']:.0f} MiB", flush=True)
        compare(rows)
    print(f"{args.model}: static INT8 builds, peak resident memory per build (a fresh process each)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
