"""How fast is an unchanged rebuild? Cold build versus rebuild from the stage cache, per target.

``python -m edgec.benchmarks.rebuild_speed [--targets onnx,openvino,tflite,coreml] [--repeats N] [--epochs E]
[--out DIR] [--json FILE]``

The source is :mod:`~edgec.benchmarks.zoo.digits_wide` (the demo's 1.15M-parameter CNN at 32x32) as a
PyTorch factory, ``digits_wide.py:factory``, loading weights trained here (one epoch by default: speed does
not depend on accuracy); calibration data is 256 digits. Every build is ``edgec build ... --precision int8
--calib calib.npz`` in its own process, as a user runs it, timed from start to exit:

- **cold**: an empty cache for the target (import, passes, FP32 reference, export, parity all run);
- **rebuild**: the same command again into another folder (median of ``--repeats``);
- **import**: a process that only imports the source (torch, the factory call, the cached capture), timed
  inside the process from before the import to after it (median of ``--repeats``).

The goal: a rebuild takes at most 2 s plus the import. The rebuilt bundle must be byte-identical to the
cold one (every file); the table says so per target. Coreml is measured where coremltools is installed.

Wall time is the goal's measure, but on a shared machine other processes stretch it; the CPU seconds the
processes used (user + system, all threads) are printed beside it, with the load average, and the goal is
also judged on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TARGETS = ("onnx", "openvino", "tflite", "coreml")
GOAL_S = 2.0
"""A rebuild may take this much more than importing the source."""
FACTORY = '''"""digits_wide as a PyTorch factory, with the weights trained by the rebuild benchmark."""
from pathlib import Path

import torch

from edgec.benchmarks.zoo import digits_wide as zoo


def factory():
    model = zoo.build_model()
    model.load_state_dict(torch.load(Path(__file__).with_name("digits_wide.state.pt"), weights_only=True))
    batch = torch.export.Dim("batch", min=1, max=4096)
    return model.eval(), (torch.zeros(2, 1, zoo.SIZE, zoo.SIZE),), {"dynamic_shapes": {"x": {0: batch}}}
'''
IMPORT_PROBE = """
import sys, time
from pathlib import Path
from edgec.compiler.cache import StageCache
from edgec.compiler.importers.base import find_importer
start, cpu = time.perf_counter(), time.process_time()
find_importer(sys.argv[1]).load(sys.argv[1], StageCache(Path(sys.argv[2])), lambda message: None)
print(time.perf_counter() - start, time.process_time() - cpu)
"""


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds (user + system) of one measurement."""

    wall: float
    cpu: float


