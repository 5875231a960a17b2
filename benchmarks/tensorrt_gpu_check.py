"""Build and run TensorRT engines from tensorrt bundles on a GPU machine; print latency and parity as JSON.

Self-contained: needs only numpy, tensorrt and an NVIDIA driver on the GPU machine (no edgec install, no
torch). The bundles are built beforehand anywhere (``edgec build ... --target tensorrt``); each carries
its ONNX, ``tensorrt.json`` and the runtime shim (``edgec_shim/``), which this script uses to build the
engine (timing cache and engine cache under ``$EDGEC_CACHE_DIR/tensorrt``) and to run it.

Usage::

    python benchmarks/tensorrt_gpu_check.py BUNDLE [BUNDLE ...] [--iterations 200] [--eval eval.npz]

For each bundle it reports the GPU, TensorRT version, build time, parity of the engine's outputs against
the bundle's golden FP32 reference outputs (cosine, max abs error, top-1 agreement, within the manifest's
tolerance or not) and latency of one inference (host to device, execute, device to host; median, p90,
mean over ``--iterations`` after ``--warmup``). With ``--eval`` (an .npz holding the model's input array
and ``labels``) it also reports top-1 accuracy of classifier bundles on that held-out set.
Exits 3 with a one-line JSON error on stderr when tensorrt is not importable or no GPU is usable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

EXIT_MISSING = 3


def load_shim(bundle: Path) -> ModuleType:
    """The bundle's own ``edgec_shim`` package, imported under a name of its own."""
    init = bundle / "edgec_shim" / "__init__.py"
    name = f"edgec_shim_{abs(hash(str(bundle.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"{bundle}: no edgec_shim/ (not an edgec bundle?)")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.tensorrt")


def read_golden(path: Path) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Golden feeds from ``golden.npz`` (``inputs/NAME``, ``outputs/NAME`` stacked over samples)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    result = []
    for prefix in ("inputs/", "outputs/"):
        names = [k[len(prefix):] for k in arrays if k.startswith(prefix)]
        count = len(arrays[prefix + names[0]])
        result.append([{n: arrays[prefix + n][i] for n in names} for i in range(count)])
    return result[0], result[1]


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Cosine, max abs error and (for class scores) top-1 agreement, over all samples."""
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    result = {"cosine": float(r @ g / denom) if denom else float(np.array_equal(r, g)),
              "max_abs": float(np.abs(r - g).max())}
    if ref.ndim == 3 and ref.shape[-1] >= 2:
        result["top1_agreement"] = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    return result


def latency(runner: Any, feed: dict[str, np.ndarray], warmup: int, iterations: int) -> dict[str, float]:
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner.infer(feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"median_ms": round(statistics.median(times), 4), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 4),
            "mean_ms": round(statistics.fmean(times), 4), "iterations": iterations}


def accuracy(runner: Any, path: Path) -> dict[str, Any] | None:
    """Top-1 accuracy on an .npz with the model's single input and ``labels``; None when it does not fit."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    name = runner.input_names[0] if len(runner.input_names) == 1 else None
    if name is None or name not in arrays or "labels" not in arrays:
        return None
    x, labels = arrays[name], arrays["labels"]
    predictions = []
    for start in range(0, len(x), 32):
        out = runner.infer({name: x[start:start + 32]})
        predictions.append(next(iter(out.values())).argmax(-1))
    return {"samples": int(len(x)), "top1": float(np.mean(np.concatenate(predictions) == labels))}


def check_bundle(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    shim = load_shim(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    settings = shim.load_settings(bundle)
    engine = settings.get("engine") or {}
    runner = shim.TensorRTRunner(str(bundle / manifest["model_file"]), settings=settings,
                                 engine_path=str(bundle / engine["file"]) if engine.get("file") else None)
    golden_in, golden_out = read_golden(bundle / manifest.get("golden", "golden.npz"))
    report: dict[str, Any] = {"bundle": str(bundle), "precision": manifest["precision"]}
    with runner:
        report.update({"gpu": runner.gpu, "tensorrt": runner.tensorrt_version, "engine": runner.engine_source,
                       "engine_build_s": round(runner.build_seconds, 2), "load_s": round(runner.load_seconds, 2)})
        actual = [runner.infer(feed) for feed in golden_in]
        parity = {}
        for name in golden_out[0]:
            ref = np.stack([f[name] for f in golden_out])
            parity[name] = compare(ref, np.stack([a[name] for a in actual]))
            tol = manifest.get("parity", {}).get("tolerance", {}).get(name)
            if tol:
                parity[name]["within_tolerance"] = bool(parity[name]["cosine"] >= tol["min_cosine"] and parity[name]["max_abs"] <= tol["max_abs"])
        report["parity_vs_fp32"] = parity
        report["latency"] = latency(runner, golden_in[0], args.warmup, args.iterations)
        report["latency_shape"] = {k: list(v.shape) for k, v in golden_in[0].items()}
        if args.eval:
            report["accuracy"] = accuracy(runner, Path(args.eval))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--eval", help=".npz with the input array and labels, for classifier accuracy")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("tensorrt") is None:
        print(json.dumps({"error": "tensorrt is not installed: pip install tensorrt on the GPU machine"}), file=sys.stderr)
        return EXIT_MISSING
    reason = load_shim(args.bundles[0]).engine_unavailable_reason()
    if reason:
        print(json.dumps({"error": reason}), file=sys.stderr)
        return EXIT_MISSING
    reports = [check_bundle(bundle, args) for bundle in args.bundles]
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
