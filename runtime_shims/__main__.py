"""Device command line shipped in every bundle: ``bench`` and ``verify`` with numpy and the runtime only.

On a device, with only numpy and the target's runtime installed::

    cd BUNDLE && python -m edgec_shim bench . --runs 200 > result.json
    PYTHONPATH=BUNDLE python -m edgec_shim verify BUNDLE

On the host the same code runs as ``python -m edgec.runtime_shims``. ``bench`` prints one JSON result
(the schema is documented in ``edgec.benchmarks.report``; sorted keys, ``schema_version``); ``edgec bench
--merge result.json ...`` puts it into the host's report. The bundle is read directly: ``manifest.json``
and ``golden.npz`` (``inputs/NAME`` and ``outputs/NAME`` arrays of shape ``(samples, ...)``).

Exit codes match ``edgec``: 0 ok, 1 internal error, 2 usage, 3 missing runtime, 7 parity outside
tolerance (``verify``), 8 integrity (missing or changed files, bad manifest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any, NoReturn

import numpy as np

from . import bounded_npz, bundle_files, measure
from .base import Feed, Runner, RunnerError, brief
from .measure import non_negative_int, positive_int
from .runners import open_runner

SCHEMA_VERSION = 1
RESULT_KIND = "edgec.bench.result"
EXIT_USAGE, EXIT_RUNTIME, EXIT_PARITY, EXIT_INTEGRITY = 2, 3, 7, 8
EVAL_CHUNK = 64
"""Samples per inference during ``--eval`` when the model's batch dimension is dynamic."""
EVAL_FLOOR_MB = 2048
"""``--eval`` data may decode to this many MiB, or to :data:`measure.GOLDEN_RATIO` times its file size when more."""


