"""The build farm on one machine: a matrix built locally versus as Ray tasks on a local Ray instance.

``python -m edgec.benchmarks.farm_speed [--targets onnx,openvino] [--precisions fp32,int8] [--epochs 1]
[--out DIR] [--json FILE]``

The model and data are :mod:`~edgec.benchmarks.matrix_speed`'s (the demo's digits_wide CNN, trained here for
one epoch, 256 calibration digits). The same cells are built, each way from an empty stage cache into an empty
folder, each build one ``edgec build`` process timed from start to exit:

- **local**: ``edgec build SOURCE --target ... --precision ...`` (the cells one after the other);
- **local --jobs 2**: the same in two worker processes;
- **ray**: ``--executor ray``: a new local Ray instance (its start-up counted), one Ray task per cell, the
  bundles sent back through Ray's object store into the folder;
- **ray to a store**: the same with ``--out file:///...``: the workers upload each bundle into a store.

It prints wall seconds, the ratio local / way, and whether each way wrote the same bundles as local (every
file byte-identical but the runtime shim). What it measures is the farm's overhead on one machine, not its
point: on a 2-core host Ray's workers share the same two cores as everything else, so no way can beat
local by more than the cores allow, and Ray adds its start-up (a few seconds) and the transfer of each
cell's inputs. The farm pays off when a matrix outgrows one machine (workers on other machines add cores).
CPU seconds are left out: Ray's workers are not children of the timed process, so their CPU would not count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgec.benchmarks.matrix_speed import environment, prepare, same_bundles

TARGETS = ("onnx", "openvino")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Way:
    """One way of building the matrix: its wall seconds, bundles written and whether they match local's."""

    way: str
    wall_s: float
    bundles: int
    same_as_local: bool | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.farm_speed",
                                     description="a matrix built locally vs as Ray tasks on a local Ray instance")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated; default {','.join(TARGETS)}")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated; default {','.join(PRECISIONS)}")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the CNN; default 1")
    parser.add_argument("--out", type=Path, help="keep the model, caches and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-farm-speed-") as tmp:
        ways = run(args.out or Path(tmp), args.targets, args.precisions, args.epochs)
    print(f"\n{environment()}\n{format_table(ways)}\n\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        document = {"environment": environment(), "targets": args.targets, "precisions": args.precisions,
                    "ways": [asdict(w) for w in ways], "local_over_way": {w.way: round(ways[0].wall_s / w.wall_s, 2) for w in ways}}
        args.json.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0 if all(w.same_as_local is not False for w in ways) else 1


def run(work: Path, targets: str, precisions: str, epochs: int) -> list[Way]:
    """Train the CNN, then build the matrix each way (see the module docstring)."""
    source, calib = prepare(work, epochs)
    matrix = ["--target", targets, "--precision", precisions, "--calib", str(calib), "-q"]
    store = work / "ray-store"
    ways = {"local": [], "local --jobs 2": ["--jobs", "2"], "ray": ["--executor", "ray"],
            "ray to a store": ["--executor", "ray", "--out", store.as_uri()]}
    results: list[Way] = []
    for way, flags in ways.items():
        out = work / way.replace(" ", "-")
        wall = timed_build(source, matrix + ["--out", str(out)] + flags, work / f"cache-{out.name}")
        folder = store if "--out" in flags else out
        bundles = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        same = None if not results else same_bundles(work / "local", folder)
        results.append(Way(way, wall, len(bundles), same))
        print(f"{way}: {wall:.1f}s wall, {len(bundles)} bundles")
    return results


def timed_build(source: str, flags: list[str], cache: Path) -> float:
    """Wall seconds of one ``edgec build SOURCE FLAGS`` process with ``EDGEC_CACHE_DIR`` set to the new ``cache``
    (a later ``--out`` in ``flags`` wins over an earlier one).

    Raises:
        RuntimeError: the build failed (its output is in the message).
    """
    env = {**os.environ, "EDGEC_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", source, *flags], capture_output=True,
                          text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"edgec build {' '.join(flags)} failed ({done.returncode}): {done.stdout}{done.stderr}".strip())
    return time.perf_counter() - start


def format_table(ways: list[Way]) -> str:
    """A Markdown table: wall seconds per way, local / way, same bundles as local."""
    lines = ["| way | wall | local / this | bundles | same bundles as local |", "|---|---:|---:|---:|---|"]
    for w in ways:
        same = "-" if w.same_as_local is None else ("yes" if w.same_as_local else "NO")
        lines.append(f"| {w.way} | {w.wall_s:.1f} s | {ways[0].wall_s / w.wall_s:.2f}x | {w.bundles} | {same} |")
    return "\n".join(lines + ["", "each way starts from an empty stage cache; ray counts the start of its local instance"])


if __name__ == "__main__":
    sys.exit(main())
