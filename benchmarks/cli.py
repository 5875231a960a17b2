"""``edgec bench``: benchmark bundles (each in its own process), merge device results, write reports.

Examples::

    edgec bench bundles/digits-onnx-fp32 bundles/digits-onnx-int8 --eval eval.npz --out report/
    edgec bench bundles/*-int8 --require-speedup            # exit 7 when int8 is not faster than fp32
    edgec bench --merge results/*.json --out report/        # results printed by edgec_shim on devices

A bundle whose runtime cannot execute on this host (Core ML off macOS, a runtime that is not installed)
gets a row saying why ("not run: ...") and the others are still measured. The exit code is 0 when every
bundle that could run was measured; 3 (missing dependency) when none could, after writing the report.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgec.core.cli_kit import ArgType, Argument, Option, command
from edgec.core.errors import AccuracyGateError, ConfigError
from edgec.runtime_shims.measure import non_negative_int, positive_int

SECTION = "Benchmarks"
"""The heading of ``edgec bench`` in ``edgec --help``."""


def commands() -> list[click.Command]:
    """``edgec bench``."""
    path = click.Path(path_type=Path)
    params = [
        Argument("bundle", type=path, nargs=-1, help="bundle directories to benchmark on this host"),
        Option("--runs", type=ArgType(positive_int), default=100, help="timed inferences per bundle; default 100"),
        Option("--warmup", type=ArgType(non_negative_int), default=10, help="untimed inferences first; default 10"),
        Option("--repeats", type=ArgType(positive_int), default=3,
               help="rounds the timed runs are split into, to report their spread; default 3"),
        Option("--threads", type=ArgType(positive_int), help="runtime threads; default: the runtime decides"),
        Option("--batch", type=ArgType(positive_int), help="batch size; default: the golden inputs' batch (1)"),
        Option("--eval", type=path, metavar="DATA",
               help=".npz of model inputs plus an integer 'labels' array: adds top-1 accuracy"),
        Option("--merge", type=path, multiple=True, metavar="JSON...",
               help="add results from these files (printed by 'python -m edgec_shim bench' on devices)"),
        Option("--require-speedup", type=float, is_flag=False, flag_value=1.0, default=None, metavar="[FACTOR]",
               help="fail (exit 7) when a quantized bundle is not faster than its fp32 sibling "
                    "(by more than FACTOR; default 1.0)"),
        Option("--out", type=path, help="write bench.json, bench.md and bench.html into this directory"),
        Option("--json", is_flag=True, help="print the JSON report instead of the table"),
        Option("--device", help="label for this host in reports; default the host name"),
        Option("--timeout", type=float, default=600.0, help="seconds allowed per bundle; default 600"),
        Option("-q", "--quiet", is_flag=True, help="no progress display"),
    ]
    return [command("bench", cmd_bench, params, greedy=("--merge",), description=__doc__,
                    help="latency, throughput, memory, size, parity and accuracy of bundles; reports")]


def build_options() -> list[click.Option]:
    """The benchmarking options of ``edgec build``: ``--require-speedup``."""
    return [Option("--require-speedup", type=float, is_flag=False, flag_value=1.0, default=None, metavar="[FACTOR]",
                   section="Quantization and accuracy",
                   help="fail (exit 7, no bundle written) unless the quantized bundle's p50 latency on this host "
                        "beats its fp32 sibling's by more than FACTOR (default 1.0)")]


def build_checks(args: argparse.Namespace, config: Any, log: Callable[[str], None],
                 build_sibling: Callable[[str, Path, str], Path]) -> list[Callable[[Path, Any], None]]:
    """The checks ``edgec build`` runs on the staged bundle before publishing it, from the options that
    :func:`build_options` added: the ``--require-speedup`` gate (:func:`bench.speedup_gate`).

    Args:
        args: the parsed ``edgec build`` arguments.
        config: the build's ``BuildConfig``.
        log: progress messages.
        build_sibling: builds a sibling bundle at another precision (``(precision, out, name) -> bundle dir``).

    Raises:
        ConfigError: ``--require-speedup`` on an fp32 build, or with a factor not above 0.
    """
    if getattr(args, "require_speedup", None) is None:
        return []
    from edgec.benchmarks.bench import speedup_gate

    return [speedup_gate(config, args.require_speedup, log, build_sibling=build_sibling)]


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``edgec bench``; see the module docstring."""
    from edgec.benchmarks import bench, report

    if not args.bundle and not args.merge:
        raise ConfigError("nothing to benchmark: give bundle directories and/or --merge result files")
    if args.eval is not None and not args.eval.is_file():
        raise ConfigError(f"--eval {args.eval}: file not found")
    if args.require_speedup is not None and args.require_speedup <= 0:
        raise ConfigError(f"--require-speedup {args.require_speedup}: expected a factor above 0")
    bundles = [bench.check_bundle_path(b) for b in args.bundle]
    merged, merged_not_run = report.load_merged(args.merge)
    options = bench.BenchOptions(args.runs, args.warmup, args.repeats, args.threads, args.batch, args.eval,
                                 args.device, args.timeout)
    measured, not_run = _run_with_progress(bundles, options, quiet=args.quiet)
    results, not_run = measured + merged, not_run + merged_not_run
    checks = None
    if args.require_speedup is not None:
        checks, siblings = bench.speedup_checks(results, args.require_speedup, options)
        results += siblings
    document = report.make_report(results, [c.to_json() for c in checks] if checks is not None else None, not_run)
    if args.out:
        write_reports(document, args.out)
    print(report.dumps(document) if args.json else report.to_markdown(document), end="")
    bench.require_some_result(results, not_run)
    if checks:
        bench.enforce_speedup(checks)
    failures = bench.parity_failures(document["results"])
    if failures:
        raise AccuracyGateError(f"parity outside tolerance: {'; '.join(failures)}")
    return 0


def _run_with_progress(bundles: list[Path], options: Any, quiet: bool,
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Benchmark with a rich progress bar on a terminal (stderr); silent otherwise or with --quiet.

    Returns:
        The results, and a *not run* entry for each bundle that cannot run on this host.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgec.benchmarks import bench

    console = Console(stderr=True)
    show = bool(bundles) and not quiet and console.is_terminal
    columns = (TextColumn("[bold]bench[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not show) as progress:
        task = progress.add_task("", total=len(bundles))
        results, not_run = [], []
        for bundle in bundles:
            progress.update(task, description=bundle.name)
            result, skipped = bench.bench_or_skip(bundle, options)
            results += [result] if result is not None else []
            not_run += [skipped] if skipped is not None else []
            progress.advance(task)
    return results, not_run


def write_reports(document: dict[str, Any], out: Path) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.html`` (each atomically) into ``out``."""
    from edgec.benchmarks import report

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("bench.json", report.dumps(document)), ("bench.md", report.to_markdown(document)),
                       ("bench.html", report.to_html(document))):
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        written.append(out / name)
    return written