class ShimError(Exception):
    """One-line error with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"edgec_shim: usage error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def read_manifest(path: str) -> dict[str, Any]:
    """The bundle's ``manifest.json``.

    Raises:
        ShimError: not a bundle, a symlinked or malformed manifest.
    """
    manifest_path = os.path.join(path, "manifest.json")
    if os.path.islink(manifest_path):
        raise ShimError(f"{manifest_path} is a symlink; bundles hold plain files", EXIT_INTEGRITY)
    if not os.path.isfile(manifest_path):
        raise ShimError(f"{path} is not a bundle: manifest.json not found", EXIT_INTEGRITY)
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ShimError(f"{path}: unreadable bundle: {brief(exc, 200)}", EXIT_INTEGRITY) from None
    if not isinstance(manifest, dict) or "target" not in manifest or "model_file" not in manifest:
        raise ShimError(f"{manifest_path} is not an edgec manifest (no target or model_file)", EXIT_INTEGRITY)
    return manifest


def load_bundle(path: str, max_mb: float | None = None) -> tuple[dict[str, Any], Feed, Feed]:
    """Manifest plus golden inputs and outputs of the first shape (name -> array stacked over samples).

    Raises:
        ShimError: not a bundle, a name that breaks the bundle's rules, malformed golden file.
    """
    manifest = read_manifest(path)
    return (manifest, *read_golden_arrays(path, manifest, max_mb))


def read_golden_feeds(path: str, manifest: dict[str, Any], max_mb: float | None = None) -> tuple[list[Feed], list[Feed]]:
    """Every golden sample, of every shape (a model with dynamic dims carries samples at several sizes),
    as one input and one output dict per sample, after the names are checked as in :func:`read_golden_arrays`.

    Raises:
        ShimError: a name that breaks the bundle's rules, or a golden file that is not golden data.
    """
    arrays = _golden_file(path, manifest, max_mb)
    _first_group(path, manifest, arrays)  # the checks and their messages
    try:
        return measure.golden_feeds(arrays)
    except (ValueError, KeyError, IndexError) as exc:
        raise ShimError(f"{path}: unreadable bundle: {brief(exc, 200)}", EXIT_INTEGRITY) from None


def read_golden_arrays(path: str, manifest: dict[str, Any], max_mb: float | None = None) -> tuple[Feed, Feed]:
    """Golden inputs and outputs, after the manifest's names are checked (plain, listed, inside the bundle,
    no symlinks; see :mod:`bundle_files`); the file is read within :func:`measure.golden_limit` (``max_mb``).

    Raises:
        ShimError: a name that breaks the bundle's rules, or a golden file that is not golden data.
    """
    return _first_group(path, manifest, _golden_file(path, manifest, max_mb))


def _golden_file(path: str, manifest: dict[str, Any], max_mb: float | None) -> dict[str, np.ndarray]:
    try:
        golden = bundle_files.check_named(path, manifest)["golden"]
    except bundle_files.BundleFileError as exc:
        raise ShimError(str(exc), EXIT_INTEGRITY) from None
    try:
        return measure.read_golden_arrays(golden, max_mb)
    except (OSError, ValueError) as exc:  # bounded_npz.ArrayReadError is a ValueError: a bomb or a lying header
        raise ShimError(f"{path}: unreadable bundle: {brief(exc, 300)}", EXIT_INTEGRITY) from None


def _first_group(path: str, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Feed, Feed]:
    inputs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("inputs/")}
    outputs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("outputs/")}
    if not inputs or not outputs:
        name = bundle_files.field_name(manifest, "golden")
        raise ShimError(f"{path}: unreadable bundle: {os.path.basename(name)} holds no golden inputs and outputs",
                        EXIT_INTEGRITY)
    return inputs, outputs


def check_files(path: str, manifest: dict[str, Any]) -> int:
    """The manifest's names and every listed file's size and sha256; returns how many files were checked.

    Raises:
        ShimError: naming the field or the first file that is missing, outside the bundle or changed.
    """
    try:
        return bundle_files.check_bundle(path, manifest)
    except bundle_files.BundleFileError as exc:
        raise ShimError(str(exc), EXIT_INTEGRITY) from None


def activate(path: str, manifest: dict[str, Any], threads: int | None, trust_engine: bool = False) -> Runner:
    """Build and load the bundle's runner; runtime problems become one-line errors.

    ``trust_engine``: the user vouches for the bundle (``--trust-engine``), so a prebuilt native engine in it
    (TensorRT's ``model.plan``) may be loaded; otherwise the engine is built from the bundle's ONNX.
    """
    try:
        runner = open_runner(path, manifest, threads, trust_engine=trust_engine)
    except RunnerError as exc:
        raise ShimError(str(exc), EXIT_RUNTIME) from None
    except bundle_files.BundleFileError as exc:
        raise ShimError(str(exc), EXIT_INTEGRITY) from None
    try:
        return runner.activate()
    except RunnerError as exc:
        raise ShimError(str(exc), EXIT_RUNTIME) from None
    except Exception as exc:  # the runtime's own parse errors: the listed model file does not load
        raise ShimError(f"{manifest['model_file']} cannot be loaded by {runner.runtime}: "
                        f"{brief(exc, 200)}", EXIT_INTEGRITY) from None


def parity(runner: Runner, manifest: dict[str, Any], golden_in: list[Feed], golden_out: list[Feed]) -> dict[str, Any]:
    """Golden inputs (every sample, of every shape) through the runner, compared with the golden outputs
    and the manifest's tolerance."""
    actual = [runner.infer(feed) for feed in golden_in]
    recorded = manifest.get("parity") or {}
    tolerance = recorded.get("tolerance")
    names = sorted(golden_out[0]) if golden_out else []
    measured = {name: measure.compare_samples([o[name] for o in golden_out], [a[name] for a in actual],
                                              measure.parts_in((tolerance or {}).get(name)))
                for name in names if all(name in a for a in actual)}
    source = "manifest"
    if not tolerance:
        minimum = measure.DEFAULT_MIN_COSINE.get(str(manifest.get("precision")), 0.98)
        tolerance = {name: {"min_cosine": minimum} for name in names}
        source = "default"
    failures = measure.check_tolerance(measured, tolerance)
    shapes = len({tuple(np.shape(v) for v in feed.values()) for feed in golden_in})
    return {"measured": True, "samples": len(actual), "shapes": shapes, "outputs": measured, "tolerance": tolerance,
            "tolerance_source": source, "ok": not failures, "failures": failures}


def batch_feed(golden_in: Feed, manifest: dict[str, Any], batch: int | None) -> tuple[Feed, int]:
    """The timed feed: golden samples tiled to ``batch`` along the leading axis (or sample 0 as is).

    Raises:
        ShimError: ``batch`` differs from a fixed leading dimension of an input.
    """
    specs = {spec["name"]: spec for spec in manifest.get("inputs", [])}
    first = {name: arr[0] for name, arr in golden_in.items()}
    if batch is None:
        sizes = [a.shape[0] for a in first.values() if a.ndim]
        return first, int(sizes[0]) if sizes else 1
    feed = {}
    for name, stacked in golden_in.items():
        dims = specs.get(name, {}).get("shape") or [None]
        if isinstance(dims[0], int) and dims[0] != batch:
            raise ShimError(f"input {name!r} has a fixed batch of {dims[0]}; --batch {batch} cannot run", EXIT_USAGE)
        rows = np.concatenate(list(stacked), axis=0) if stacked[0].ndim else stacked
        reps = -(-batch // len(rows))
        feed[name] = np.ascontiguousarray(np.concatenate([rows] * reps, axis=0)[:batch])
    return feed, batch


def bundle_info(path: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Name, target, precision and sizes of the bundle (model files and every listed file)."""
    files = manifest.get("files", [])
    model_file = str(manifest["model_file"])
    with open(os.path.join(path, "manifest.json"), "rb") as fh:
        manifest_sha = hashlib.sha256(fh.read()).hexdigest()
    return {
        "name": manifest.get("name"), "target": manifest["target"], "precision": manifest.get("precision"),
        "path": os.path.abspath(path), "model_file": model_file,
        "model_bytes": sum(int(f["size"]) for f in files if _is_model_file(str(f["path"]), manifest)),
        "bundle_bytes": sum(int(f["size"]) for f in files), "manifest_sha256": manifest_sha,
    }


def _is_model_file(path: str, manifest: dict[str, Any]) -> bool:
    """Written by the target (all of openvino's xml+bin, an mlpackage's members), as the manifest's
    ``model_bytes`` counts them: not golden data, ``layers.json`` or the shim."""
    return path not in (manifest.get("golden", "golden.npz"), "layers.json") and not path.startswith("edgec_shim/")


def device_info(runner: Runner, label: str | None) -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU architecture, Python, numpy and the runtime's version."""
    version = getattr(runner, "runtime_version", None)
    if version is None:
        try:
            import importlib.metadata

            version = importlib.metadata.version(runner.runtime)
        except (importlib.metadata.PackageNotFoundError, ValueError):  # not installed as a distribution, or no name
            version = None
    return {"label": label or platform.node() or "unknown", "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "runtime": runner.runtime, "runtime_version": version}


def evaluate(runner: Runner, manifest: dict[str, Any], golden_in: Feed, data_path: str, output: str | None) -> dict[str, Any]:
    """Top-1 accuracy on ``data_path`` (a .npz of model inputs plus an integer ``labels`` array).

    Raises:
        ShimError: missing file, inputs or labels, or an output that is not class scores.
    """
    inputs, labels = _eval_arrays(data_path, manifest, golden_in)
    name = output or manifest["outputs"][0]["name"]
    fixed = manifest["inputs"][0]["shape"][0] if manifest.get("inputs") and manifest["inputs"][0]["shape"] else None
    chunk = fixed if isinstance(fixed, int) and fixed > 0 else EVAL_CHUNK
    scores = []
    for start in range(0, len(labels), chunk):
        feed = {k: _pad(v[start:start + chunk], chunk if isinstance(fixed, int) else 0) for k, v in inputs.items()}
        result = runner.infer(feed)
        if name not in result:
            raise ShimError(f"--eval output {name!r} is not an output of the model ({', '.join(result)})", EXIT_USAGE)
        got = np.asarray(result[name])
        scores.append(got.reshape(len(got), -1)[: min(chunk, len(labels) - start)])
    logits = np.concatenate(scores)
    if logits.dtype.kind != "f" or logits.shape[1] < 2:
        raise ShimError(f"--eval needs class scores from output {name!r}, got shape {logits.shape}", EXIT_USAGE)
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    return {"data": os.path.basename(data_path), "samples": int(len(labels)), "output": name,
            "metric": "top1_accuracy", "value": measure.sig6(top1)}


def _eval_arrays(data_path: str, manifest: dict[str, Any], golden_in: Feed) -> tuple[Feed, np.ndarray]:
    try:
        limit = max(EVAL_FLOOR_MB * bounded_npz.MIB, measure.GOLDEN_RATIO * os.stat(data_path).st_size)
        arrays = bounded_npz.read_npz(data_path, bounded_npz.Budget(limit), os.path.basename(data_path))
    except (OSError, ValueError) as exc:
        raise ShimError(f"--eval {data_path}: cannot read: {brief(exc, 200)}", EXIT_USAGE) from None
    labels = arrays.pop("labels", None)
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ShimError(f"--eval {data_path} needs a 1-D integer 'labels' array", EXIT_USAGE)
    names = [spec["name"] for spec in manifest.get("inputs", [])]
    if len(names) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ShimError(f"--eval {data_path} lacks input arrays {missing} (has {sorted(arrays)})", EXIT_USAGE)
    feeds = {}
    for spec in manifest["inputs"]:
        arr = arrays[spec["name"]]
        if len(arr) != len(labels):
            raise ShimError(f"--eval {data_path}: {spec['name']} has {len(arr)} samples but {len(labels)} labels", EXIT_USAGE)
        feeds[spec["name"]] = _adapt(arr, spec, golden_in.get(spec["name"]))
        golden = golden_in.get(spec["name"])
        if golden is not None and feeds[spec["name"]].shape[1:] != golden.shape[2:] and \
                not _fits(feeds[spec["name"]].shape, spec.get("shape")):
            raise ShimError(f"--eval {data_path}: input {spec['name']!r} has samples of shape {arr.shape[1:]}; "
                            f"the model takes {tuple(spec.get('shape') or ())}", EXIT_USAGE)
    return feeds, labels.astype(np.int64)


def _fits(shape: tuple[int, ...], dims: list[Any] | None) -> bool:
    """Whether a batch of this shape fits the spec's dims (symbolic dims match anything)."""
    if dims is None or len(shape) != len(dims):
        return False
    return all(not isinstance(d, int) or d == s for d, s in zip(dims[1:], shape[1:]))


def _adapt(arr: np.ndarray, spec: dict[str, Any], golden: np.ndarray | None) -> np.ndarray:
    """Source-layout eval data -> the bundle's layout (NCHW -> NHWC when the spec says so) and dtype."""
    if str(spec.get("layout", "")).upper() == "NHWC" and arr.ndim == 4 and golden is not None \
            and golden.shape[-1] != arr.shape[-1] and golden.shape[-1] == arr.shape[1]:
        arr = arr.transpose(0, 2, 3, 1)
    if golden is not None and golden.dtype.kind == arr.dtype.kind:
        arr = arr.astype(golden.dtype, copy=False)
    return np.ascontiguousarray(arr)


def _pad(arr: np.ndarray, size: int) -> np.ndarray:
    if size and len(arr) < size:
        return np.concatenate([arr, np.repeat(arr[-1:], size - len(arr), axis=0)])
    return arr


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Load, check parity, time and optionally evaluate one bundle; returns the JSON result."""
    manifest, golden_in, golden_out = load_bundle(args.bundle, args.golden_limit_mb)
    baseline_rss = measure.peak_rss_bytes()
    runner = activate(args.bundle, manifest, args.threads, args.trust_engine)
    try:
        feed, batch = batch_feed(golden_in, manifest, args.batch)
        start = time.perf_counter()
        runner.infer(feed)
        first_ms = (time.perf_counter() - start) * 1000.0
        checked = parity(runner, manifest, *read_golden_feeds(args.bundle, manifest, args.golden_limit_mb)) if args.parity else {"measured": False}
        rounds = measure.time_calls(lambda: runner.infer(feed), args.runs, args.warmup, args.repeats)
        peak_rss = measure.peak_rss_bytes()
        evaluation = evaluate(runner, manifest, golden_in, args.eval, args.eval_output) if args.eval else None
        result = {
            "schema_version": SCHEMA_VERSION, "kind": RESULT_KIND,
            "bundle": bundle_info(args.bundle, manifest), "device": device_info(runner, args.device),
            "config": {"runs": args.runs, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
                       "batch": batch},
            "load_s": measure.sig6(runner.load_seconds), "first_infer_ms": measure.sig6(first_ms),
            "memory": {"baseline_peak_rss_bytes": baseline_rss, "peak_rss_bytes": peak_rss},
            "parity": checked, "eval": evaluation,
        }
        result.update(measure.summarize(measure.Timing(tuple(tuple(r) for r in rounds), batch)))
        return result
    finally:
        runner.deactivate()


def verify(args: argparse.Namespace) -> dict[str, Any]:
    """File hashes, then golden parity within the manifest's tolerance."""
    manifest = read_manifest(args.bundle)
    files = check_files(args.bundle, manifest)
    golden_in, golden_out = read_golden_feeds(args.bundle, manifest, args.golden_limit_mb)
    runner = activate(args.bundle, manifest, args.threads, args.trust_engine)
    try:
        checked = parity(runner, manifest, golden_in, golden_out)
    finally:
        runner.deactivate()
    checked["files_checked"] = files
    return checked


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgec_shim", description="Benchmark or verify an edgec bundle with numpy and its runtime only.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("bench", help="load time, latency percentiles, throughput, peak memory, parity; prints JSON")
    b.add_argument("bundle")
    b.add_argument("--runs", type=positive_int, default=100, help="timed inferences; default 100")
    b.add_argument("--warmup", type=non_negative_int, default=10, help="untimed inferences first; default 10")
    b.add_argument("--repeats", type=positive_int, default=3, help="rounds the timed runs are split into (noise); default 3")
    b.add_argument("--threads", type=positive_int, default=None, help="runtime threads; default: the runtime decides")
    b.add_argument("--batch", type=positive_int, default=None, help="batch size of the timed feed; default: as in golden.npz")
    b.add_argument("--eval", help=".npz of model inputs plus an integer 'labels' array: reports top-1 accuracy")
    b.add_argument("--eval-output", help="output holding the class scores; default the first output")
    b.add_argument("--device", help="label for this device in reports; default the host name")
    b.add_argument("--no-parity", dest="parity", action="store_false", help="skip the golden-output check")
    b.add_argument("--out", help="also write the JSON to this file")
    v = sub.add_parser("verify", help="check file hashes and golden parity against the manifest's tolerance")
    v.add_argument("bundle")
    v.add_argument("--threads", type=positive_int, default=None)
    v.add_argument("--json", action="store_true", help="print the measured parity as JSON")
    for command in (b, v):
        command.add_argument("--golden-limit-mb", type=positive_mb, default=None,
                             help=f"most MiB the golden file may decode to; default ${measure.GOLDEN_ENV}, else "
                                  f"{measure.GOLDEN_FLOOR_MB} or {measure.GOLDEN_RATIO}x the file, whichever is more")
        command.add_argument("--trust-engine", action="store_true",
                             help="load the prebuilt engine the bundle carries (TensorRT's model.plan) when it matches "
                                  "this GPU; an engine is native code: only for bundles you trust. Default: build "
                                  "the engine from the bundle's ONNX")
    return parser


def positive_mb(text: str) -> float:
    """argparse type: a finite number of MiB > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB, got {text!r}") from None
    if not 0 < value < 1 << 30:
        raise argparse.ArgumentTypeError(f"expected a number of MiB > 0, got {text}")
    return value




def dumps(data: dict[str, Any]) -> str:
    """Canonical JSON (sorted keys, two-space indent)."""
    return json.dumps(data, sort_keys=True, indent=2)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m edgec_shim``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            text = dumps(bench(args))
            if args.out:
                with open(args.out, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
            print(text)
            return 0
        report = verify(args)
    except ShimError as exc:
        print(f"edgec_shim: error: {brief(exc, None)}", file=sys.stderr)
        return exc.code
    except RunnerError as exc:
        print(f"edgec_shim: runtime error: {brief(exc, None)}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as exc:  # a runtime's unknown error on this model, or a bug: keep the traceback, end with one line
        import traceback

        traceback.print_exc()
        print(f"edgec_shim: internal error: {type(exc).__name__}: {brief(exc, 300)}", file=sys.stderr)
        return 1
    if args.json:
        print(dumps(report))
    if not report["ok"]:
        print(f"edgec_shim: parity check failed for {args.bundle}: {'; '.join(report['failures'])}", file=sys.stderr)
        return EXIT_PARITY
    if not args.json:
        worst = min((m["cosine"] for m in report["outputs"].values()), default=1.0)
        print(f"ok {args.bundle}: {report['files_checked']} files match, parity within tolerance (min cosine {worst:.6f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
