"""The demo (``make demo``): why compiling for a target and a precision matters, on a model where it shows.

It trains :mod:`~edgec.benchmarks.zoo.digits_wide` (a 1.15 M-parameter CNN on scikit-learn's digits,
upsampled to 32x32; about a millisecond per image on one x86 core), builds it for every installed target at
fp32 and int8, verifies each bundle and prints one table: size, parity (cosine to the fp32 reference),
held-out accuracy, batch-1 latency on one thread and speedup over the same target's fp32 bundle. Bundles
this host cannot execute (Core ML off macOS; TensorRT without an NVIDIA GPU) get a row that says why.
It ends with the commands to verify, bench, inspect and publish what it built.

What it builds is the repository's recipe ``edgec.yaml`` (targets, precisions, per-target options, gates)
for the model it trained, as one matrix build (:mod:`edgec.compiler.matrix`: the model imported once, the
calibration data loaded and the FP32 reference computed once for every cell); ``--prepare-only`` trains and
stops, and then ``edgec build -f edgec.yaml`` builds the same. Targets whose toolchain is not installed get
rows saying what to install. The results are also written to ``OUT/demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgec.benchmarks.zoo import digits, digits_wide
from edgec.runtime_shims.measure import time_calls

if TYPE_CHECKING:
    from edgec.compiler.config import Precision

PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
THREADS = 1
"""Runtime threads for the accuracy and latency runs: one, so targets compare kernel for kernel. Each bundle's
runner sizes its runtime's thread pool before loading the model (ExecuTorch's pool is process-wide; see
:mod:`edgec.runtime_shims.executorch`, rule 5)."""
RECIPE = Path(__file__).resolve().parents[1] / "edgec.yaml"
"""The demo's recipe (in a clone of the repository): what it builds, for the model it trains (its options
include ExecuTorch's ``max_dim: {batch: 1}``: memory planned for one image per call, not the exported batch
bound)."""
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
"""CPU features with int8 dot-product instructions (x86 VNNI/AMX, ARM dot product/i8mm), read from /proc/cpuinfo."""


@dataclass(frozen=True)
class Row:
    """One bundle of the table; None where a number could not be measured on this host (``note`` says why)."""

    target: str
    precision: str
    bundle: str | None = None
    size: int | None = None
    cosine: float | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    runtime: str = ""
    note: str = ""
    exit_code: int = 0
    """The exit code of a build that failed (not for a target that is not installed)."""


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (0, or the family code of the first error, printed as one line)."""
    args = _parser().parse_args(argv)
    from edgec.core.errors import EdgecError

    start = time.perf_counter()
    try:
        if args.prepare_only:
            return prepare_only(args.out, args.epochs)
        rows = run(args.out, args.runs, _target_list(args.targets), args.epochs, args.recipe)
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    print()
    print(f"batch 1, {THREADS} runtime thread, latency = median of {args.runs} timed runs; {cpu_line()}")
    print(format_table(rows))
    for line in notes(rows):
        print(line)
    (args.out / "demo.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(f"\ndemo took {time.perf_counter() - start:.0f}s; bundles are in {(args.out / 'bundles').resolve()}")
    print("\n".join(what_next(args.out, rows)))
    return next((r.exit_code for r in rows if r.exit_code), 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where the model, data and bundles go")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 inferences per bundle (default 200)")
    parser.add_argument("--targets", default=None, help="comma-separated targets (default: every registered target)")
    parser.add_argument("--epochs", type=int, default=digits_wide.EPOCHS,
                        help=f"training epochs (default {digits_wide.EPOCHS}; fewer is quicker and less accurate)")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help=f"what to build (default {RECIPE.name} of the repository)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="train and write OUT/digits-wide.pt2, calib.npz and eval.npz, then stop "
                             "(edgec build -f edgec.yaml builds them)")
    return parser


