"""The demo (``make demo``): train the digits CNN, build it for every available target at fp32 and int8,
verify each bundle, and print a table of size, parity, held-out accuracy and latency.

Each build is what ``edgec build`` runs; the equivalent command lines are printed as they run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.zoo import digits
from edgec.runtime_shims.measure import time_calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where the model, data and bundles go")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 inferences per bundle")
    args = parser.parse_args(argv)
    from edgec.compiler.errors import EdgecError

    try:
        rows = run(args.out, args.runs)
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    print()
    print(format_table(rows))
    print(f"\nbundles are in {(args.out / 'bundles').resolve()}")
    return 0


def run(out: Path, runs: int) -> list[dict[str, Any]]:
    """Train, export, build, verify and measure; returns one row per bundle."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from edgec.compiler.verify import verify_bundle

    start = time.perf_counter()
    assets = digits.prepare(out)
    data, pt2, calib = assets.data, assets.pt2, assets.calib
    print(f"trained the digits CNN on {len(data.y_train)} images in {time.perf_counter() - start:.1f}s; "
          f"held-out set: {len(data.y_test)} images")
    rows = []
    for target, precisions in available_targets():
        for precision in precisions:
            print(f"$ edgec build {pt2} --target {target} --precision {precision} --calib {calib} --out {out / 'bundles'} --force")
            config = BuildConfig(source=str(pt2), target=target, precision=precision, calib=calib,
                                 out=out / "bundles", force=True)
            outcome = build(config)
            print(f"$ edgec verify {outcome.bundle_dir}")
            verify_bundle(outcome.bundle_dir)
            rows.append(measure(outcome.bundle_dir, data, runs))
    return rows


def available_targets() -> list[tuple[str, list[str]]]:
    """Targets whose toolchain is installed here, with the demo precisions each offers."""
    from edgec.compiler.errors import MissingDependencyError
    from edgec.targets.base import TARGETS

    found = []
    for cls in TARGETS.all():
        try:
            cls().check_available()
        except MissingDependencyError as exc:
            print(f"skipping target {cls.name}: {exc.one_line()}")
            continue
        found.append((cls.name, [p for p in ("fp32", "int8") if p in cls.precisions]))
    return found


def measure(bundle: Path, data: digits.DigitsData, runs: int) -> dict[str, Any]:
    """Size, parity, held-out accuracy and batch-1 latency of one bundle (None where this host cannot run it)."""
    from edgec.compiler.bundle import load_manifest
    from edgec.targets.base import TARGETS

    manifest = load_manifest(bundle)
    target = TARGETS.get(manifest.target)()
    row: dict[str, Any] = {
        "target": manifest.target, "precision": manifest.precision, "bundle": bundle.name,
        "size": manifest.model_bytes(),
        "cosine": min((m["cosine"] for m in manifest.parity.get("outputs", {}).values()), default=None),
        "accuracy": None, "latency_ms": None,
        "runtime": manifest.target_details.get("parity_runtime") or manifest.target_details.get("runtime", manifest.target),
    }
    if not target.measures_parity():
        row["runtime"] = "not runnable on this host"
        return row
    spec = manifest.input_specs()[0]
    with target.runner(bundle, manifest.model_file, threads=1) as runner:
        logits = [next(iter(runner.infer({spec.name: adapt(x[None], spec)}).values())) for x in data.x_test]
        feed = {spec.name: adapt(data.x_test[:1], spec)}
        times = time_calls(lambda: runner.infer(feed), runs, warmup=10, repeats=1)[0]
    row["accuracy"] = digits.accuracy(np.concatenate([np.asarray(v).reshape(1, -1) for v in logits]), data.y_test)
    row["latency_ms"] = statistics.median(times) * 1000
    return row


def adapt(x: np.ndarray, spec: Any) -> np.ndarray:
    """An NCHW float batch in the layout and dtype the bundle declares (NHWC for TFLite-style bundles)."""
    if spec.extra.get("layout", "").upper() == "NHWC" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.dtype(spec.dtype) if np.dtype(spec.dtype).kind == "f" else np.float32)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table; '-' where a number was not measured on this host."""
    head = f"{'target':10} {'precision':9} {'size (bytes)':>12} {'parity cos':>11} {'accuracy':>9} {'latency ms':>11}  {'bundle':24} runtime"
    lines = [head, "-" * len(head)]
    for r in rows:
        cos = f"{r['cosine']:.6f}" if r["cosine"] is not None else "-"
        acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        lat = f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "-"
        lines.append(f"{r['target']:10} {r['precision']:9} {r['size']:>12,} {cos:>11} {acc:>9} {lat:>11}  {r['bundle']:24} {r['runtime']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
