"""The ``edgec`` command line. Validates input at the boundary and maps errors to exit codes.

Exit codes: 0 ok, 1 internal error (a bug, with traceback), 2 configuration, 3 missing dependency,
4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity, 9 sync (store or network).
A matrix build (several targets or precisions, ``-f RECIPE``) exits 0 when every cell was built, else with the
code of the first failed cell in its summary table (see :mod:`edgec.compiler.matrix_cli`).

A reader that goes away (``edgec inspect m.onnx --json | head -c 10``) changes nothing but where the rest
of the output goes: the command runs to its end and exits with its own code, with nothing added on stderr
(see :class:`_ClosedPipeSafe`). Unlike git (killed by SIGPIPE, exit 141), ``edgec verify a b | head -1``
still verifies ``b`` and its exit code still says whether it passed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from edgec.compiler import __version__
from edgec.compiler.synthetic import DEFAULT_INPUT_MAX_MB
from edgec.core.errors import EXIT_CONFIG, EXIT_INTERNAL, ConfigError, EdgecError, brief

EXIT_CODES_HELP = """exit codes:
  0 ok, 1 internal error (a bug: please report the traceback), 2 configuration, 3 missing dependency,
  4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity, 9 sync (store or network)"""

MATRIX_EXIT_HELP = """
  a matrix (several targets or precisions, or -f RECIPE) builds every cell it can and exits 0 when all were
  built, else with the code of the first failed cell in its summary table (targets in order, precisions in order)"""

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and the config exit code."""

    def error(self, message: str) -> NoReturn:
        print(f"edgec: config error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgec", description="Compile trained models into verified edge bundles.",
                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    build = _add_build(sub)
    verify = sub.add_parser("verify", help="check a bundle's file hashes and golden-output parity")
    verify.add_argument("bundle", type=Path, nargs="+")
    verify.add_argument("--threads", type=int, default=None)
    verify.add_argument("--json", action="store_true", help="print the measured parity as JSON")
    inspect = sub.add_parser("inspect", help="show inputs, outputs, ops, size and precision of a model or bundle")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--json", action="store_true")
    targets = sub.add_parser("targets", help="list targets, their precisions and whether what they need is installed")
    targets.add_argument("--json", action="store_true", help="print the targets and what each lacks as JSON")
    debug = sub.add_parser("debug", help="rank the layers of a quantized bundle by the error they add versus FP32")
    debug.add_argument("bundle", type=Path)
    debug.add_argument("--reference", type=Path, help="FP32 bundle or .onnx; default: the sibling <name>-<target>-fp32 bundle")
    debug.add_argument("--top", type=int, default=15)
    debug.add_argument("--out", type=Path, default=None,
                       help="where to write the JSON report; default <bundle name>.layers.json here (never inside the bundle)")
    debug.add_argument("--json", action="store_true")
    recipe = sub.add_parser("recipe", help="recipe files for 'edgec build -f': print their JSON Schema, or check one")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True, parser_class=_Parser)
    recipe_sub.add_parser("schema", help="print the JSON Schema of recipe files (for editors)")
    recipe_sub.add_parser("check", help="validate a recipe without building").add_argument("file", type=Path)
    from edgec.compiler import cache_cli

    COMMANDS.update(cache_cli.add_commands(sub))
    for module in PLUGIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            plugin = importlib.import_module(module)
            COMMANDS.update(plugin.add_commands(sub))
            if hasattr(plugin, "add_build_options"):
                plugin.add_build_options(build)
                BUILD_PLUGINS[module] = plugin
    return parser