def prepare_only(out: Path, epochs: int) -> int:
    """Train the model and write what the recipe builds from; returns 0."""
    _require_training_packages()
    assets = digits_wide.prepare(out, epochs=epochs)
    print(f"wrote {assets.pt2}, {assets.calib} and {assets.eval}; next: edgec build -f {RECIPE.name}")
    return 0


def _target_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run(out: Path, runs: int, targets: list[str] | None = None, epochs: int = digits_wide.EPOCHS,
        recipe: Path = RECIPE) -> list[Row]:
    """Train, export, build, verify and measure; returns one row per cell of the recipe (a failed or not
    installed one says why in its note; a failed one has its exit code).

    Raises:
        ConfigError: a name in ``targets`` is not a registered target, ``runs``/``epochs`` is below 1, or the
            recipe is missing or invalid.
        MissingDependencyError: torch or scikit-learn is not installed.
        EdgecError: a verification failed (its own family and exit code).
    """
    from edgec.core.errors import ConfigError

    if runs < 1 or epochs < 1:
        raise ConfigError(f"--runs and --epochs must be at least 1 (got {runs} and {epochs})")
    select_targets(targets)
    _require_training_packages()
    start = time.perf_counter()
    assets = digits_wide.prepare(out, epochs=epochs)
    print(f"trained the {digits_wide.SIZE}x{digits_wide.SIZE} digits CNN ({epochs} epochs) on {len(assets.data.y_train)} "
          f"images in {time.perf_counter() - start:.1f}s; held-out set: {len(assets.data.y_test)} images")
    rows: list[Row] = []
    for cell in build_recipe(recipe, assets, out / "bundles", targets):
        if cell.bundle is None:
            missing = cell.family == "missing dependency"
            rows.append(Row(cell.target, cell.precision, note=f"not built: {cell.error}",
                            exit_code=0 if missing else cell.exit_code))
            continue
        verify(Path(cell.bundle))
        rows.append(measure(Path(cell.bundle), assets.data, runs))
    return sorted(with_speedups(rows), key=lambda r: r.latency_ms is None)  # measured rows first, order kept


def _require_training_packages() -> None:
    """torch trains the model and scikit-learn holds the digits; without them: exit 3 with what to install."""
    from edgec.core.errors import MissingDependencyError, require

    require("torch", "torch", "the demo's training")
    try:
        require("sklearn", "coreml", "the demo's data set (scikit-learn's digits)")
    except MissingDependencyError as exc:
        exc.hint = "pip install scikit-learn"
        raise


def select_targets(names: list[str] | None) -> list[tuple[str, str | None]]:
    """Targets to build, each with None or why it cannot be built here (its toolchain is not installed).

    Raises:
        ConfigError: a name is not a registered target.
    """
    from edgec.core.errors import ConfigError, MissingDependencyError
    from edgec.targets.base import TARGETS

    known = [cls.name for cls in TARGETS.all()]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ConfigError(f"unknown target(s) {', '.join(unknown)} for --targets (expected some of: {', '.join(known)})")
    chosen: list[tuple[str, str | None]] = []
    for name in names or known:
        try:
            TARGETS.get(name)().check_available()
            chosen.append((name, None))
        except MissingDependencyError as exc:
            chosen.append((name, f"not built: {exc.message} (pip install 'edgec[{exc.extra}]')"))
    return chosen


