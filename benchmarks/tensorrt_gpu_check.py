"""Build and run TensorRT engines from tensorrt bundles on a GPU machine; print latency and parity as JSON.

Needs only numpy, tensorrt and an NVIDIA driver on the GPU machine (no torch), plus edgec's runtime shims:
the installed ``edgec.runtime_shims``, else the ``runtime_shims/`` folder beside this script in an edgec
checkout (no edgec install needed). The bundles are built beforehand anywhere (``edgec build ... --target
tensorrt``); each carries its ONNX and ``tensorrt.json``, from which the shim builds the engine (timing
cache and engine cache under ``$EDGEC_CACHE_DIR/tensorrt``) and runs it. The ``edgec_shim/`` copy inside
a bundle is never imported: a bundle is untrusted input, and its shim is for devices that run it themselves.

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
import functools
import importlib
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
CHECKOUT_SHIMS = "_edgec_checkout_shims"
"""The name this script gives ``runtime_shims/`` of the edgec checkout it sits in, when edgec is not installed."""


@functools.lru_cache(maxsize=1)
def load_shim() -> ModuleType:
    """edgec's own TensorRT shim module: ``edgec.runtime_shims.tensorrt``, else the checkout's.

    Never a bundle's ``edgec_shim/``: importing it would run the bundle's code on this machine.
    """
    try:
        return importlib.import_module("edgec.runtime_shims.tensorrt")
    except ModuleNotFoundError as exc:
        if exc.name not in ("edgec", "edgec.runtime_shims"):
            raise
    init = Path(__file__).resolve().parent.parent / "runtime_shims" / "__init__.py"
    spec = importlib.util.spec_from_file_location(CHECKOUT_SHIMS, init, submodule_search_locations=[str(init.parent)])
    if not init.is_file() or spec is None or spec.loader is None:
        raise SystemExit("edgec's runtime shims not found: pip install edgec, or run this script from an edgec checkout")
    package = importlib.util.module_from_spec(spec)
    sys.modules[CHECKOUT_SHIMS] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{CHECKOUT_SHIMS}.tensorrt")


def shim_module(name: str) -> ModuleType:
    """Another module of the shim package :func:`load_shim` found (``measure``, ``bundle_files``)."""
    return importlib.import_module(f"{load_shim().__package__}.{name}")


def read_golden(path: str) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Golden feeds from ``golden.npz`` (``inputs/NAME``, ``outputs/NAME`` stacked over samples), read
    within the shim's golden limit (a zip bomb or a lying header is refused before allocating)."""
    arrays: dict[str, np.ndarray] = shim_module("measure").read_golden_arrays(path)
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
    shim, files = load_shim(), shim_module("bundle_files")
    manifest = json.loads((bundle / "manifest.json").read_text())
    files.named_path(str(bundle), manifest, "model_file")  # names from the manifest stay inside the bundle
    runner = shim.open_runner(bundle, files.field_name(manifest, "model_file"),  # checks the engine's name too
                              trust_engine=False)  # a bundle's model.plan is native code: built from the ONNX here
    golden_in, golden_out = read_golden(files.named_path(str(bundle), manifest, "golden"))
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
    reason = load_shim().engine_unavailable_reason()
    if reason:
        print(json.dumps({"error": reason}), file=sys.stderr)
        return EXIT_MISSING
    reports = [check_bundle(bundle, args) for bundle in args.bundles]
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