@dataclass
class Row:
    """One target: seconds for the cold build, the rebuild and the import, and whether the bundles match."""

    target: str
    cold_s: float
    rebuild_s: float
    import_s: float
    identical: bool
    cold_cpu_s: float
    rebuild_cpu_s: float
    import_cpu_s: float

    @property
    def ratio(self) -> float:
        """Cold build time over rebuild time."""
        return self.cold_s / self.rebuild_s

    @property
    def goal_met(self) -> bool:
        """The rebuild took at most :data:`GOAL_S` more than the import (wall clock)."""
        return self.rebuild_s <= GOAL_S + self.import_s

    @property
    def goal_met_cpu(self) -> bool:
        """The same in CPU seconds, which the load of other processes stretches less."""
        return self.rebuild_cpu_s <= GOAL_S + self.import_cpu_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.rebuild_speed",
                                     description="cold build vs unchanged rebuild from the stage cache, per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--repeats", type=int, default=3, help="rebuilds and import probes per target (median); default 3")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the CNN; default 1")
    parser.add_argument("--out", type=Path, help="keep the model, caches and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if args.repeats < 1 or not set(targets) <= set(TARGETS):
        parser.error(f"--repeats must be at least 1 and --targets a subset of {','.join(TARGETS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-rebuild-") as tmp:
        rows = run(args.out or Path(tmp), available(targets), args.repeats, args.epochs)
    print(f"\n{environment()}\n{format_table(rows)}\n\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        document = {"environment": environment(), "goal_s": GOAL_S,
                    "rows": [{**asdict(r), "ratio": round(r.ratio, 2), "goal_met": r.goal_met, "goal_met_cpu": r.goal_met_cpu}
                             for r in rows]}
        args.json.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0 if all((r.goal_met or r.goal_met_cpu) and r.identical for r in rows) else 1


def available(targets: list[str]) -> list[str]:
    """The targets whose build tools are installed (the others are named and left out)."""
    from edgec.core.errors import MissingDependencyError
    from edgec.targets.base import target_class

    ready = []
    for name in targets:
        try:
            target_class(name)().check_available()
            ready.append(name)
        except MissingDependencyError as exc:
            print(f"{name}: left out ({exc.message})")
    return ready


def run(work: Path, targets: list[str], repeats: int, epochs: int) -> list[Row]:
    """Train the CNN and write the factory, then time cold build, rebuilds and imports per target."""
    source, calib = prepare(work, epochs)
    rows = []
    for target in targets:
        cache = work / "cache" / target
        cold_t, cold = build(source, calib, target, cache, work / "cold")
        rebuilds = [build(source, calib, target, cache, work / f"rebuild-{i}") for i in range(repeats)]
        imports = [import_seconds(source, cache) for _ in range(repeats)]
        identical = all(same_files(cold, bundle) for _, bundle in rebuilds)
        rebuild = [t for t, _ in rebuilds]
        row = Row(target, cold_t.wall, _median(rebuild, "wall"), _median(imports, "wall"), identical,
                  cold_t.cpu, _median(rebuild, "cpu"), _median(imports, "cpu"))
        rows.append(row)
        print(f"{target}: cold {row.cold_s:.1f}s, rebuild {row.rebuild_s:.2f}s, import {row.import_s:.2f}s (wall)")
    return rows


def _median(timings: list[Timing], field: str) -> float:
    return float(statistics.median(getattr(t, field) for t in timings))


def prepare(work: Path, epochs: int) -> tuple[str, Path]:
    """Train digits_wide, save its weights and ``calib.npz``, and write the factory; returns the source string."""
    import torch

    from edgec.benchmarks.zoo import digits, digits_wide

    work.mkdir(parents=True, exist_ok=True)
    print(f"training digits_wide ({epochs} epoch{'' if epochs == 1 else 's'})")
    data = digits_wide.load_data()
    torch.save(digits_wide.train(data, epochs).state_dict(), work / "digits_wide.state.pt")
    calib, _ = digits.save_splits(data, work)
    (work / "digits_wide.py").write_text(FACTORY)
    return f"{work / 'digits_wide.py'}:factory", calib


def build(source: str, calib: Path, target: str, cache: Path, out: Path) -> tuple[Timing, Path]:
    """``edgec build SOURCE --target TARGET --precision int8 --calib CALIB`` in a new process: (its time, bundle).

    Raises:
        RuntimeError: the build failed (its stderr is in the message).
    """
    command = [sys.executable, "-m", "edgec.compiler", "build", source, "--target", target, "--precision", "int8",
               "--calib", str(calib), "--out", str(out), "--cache-dir", str(cache), "-q"]
    before, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    timing = Timing(time.perf_counter() - start, _children_cpu() - before)
    if done.returncode != 0:
        raise RuntimeError(f"edgec build --target {target} failed ({done.returncode}): {done.stderr.strip()}")
    return timing, out / f"digits_wide-{target}-int8"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_seconds(source: str, cache: Path) -> Timing:
    """How long a new process takes to import ``source`` (from the cache that the builds filled)."""
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, source, str(cache)], capture_output=True, text=True,
                          timeout=600, check=True)
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return Timing(float(wall), float(cpu))


def same_files(a: Path, b: Path) -> bool:
    """Whether two folders hold the same relative paths with the same bytes."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / p).read_bytes() == (b / p).read_bytes() for p in files_a)


def environment() -> str:
    """Host CPU count, load and Python."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"host: {os.cpu_count()} logical CPUs, load average {load}; python {platform.python_version()}"


def format_table(rows: list[Row]) -> str:
    """A Markdown table: wall (and CPU) seconds, the cold/rebuild ratio, the goal and byte-identity per target."""
    lines = [f"| target | cold build | rebuild | import | rebuild - import | cold / rebuild | goal (<= {GOAL_S:g} s + import) "
             "| rebuild byte-identical |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r.target} | {r.cold_s:.1f} s ({r.cold_cpu_s:.1f}) | {r.rebuild_s:.2f} s ({r.rebuild_cpu_s:.2f}) | "
                     f"{r.import_s:.2f} s ({r.import_cpu_s:.2f}) | {r.rebuild_s - r.import_s:.2f} s "
                     f"({r.rebuild_cpu_s - r.import_cpu_s:.2f}) | {r.ratio:.1f}x | {_verdict(r.goal_met)} wall, "
                     f"{_verdict(r.goal_met_cpu)} cpu | {'yes' if r.identical else 'NO'} |")
    return "\n".join(lines + ["", "wall-clock seconds (CPU seconds, user + system, in brackets)"])


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