def build_recipe(path: Path, assets: digits.DigitsAssets, out: Path, targets: list[str] | None) -> list[Any]:
    """The recipe's cells (those of ``targets``, when given) for the trained model, data and ``out`` folder,
    as one matrix build, printing the equivalent command; returns its :class:`~edgec.compiler.matrix.CellResult` s.

    Raises:
        ConfigError: the recipe is missing or invalid.
    """
    from edgec.compiler import matrix, recipe
    from edgec.compiler.progress import Reporter

    spec = recipe.read(path)
    own_out = spec.out if spec.out.is_absolute() else path.parent / spec.out
    model = spec.models[0]
    calibration = model.calibration.model_copy(update={"data": assets.calib.resolve()}) if model.calibration else None
    evaluation = model.eval.model_copy(update={"data": assets.eval.resolve()}) if model.eval else None
    model = model.model_copy(update={"source": str(assets.pt2.resolve()), "calibration": calibration, "eval": evaluation})
    spec = spec.model_copy(update={"out": out.resolve(), "models": [model], "force": True})
    built = recipe.configs(path, spec, targets=targets or ())
    moved = "" if out.resolve() == own_out.resolve() else f"    # with the model, data and bundles in {out.parent}"
    print(f"$ edgec build -f {path} --force{moved}")
    start, log = time.perf_counter(), Reporter()
    try:
        cells = matrix.build_matrix([list(m) for m in built.models], log)
    finally:
        log.close()
    print(f"  {sum(c.bundle is not None for c in cells)} of {len(cells)} cells built in {time.perf_counter() - start:.1f}s")
    return cells


def verify(bundle: Path) -> None:
    """``edgec verify`` one bundle, printing the command line.

    Raises:
        EdgecError: the bundle does not verify.
    """
    from edgec.compiler.verify import verify_bundle

    print(f"$ edgec verify {bundle}")
    report = verify_bundle(bundle)
    print(f"  {report.files_checked} files checked, golden parity "
          f"{'measured' if report.measured else 'not measurable on this host'}")


def measure(bundle: Path, data: digits.DigitsData, runs: int) -> Row:
    """Size, parity, held-out accuracy and batch-1 latency of one bundle (None where this host cannot run it)."""
    from edgec.core.bundle import load_manifest
    from edgec.targets.base import TARGETS

    manifest = load_manifest(bundle)
    target = TARGETS.get(manifest.target)()
    details = manifest.target_details
    cosines = [m["cosine"] for m in manifest.parity.get("outputs", {}).values() if "cosine" in m]
    row = Row(manifest.target, manifest.precision, bundle.name, manifest.model_bytes(), min(cosines, default=None),
              runtime=details.get("parity_runtime") or details.get("runtime", manifest.target))
    if not manifest.parity.get("measured", True):  # the build, on this host, could not run it
        return replace(row, runtime="-", note=_not_run_reason(manifest.target))
    accuracy, latency = _run_bundle(target, bundle, manifest, data, runs)
    row = replace(row, accuracy=accuracy, latency_ms=latency)
    if details.get("engine") == "build on device":
        return replace(row, latency_ms=None, note=f"no TensorRT engine here ({details.get('engine_reason', 'no GPU')}); "
                                                   "its latency needs an NVIDIA GPU")
    return row


def _not_run_reason(target: str) -> str:
    if target == "coreml":
        return "not run: Core ML models execute only on macOS/iOS; 'edgec verify' it on a Mac"
    return "not run: this host cannot execute these bundles"


def _run_bundle(target: Any, bundle: Path, manifest: Any, data: digits.DigitsData, runs: int) -> tuple[float, float]:
    """Held-out accuracy (one image per call) and the median batch-1 latency in milliseconds, on one thread."""
    spec = manifest.input_specs()[0]
    with target.runner(bundle, manifest.model_file, threads=THREADS) as runner:
        logits = [next(iter(runner.infer({spec.name: adapt(x[None], spec)}).values())) for x in data.x_test]
        feed = {spec.name: adapt(data.x_test[:1], spec)}
        rounds = time_calls(lambda: runner.infer(feed), runs, warmup=20, repeats=1)
    scores = np.concatenate([np.asarray(v).reshape(1, -1) for v in logits])
    return digits.accuracy(scores, data.y_test), statistics.median(rounds[0]) * 1000


def adapt(x: np.ndarray, spec: Any) -> np.ndarray:
    """An NCHW float batch in the layout and dtype the bundle declares (NHWC for TFLite-style bundles)."""
    if spec.extra.get("layout", "").upper() == "NHWC" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.dtype(spec.dtype) if np.dtype(spec.dtype).kind == "f" else np.float32)