def _add_build(sub: Any) -> argparse.ArgumentParser:
    build = sub.add_parser("build", help="compile a model into a bundle", epilog=EXIT_CODES_HELP + MATRIX_EXIT_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("source", nargs="?", help="model.onnx, model.pt2, path/to/file.py:factory or package.module:factory")
    build.add_argument("-f", "--file", type=Path, metavar="RECIPE",
                       help="build what a recipe (.yaml or .toml) lists instead of SOURCE; see 'edgec recipe schema'")
    build.add_argument("--target", action="append", metavar="NAME[,NAME...]",
                       help="deployment targets (see 'edgec targets'), comma-separated or repeated; default onnx")
    build.add_argument("--precision", action="append", metavar="P[,P...]",
                       help="fp32, fp16 and/or int8, comma-separated or repeated; default fp32")
    build.add_argument("--out", type=_out_arg, default=Path("bundles"),
                       help="output directory; default ./bundles. With --executor ray also a store URL "
                            "(s3://bucket/prefix, gs://, az://, file:///dir) the workers upload bundles to")
    build.add_argument("--name", help="bundle name; default: the source's file or factory module name")
    build.add_argument("--calib", type=Path, help=".npz, folder of .npy/.npz, or folder of images")
    build.add_argument("--calib-samples", type=int, help="use a deterministic subset of N calibration samples")
    build.add_argument("--calib-method", default="minmax", help="minmax, entropy or percentile; default minmax")
    build.add_argument("--calib-preprocess", help="for image folders: resize=HxW,mean=a/b/c,std=a/b/c,scale=255,layout=nchw|nhwc,mode=rgb|l")
    build.add_argument("--calib-max-mb", type=int, default=2048, metavar="MB",
                       help="refuse calibration/eval data that would decode to more than MB MiB; default 2048")
    build.add_argument("--input", action="append", default=[], metavar="NAME:DIMS",
                       help="fix a dynamic input shape, e.g. input:1x3x224x224 (repeatable)")
    build.add_argument("--input-max-mb", type=int, default=DEFAULT_INPUT_MAX_MB, metavar="MB",
                       help=f"refuse synthetic golden inputs above MB MiB per sample (all inputs); default {DEFAULT_INPUT_MAX_MB}")
    build.add_argument("--input-value", action="append", default=[], metavar="NAME=VALUE",
                       help="set an input (e.g. a sample rate) to VALUE in every golden and calibration sample; "
                            "non-float settings are never drawn at random (repeatable)")
    build.add_argument("--fold-input-values", action="store_true",
                       help="write the --input-value values into the graph as constants (ONNX route): the bundle no longer takes those inputs")
    build.add_argument("--int8-mode", default="auto", help="auto, static or dynamic; default auto")
    build.add_argument("--no-simplify", action="store_true", help="skip the onnxslim clean-up")
    build.add_argument("--golden-samples", type=int, default=8, help="golden inputs parity is measured on; default 8")
    build.add_argument("--golden-max-mb", type=float, metavar="MB",
                       help="cap on the bundle's golden.npz (fewer samples are kept to fit); default 25%% of the "
                            "model or 1 MiB, whichever is larger")
    build.add_argument("--min-cosine", type=float, help="fail when an output's cosine to FP32 is below this")
    build.add_argument("--allow-degraded", action="store_true",
                       help="write a bundle even when its parity collapsed (an output, or a part of one on its own scale, "
                            "below cosine 0.9, or top-1 agreement below 0.5 on --calib inputs); by default that fails with exit 7")
    build.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the target (repeatable; 'edgec targets' lists them)")
    _add_target_flags(build)
    build.add_argument("--prune", type=float, metavar="RATIO",
                       help="remove this fraction of channels (structured) or weights (unstructured); PyTorch sources only")
    build.add_argument("--prune-mode", default="structured", help="structured (default) or unstructured")
    build.add_argument("--finetune", metavar="MODULE:FUNCTION", help="finetune(module) -> module, run after pruning")
    build.add_argument("--report-layers", action="store_true", help="write a per-layer divergence report (layers.json) into the bundle")
    build.add_argument("--max-drop", type=float, help="accuracy budget, e.g. 0.01: keep the most sensitive layers in float until met")
    build.add_argument("--metric", default="top1", help="what --max-drop measures: top1 (agreement with FP32), decision "
                       "(sigmoid outputs, see --threshold), cosine, accuracy (needs --eval), or pkg.module:function")
    build.add_argument("--metric-reduce", default="mean", metavar="mean|min|pN",
                       help="per-sample scores -> one: mean (default), min (the worst sample) or pN (percentile, e.g. p5)")
    build.add_argument("--threshold", type=float, default=0.5, help="decision threshold of --metric decision; default 0.5")
    build.add_argument("--max-float-layers", type=int, help="with --max-drop: keep at most N layers in float (default 16)")
    build.add_argument("--max-builds", type=int, help="with --max-drop: build and measure at most N candidates (default 8)")
    build.add_argument("--eval", type=Path, help=".npz of model inputs (plus 'labels' for --metric accuracy) that --max-drop "
                       "measures on; default: a quarter of --calib held out from calibration")
    build.add_argument("--force", action="store_true", help="replace an existing bundle")
    build.add_argument("--no-cache", action="store_true", help="do not read or write the stage cache")
    build.add_argument("--cache-dir", type=Path, help="stage cache directory; default $EDGEC_CACHE_DIR or ~/.cache/edgec")
    build.add_argument("-v", "--verbose", action="store_true", help="progress messages even when not on a terminal")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    build.add_argument("--jobs", type=int, metavar="N", help="build the cells of a matrix in N worker processes; default 1")
    build.add_argument("--json", action="store_true", help="print the cells built (status, exit code, bundle, size, parity) as JSON")
    build.add_argument("--executor", choices=["local", "ray"],
                       help="where the cells run: local (this machine, --jobs processes; default) or ray (a Ray task per "
                            "cell; pip install 'edgec[ray]')")
    build.add_argument("--address", metavar="ADDR", help="with --executor ray: the Ray cluster (HOST:6379 after 'ray start "
                       "--head', or ray://HOST:10001); default $RAY_ADDRESS, else a new local Ray instance")
    build.add_argument("--cache-store", metavar="URL", help="with --executor ray: a stage cache shared by the driver and "
                       "every worker, in a store (s3://, gs://, az://, file://); default $EDGEC_CACHE_STORE")
    return build


def _out_arg(text: str) -> Path | str:
    """``--out``: a folder, or a store URL kept as text (a Path would fold its ``//``)."""
    return text if "://" in text else Path(text)


def _add_target_flags(build: argparse.ArgumentParser) -> None:
    """The named flags the targets declare on their options (``--palettize``): each adds ``KEY=VALUE`` pairs."""
    from edgec.targets.base import named_flags

    for flag in named_flags():
        build.add_argument(flag.flag, dest=flag.dest, action="append", default=[], choices=flag.choices,
                           metavar=flag.metavar, help=f"{'/'.join(flag.targets)}: {flag.help} "
                                                      f"(= --target-option {flag.key}=...)")


def _target_option_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--target-option KEY=VALUE`` pairs, then those of the named flags given (a flag's last value wins
    unless its option is repeatable).

    Raises:
        ConfigError: a ``--target-option`` without ``=``.
    """
    from edgec.compiler.config import parse_target_option
    from edgec.targets.base import named_flags

    pairs = [parse_target_option(text) for text in args.target_option]
    for flag in named_flags():
        values = getattr(args, flag.dest, None) or []
        pairs += [(flag.key, v) for v in (values if flag.repeatable else values[-1:])]
    return pairs


def _config(args: argparse.Namespace, options: list[tuple[str, str]] | None = None) -> Any:
    from pydantic import ValidationError

    from edgec.compiler.config import BuildConfig, parse_input_shape, parse_input_value

    shapes = dict(parse_input_shape(text) for text in args.input)
    values = dict(parse_input_value(text) for text in args.input_value)
    options = _target_option_pairs(args) if options is None else options
    fields = {
        "source": args.source, "target": args.target, "precision": args.precision, "out": args.out,
        "name": args.name, "calib": args.calib, "calib_samples": args.calib_samples, "calib_max_mb": args.calib_max_mb,
        "calib_method": args.calib_method, "calib_preprocess": args.calib_preprocess, "input_shapes": shapes,
        "input_max_mb": args.input_max_mb, "input_values": values, "fold_input_values": args.fold_input_values,
        "int8_mode": args.int8_mode, "simplify": not args.no_simplify, "golden_samples": args.golden_samples, "golden_max_mb": args.golden_max_mb,
        "min_cosine": args.min_cosine, "allow_degraded": args.allow_degraded, "target_options": tuple(options), "prune": args.prune, "prune_mode": args.prune_mode, "finetune": args.finetune,
        "report_layers": args.report_layers, "max_drop": args.max_drop,
        "metric": args.metric, "metric_reduce": args.metric_reduce, "threshold": args.threshold,
        "max_float_layers": args.max_float_layers, "max_builds": args.max_builds, "eval": args.eval, "force": args.force, "cache": not args.no_cache, "cache_dir": args.cache_dir,
    }
    try:
        return BuildConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:
            raise ConfigError(str(first["msg"]).removeprefix("Value error, ")) from None
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        raise ConfigError(f"bad {flag} {fields.get(str(first['loc'][0]))!r}: {first['msg']}") from None


def cmd_build(args: argparse.Namespace) -> int:
    from edgec.compiler import matrix_cli
    from edgec.compiler.pipeline import build, sibling_builder
    from edgec.compiler.progress import Reporter
    from edgec.runtime_shims.measure import format_top1

    if matrix_cli.is_matrix(args):
        return matrix_cli.run(args, _config, _target_option_pairs(args), list(BUILD_PLUGINS), COMMANDS, _parser().parse_args)
    if args.source is None:
        raise ConfigError("edgec build needs a SOURCE model (or -f RECIPE)", hint="see 'edgec build --help'")
    args.target, args.precision = (args.target or ["onnx"])[0], (args.precision or ["fp32"])[0]
    config = _config(args)
    reporter = Reporter(False if args.quiet else (True if args.verbose else None))
    checks = [check for plugin in BUILD_PLUGINS.values()
              for check in plugin.build_checks(args, config, reporter, sibling_builder(config, reporter))]
    try:
        outcome = build(config, reporter, before_publish=_all_checks(checks) if checks else None)
    finally:
        reporter.close()
    m = outcome.manifest
    print(f"built {outcome.bundle_dir} ({m.target}, {m.precision}, model {m.model_bytes():,} bytes)")
    note = _precision_note(m.target, m.precision)
    if note:
        print(f"  {m.precision} on {m.target}: {note}")
    if not m.parity.get("measured", True):
        print(f"  parity not measured: {m.parity.get('reason')}")
    for name, metrics in m.parity.get("outputs", {}).items():
        top1 = format_top1(metrics, m.parity.get("samples"))
        extra = f", {top1}" if top1 else ""
        print(f"  parity {name}: cosine {metrics['cosine']:.6f}, max_abs {metrics['max_abs']:.3g}{extra}")
    _print_golden_and_pruning(m.parity, outcome.warnings)
    fidelity = outcome.fidelity
    if fidelity is not None and fidelity.mixed_precision is not None and fidelity.cost is not None:
        mp, cost = fidelity.mixed_precision, fidelity.cost
        print(f"  mixed precision: {mp.label} {mp.value:.4f} vs fp32 {mp.fp32:.4f} (drop {mp.drop:.4f} <= {mp.max_drop}); "
              f"{len(mp.float_layers)} layer{'' if len(mp.float_layers) == 1 else 's'} kept in float: "
              f"{', '.join(mp.float_layers) or 'none'}")
        print(f"  search: {mp.builds} candidate builds, measured on {mp.samples} {mp.measured_on} samples")
        print(f"  cost: size {cost.size:,} vs {cost.size_all_quantized:,} bytes all-quantized; "
              f"latency {cost.latency_ms:.3f} vs {cost.latency_ms_all_quantized:.3f} ms (batch 1, this host)")
    report = (m.model_extra or {}).get("layer_report")
    if report:
        print(f"  layer report: {outcome.bundle_dir / 'layers.json'} (worst: {', '.join(report['worst'])})")
    return 0


def _print_golden_and_pruning(parity: dict[str, Any], warnings: tuple[str, ...]) -> None:
    """Where the golden inputs came from; with pruning, parity against the unpruned model; warnings on stderr."""
    from edgec.compiler.golden import describe
    from edgec.runtime_shims.measure import format_top1

    if parity.get("golden_source"):
        print(f"  golden inputs: {describe(parity['golden_source'], parity.get('samples', 0))}")
    stored = parity.get("golden_stored") or {}
    if stored.get("samples", 0) < stored.get("of", 0):
        print(f"  golden.npz keeps {stored['samples']} of {stored['of']} samples ({stored['bytes']:,} bytes, cap "
              f"{stored['cap']}; --golden-max-mb raises it)")
    unpruned = parity.get("unpruned") or {}
    for name, metrics in unpruned.get("outputs", {}).items():
        top1 = format_top1(metrics, unpruned.get("samples"))
        print(f"  parity {name} against the unpruned model ({unpruned.get('compared')}): cosine {metrics['cosine']:.6f}"
              f"{', ' + top1 if top1 else ''}")
    for warning in warnings:
        print(f"edgec: WARNING: {warning}", file=sys.stderr)


def _precision_note(target: str, precision: str) -> str | None:
    """The target's note on what ``precision`` buys (``Target.precision_notes``), if it has one."""
    from edgec.targets.base import TARGETS

    try:
        return TARGETS.get(target).precision_notes.get(precision)
    except KeyError:
        return None


def cmd_recipe(args: argparse.Namespace) -> int:
    from edgec.compiler.matrix_cli import cmd_recipe as run_recipe_command

    return run_recipe_command(args)


def cmd_debug(args: argparse.Namespace) -> int:
    from edgec.compiler.debug import debug_bundle

    layers, path = debug_bundle(args.bundle, args.reference, args.out)
    if args.json:
        print(json.dumps([d.to_json() for d in layers], indent=2))
    else:
        from edgec.frameworks.fidelity import format_report

        print(format_report(layers, args.top))
    print(f"layer report written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgec.compiler.verify import verify_bundle

    results = {}
    for bundle in args.bundle:
        report = verify_bundle(bundle, threads=args.threads)
        results[str(bundle)] = report.measured
        if not args.json and not report.measured:
            print(f"ok {bundle}: {report.files_checked} files match; parity not checked: this host cannot run {report.manifest.target} models")
        elif not args.json:
            print(f"ok {bundle}: {report.files_checked} files match, parity within tolerance ({report.parity_summary()})")
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.compiler.inspection import format_text, inspect_path

    info = inspect_path(args.path)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_text(info))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    """Each target, its precisions and routes, and whether what its builds need is installed (looked up, not
    imported: milliseconds, see :mod:`edgec.core.installed`)."""
    from edgec.targets.base import TARGETS

    if args.json:
        print(json.dumps([_target_json(cls) for cls in TARGETS.all()], indent=2))
        return 0
    for cls in TARGETS.all():
        state = cls.readiness().summary()
        print(f"{cls.name:10s} precisions {','.join(cls.precisions):16s} routes {','.join(cls.routes):22s} {state}")
        for key, text in cls.Options.help_lines():
            print(f"{'':10s}   --target-option {key}=...  {text}")
        for precision, note in cls.precision_notes.items():
            print(f"{'':10s}   {precision}: {note}")
    return 0


def _target_json(cls: Any) -> dict[str, Any]:
    return {"name": cls.name, "extra": cls.extra, "precisions": list(cls.precisions),
            **cls.readiness().to_json(), "options": dict(cls.Options.help_lines()),
            "precision_notes": dict(cls.precision_notes)}


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "recipe": cmd_recipe, "verify": cmd_verify, "inspect": cmd_inspect, "targets": cmd_targets, "debug": cmd_debug,
}
PLUGIN_MODULES: list[str] = ["edgec.benchmarks.cli", "edgec.cloud_sync.cli", "edgec.cloud_sync.serving.cli"]
"""Modules of higher rooms (benchmarks, cloud_sync) that add subcommands: each has
``add_commands(subparsers) -> {name: handler}`` and keeps heavy imports inside the handlers. A plugin may
also add options to ``edgec build``: ``add_build_options(build_parser)``, and
``build_checks(args, config, log, build_sibling) -> [check(staging_dir, manifest)]``, checks the build runs
on the staged bundle before publishing it (``--require-speedup``). The compiler never imports them by name."""
BUILD_PLUGINS: dict[str, Any] = {}
"""The plugins that add ``edgec build`` options, by module name."""


def _all_checks(checks: list[Callable[[Path, Any], None]]) -> Callable[[Path, Any], None]:
    """One ``before_publish`` callback running ``checks`` in order."""
    def run_all(staging: Path, manifest: Any) -> None:
        for check in checks:
            check(staging, manifest)

    return run_all


class _ClosedPipeSafe:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that survives its reader going away.

    On the first :class:`BrokenPipeError` the stream's file descriptor is pointed at ``/dev/null``, so what
    is still buffered, everything written later (by Python or native code) and the interpreter's final
    flush go nowhere instead of raising. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _to_devnull(self) -> None:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # not backed by a file descriptor (an in-memory stream)
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgec`` console script; returns the exit code.

    A closed stdout or stderr pipe does not stop the command or change its exit code (see the module docstring).
    """
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ClosedPipeSafe(sys.stdout), _ClosedPipeSafe(sys.stderr)  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return COMMANDS[args.command](args)
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # InternalError, or any other exception that escaped: a bug in edgec
        traceback.print_exc()
        print(f"edgec: internal error (a bug in edgec {__version__}): {type(exc).__name__}: {brief(exc)}; "
              "please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
