"""One matrix build versus separate builds: onnx, openvino and tflite at fp32 and int8 on the demo CNN.

``python -m edgec.benchmarks.matrix_speed [--targets onnx,openvino,tflite] [--precisions fp32,int8] [--jobs 2]
[--epochs 1] [--out DIR] [--json FILE]``

The model is :mod:`~edgec.benchmarks.zoo.digits_wide` (the demo's 1.15M-parameter CNN at 32x32), trained
here (one epoch by default: build time does not depend on accuracy) and saved as a ``.pt2``, with 256 digits
as calibration data. The same cells are built three ways, each from an empty stage cache (a fresh
``EDGEC_CACHE_DIR``) into an empty folder, each build a process as a user runs it, timed from start to exit:

- **separate**: one ``edgec build SOURCE --target T --precision P --calib ...`` per cell, one after the other
  (the cache fills as they go, so later calls reuse the import and passes of earlier ones);
- **matrix**: one ``edgec build SOURCE --target a,b,c --precision fp32,int8 --calib ...``;
- **jobs**: the same with ``--jobs N``.

It prints the wall and CPU seconds of each, the ratios, and whether the three ways wrote the same bundles
(every file byte-identical, the runtime shim that edgec copies from its own source left out). Wall time is the measure; on a shared machine other processes stretch it, so
the CPU seconds of the processes (user + system, all threads) and the load average are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TARGETS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "int8")
SHIM = "edgec_shim"


@dataclass(frozen=True)
class Run:
    """One way of building the cells: wall and CPU seconds, the bundles written, and whether they match the
    first way's."""

    way: str
    wall_s: float
    cpu_s: float
    bundles: int
    same_as_separate: bool | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.matrix_speed",
                                     description="separate edgec build calls vs one matrix call vs --jobs N")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated; default {','.join(TARGETS)}")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated; default {','.join(PRECISIONS)}")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the third way; default 2")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the CNN; default 1")
    parser.add_argument("--out", type=Path, help="keep the model, caches and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON")
    args = parser.parse_args(argv)
    targets, precisions = _split(args.targets), _split(args.precisions)
    if args.jobs < 2 or not targets or not precisions:
        parser.error("--jobs must be at least 2, and --targets and --precisions not empty")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-matrix-speed-") as tmp:
        runs = run(args.out or Path(tmp), targets, precisions, args.jobs, args.epochs)
    print(f"\n{environment()}\n{format_table(runs, len(targets) * len(precisions))}\n\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        document = {"environment": environment(), "targets": targets, "precisions": precisions,
                    "runs": [asdict(r) for r in runs], "ratios": ratios(runs)}
        args.json.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0 if all(r.same_as_separate is not False for r in runs) else 1


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(work: Path, targets: list[str], precisions: list[str], jobs: int, epochs: int) -> list[Run]:
    """Train the CNN, then build the cells the three ways (see the module docstring)."""
    source, calib = prepare(work, epochs)
    common = ["--calib", str(calib), "-q"]
    separate = [["--target", t, "--precision", p] for t in targets for p in precisions]
    matrix = [["--target", ",".join(targets), "--precision", ",".join(precisions)]]
    ways = {"separate": separate, "matrix": matrix, f"jobs {jobs}": [matrix[0] + ["--jobs", str(jobs)]]}
    runs: list[Run] = []
    for way, calls in ways.items():
        out = work / way.replace(" ", "-")
        wall, cpu = build(source, common, calls, work / f"cache-{out.name}", out)
        bundles = sorted(p for p in out.iterdir() if p.is_dir())
        same = None if not runs else same_bundles(work / "separate", out)
        runs.append(Run(way, wall, cpu, len(bundles), same))
        print(f"{way}: {wall:.1f}s wall, {cpu:.1f}s cpu, {len(bundles)} bundles")
    return runs


def prepare(work: Path, epochs: int) -> tuple[str, Path]:
    """Train digits_wide and save it as ``digits-wide.pt2`` with ``calib.npz``; returns (source, calibration)."""
    from edgec.benchmarks.zoo import digits, digits_wide

    work.mkdir(parents=True, exist_ok=True)
    print(f"training digits_wide ({epochs} epoch{'' if epochs == 1 else 's'})")
    data = digits_wide.load_data()
    pt2 = digits_wide.export_pt2(digits_wide.train(data, epochs), work / "digits-wide.pt2")
    calib, _ = digits.save_splits(data, work)
    return str(pt2), calib


def build(source: str, common: list[str], calls: list[list[str]], cache: Path, out: Path) -> tuple[float, float]:
    """Run ``edgec build SOURCE CALL... COMMON --out OUT`` for each call, in sequence, with ``EDGEC_CACHE_DIR``
    set to the (new, empty) ``cache``; returns the wall and CPU seconds of them all.

    Raises:
        RuntimeError: a build failed (its stderr is in the message).
    """
    env = {**os.environ, "EDGEC_CACHE_DIR": str(cache)}
    before, start = _children_cpu(), time.perf_counter()
    for call in calls:
        command = [sys.executable, "-m", "edgec.compiler", "build", source, *call, *common, "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"edgec build {' '.join(call)} failed ({done.returncode}): {done.stdout}{done.stderr}".strip())
    return time.perf_counter() - start, _children_cpu() - before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def same_bundles(a: Path, b: Path) -> bool:
    """Whether two output folders hold the same bundles with the same files, byte for byte, leaving out the
    runtime shim (``edgec_shim/``, copied from edgec's own source, so an edit of edgec between the ways does
    not count) and its entries in the manifests."""
    files_a, files_b = _bundle_files(a), _bundle_files(b)
    return files_a == files_b and all(_content(a / p) == _content(b / p) for p in files_a)


def _bundle_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and SHIM not in p.parts)


def _content(path: Path) -> bytes:
    if path.name != "manifest.json":
        return path.read_bytes()
    manifest = json.loads(path.read_text())
    manifest["files"] = [f for f in manifest["files"] if not f["path"].startswith(f"{SHIM}/")]
    return json.dumps(manifest, sort_keys=True).encode()


def ratios(runs: list[Run]) -> dict[str, float]:
    """Wall time of the separate builds over each other way's (above 1: that way is faster)."""
    separate = runs[0].wall_s
    return {r.way: round(separate / r.wall_s, 2) for r in runs[1:]}


def environment() -> str:
    """Host CPU count, load and Python."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"host: {os.cpu_count()} logical CPUs, load average {load}; python {platform.python_version()}"


def format_table(runs: list[Run], cells: int) -> str:
    """A Markdown table: wall (and CPU) seconds per way, the speed-up over separate builds, same bundles."""
    lines = [f"| {cells} cells | wall | cpu | separate / this | bundles | same bundles as separate |",
             "|---|---:|---:|---:|---:|---|"]
    for r in runs:
        same = "-" if r.same_as_separate is None else ("yes" if r.same_as_separate else "NO")
        lines.append(f"| {r.way} | {r.wall_s:.1f} s | {r.cpu_s:.1f} s | {runs[0].wall_s / r.wall_s:.2f}x | {r.bundles} | {same} |")
    return "\n".join(lines + ["", "each way starts from an empty stage cache; cpu: user + system seconds of its processes"])


if __name__ == "__main__":
    sys.exit(main())