def with_speedups(rows: list[Row]) -> list[Row]:
    """Each row with its speedup over the fp32 bundle of the same target (where both latencies were measured)."""
    fp32 = {r.target: r.latency_ms for r in rows if r.precision == "fp32" and r.latency_ms}
    return [replace(r, speedup=fp32[r.target] / r.latency_ms) if r.latency_ms and r.target in fp32 else r
            for r in rows]


def format_table(rows: list[Row]) -> str:
    """A fixed-width table; '-' where a number was not measured on this host."""
    fp32_size = {r.target: r.size for r in rows if r.precision == "fp32" and r.size}
    head = (f"{'target':10} {'precision':9} {'size':>9} {'vs fp32':>7} {'parity cos':>10} {'accuracy':>8} "
            f"{'latency ms':>10} {'speedup':>7}  runtime / note")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.size / fp32_size[r.target] if r.size and r.target in fp32_size else None
        cells = (_fmt(r.size, lambda v: f"{v / 1e6:.2f} MB"), _fmt(ratio, "{:.2f}x"), _fmt(r.cosine, "{:.6f}"),
                 _fmt(r.accuracy, lambda v: f"{100 * v:.2f}%"), _fmt(r.latency_ms, "{:.3f}"), _fmt(r.speedup, "{:.2f}x"))
        tail = "; ".join(t for t in (r.runtime, r.note) if t and t != "-") or "-"
        lines.append(f"{r.target:10} {r.precision:9} {cells[0]:>9} {cells[1]:>7} {cells[2]:>10} {cells[3]:>8} "
                     f"{cells[4]:>10} {cells[5]:>7}  {tail}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: Any) -> str:
    if value is None:
        return "-"
    return spec(value) if callable(spec) else spec.format(value)


def notes(rows: list[Row]) -> list[str]:
    """Lines under the table: where INT8 did not pay off, and what the columns compare."""
    lines = ["size: the model files; parity: cosine of the outputs to the fp32 reference on the golden inputs; "
             "accuracy: on the held-out images, not seen in training or calibration"]
    slower = [r.target for r in rows if r.precision == "int8" and r.speedup is not None and r.speedup < 1.0]
    if slower:
        lines.append(f"int8 is slower than fp32 on {', '.join(slower)} here: that runtime's int8 kernels do not beat "
                     "its fp32 ones on this CPU (int8 needs dot-product instructions and enough work per layer "
                     "to pay for quantizing activations)")
    return lines


def cpu_line() -> str:
    """The CPU model, core count and its int8 dot-product features (Linux: from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"CPU {model}, {os.cpu_count()} cores"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags.update(value.split())
    features = [f for f in INT8_CPU_FLAGS if f in flags]
    return f"CPU {model}, {os.cpu_count()} cores, int8 dot-product instructions: {', '.join(features) or 'none found'}"


def what_next(out: Path, rows: list[Row]) -> list[str]:
    """The commands to verify, bench, inspect and publish the bundles just built."""
    bundles = out / "bundles"
    int8 = next((r.bundle for r in rows if r.bundle and r.precision == "int8" and r.latency_ms is not None), None)
    example = bundles / (int8 or "digits-wide-onnx-int8")
    return [
        "\nwhat next:",
        f"  edgec verify {bundles}/*    # re-check every file hash and the golden parity",
        f"  edgec bench {bundles}/* --eval {out}/eval.npz --out {out}/report    # latency, memory, accuracy; report.html",
        f"  edgec inspect {example}    # inputs, ops, MACs, size, parity",
        f"  edgec keys init --keys {out}/keys && edgec publish {example} --store {out}/store --channel stable "
        f"--keys {out}/keys    # a signed release in a local store",
    ]


if __name__ == "__main__":
    sys.exit(main())
