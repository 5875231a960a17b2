"""One entry point for the comparison benchmarks, one table of ratios.

``python -m edgec.benchmarks.compare [--runs N] [--only NAME ...] [--json]``

Runs every module of this package named ``<candidate>_vs_<baseline>`` (``quant_vs_default``,
``openvino_vs_default``, ``tflite_vs_onnx``, ... whichever are present) and prints their rows together.

Protocol a comparison module follows:

- ``ratios(work: pathlib.Path, runs: int) -> list[dict]``: measure in ``work`` (a scratch folder, removed
  afterwards unless ``--out`` is given) with ``runs`` timed inferences per variant; one dict per
  comparison:

  ``case`` (str, e.g. "digits CNN"), ``metric`` (str, e.g. "p50 latency ms", "top-1"),
  ``baseline`` and ``candidate`` (str, the variants' names), ``baseline_value`` and
  ``candidate_value`` (float), ``better`` ("lower" or "higher"), optional ``note`` (str).
- optional ``TITLE`` (str): a short name for the table; default the module name.
- heavy imports inside functions; a missing optional package raises edgec's
  ``MissingDependencyError`` or an ``ImportError`` (the module is then listed as skipped, with the
  reason). Any other exception is reported as FAILED with its traceback, the other modules still
  run, and the exit code is 1.

The table shows ``ratio = candidate / baseline`` and ``gain``: the ratio turned so that above 1.0 the
candidate is better (``baseline / candidate`` for lower-is-better metrics).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "edgec.benchmarks"
REQUIRED_KEYS = ("case", "metric", "baseline", "candidate", "baseline_value", "candidate_value", "better")


@dataclass
class Outcome:
    """One comparison module's rows, or why it was skipped, and how long it took."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    failed: str | None = None
    seconds: float = 0.0


def discover(package: str = PACKAGE) -> list[str]:
    """Names of the package's ``*_vs_*`` modules, sorted."""
    module = importlib.import_module(package)
    return sorted(info.name for info in pkgutil.iter_modules(module.__path__) if "_vs_" in info.name)


def with_ratio(row: dict[str, Any]) -> dict[str, Any]:
    """A protocol row plus ``ratio`` and ``gain``.

    Raises:
        ValueError: a required key is missing or ``better`` is neither "lower" nor "higher".
    """
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing or row.get("better") not in ("lower", "higher"):
        raise ValueError(f"row {row!r} does not follow the protocol (missing {missing}; better must be lower or higher)")
    base, cand = float(row["baseline_value"]), float(row["candidate_value"])
    ratio = cand / base if base else float("inf")
    gain = ratio if row["better"] == "higher" else (base / cand if cand else float("inf"))
    return {**row, "ratio": ratio, "gain": gain}


def run_module(name: str, work: Path, runs: int, package: str = PACKAGE) -> Outcome:
    """Import and run one comparison module; missing dependencies and protocol gaps become ``skipped``."""
    from edgec.core.errors import EdgecError

    start = time.perf_counter()
    try:
        module = importlib.import_module(f"{package}.{name}")
    except ImportError as exc:
        return Outcome(name, name, skipped=f"cannot import: {exc}")
    title = str(getattr(module, "TITLE", name))
    ratios = getattr(module, "ratios", None)
    if not callable(ratios):
        return Outcome(name, title, skipped="does not define ratios(work, runs) (see edgec.benchmarks.compare)")
    try:
        rows = [with_ratio(r) for r in ratios(work / name, runs)]
    except EdgecError as exc:
        return Outcome(name, title, skipped=exc.one_line(), seconds=time.perf_counter() - start)
    except ImportError as exc:
        return Outcome(name, title, skipped=f"needs the package {exc.name or exc} (not installed)",
                       seconds=time.perf_counter() - start)
    except Exception as exc:  # one broken comparison (bug or not: traceback printed) must not hide the others' rows
        traceback.print_exc()
        return Outcome(name, title, failed=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    return Outcome(name, title, rows, seconds=time.perf_counter() - start)


def format_table(outcomes: list[Outcome]) -> str:
    """One fixed-width table of every row; skipped modules listed below it."""
    head = f"{'comparison':22} {'case':14} {'metric':16} {'baseline':>20} {'candidate':>20} {'ratio':>7} {'gain':>6}"
    lines = [head, "-" * len(head)]
    for outcome in outcomes:
        for r in outcome.rows:
            base = f"{r['baseline']} {r['baseline_value']:.4g}"
            cand = f"{r['candidate']} {r['candidate_value']:.4g}"
            lines.append(f"{outcome.title[:22]:22} {str(r['case'])[:14]:14} {str(r['metric'])[:16]:16} {base:>20} "
                         f"{cand:>20} {r['ratio']:7.3f} {r['gain']:6.2f}")
    lines.append("ratio = candidate / baseline; gain > 1.00: the candidate is better on that metric")
    lines += [f"skipped {o.name}: {o.skipped}" for o in outcomes if o.skipped]
    lines += [f"FAILED {o.name}: {o.failed}" for o in outcomes if o.failed]
    notes = [f"{o.title}, {r['case']}: {r['note']}" for o in outcomes for r in o.rows if r.get("note")]
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed inferences per variant; default 100")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these comparison modules")
    parser.add_argument("--out", type=Path, help="keep the work folders here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    names = discover()
    unknown = sorted(set(args.only or []) - set(names))
    if args.runs < 1 or unknown:
        print(f"compare: error: {'--runs must be >= 1' if args.runs < 1 else f'unknown comparisons {unknown}'} "
              f"(available: {', '.join(names) or 'none'})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgec-compare-") as tmp:
        work = args.out or Path(tmp)
        outcomes = [run_module(name, work, args.runs) for name in (args.only or names)]
    if args.json:
        print(json.dumps([{"name": o.name, "title": o.title, "rows": o.rows, "skipped": o.skipped,
                           "failed": o.failed, "seconds": round(o.seconds, 1)} for o in outcomes], indent=2, sort_keys=True))
    else:
        print(format_table(outcomes))
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
