"""The ``edgec`` command line. Validates input at the boundary and maps errors to exit codes.

Exit codes: 0 ok, 1 internal error (a bug, with traceback), 2 configuration, 3 missing dependency,
4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity.

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
from edgec.core.errors import EXIT_CONFIG, EXIT_INTERNAL, ConfigError, EdgecError

EXIT_CODES_HELP = """exit codes:
  0 ok, 1 internal error (a bug: please report the traceback), 2 configuration, 3 missing dependency,
  4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity"""


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
    _add_build(sub)
    verify = sub.add_parser("verify", help="check a bundle's file hashes and golden-output parity")
    verify.add_argument("bundle", type=Path, nargs="+")
    verify.add_argument("--threads", type=int, default=None)
    verify.add_argument("--json", action="store_true", help="print the measured parity as JSON")
    inspect = sub.add_parser("inspect", help="show inputs, outputs, ops, size and precision of a model or bundle")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--json", action="store_true")
    sub.add_parser("targets", help="list targets, their precisions and whether their runtime is installed")
    debug = sub.add_parser("debug", help="rank the layers of a quantized bundle by the error they add versus FP32")
    debug.add_argument("bundle", type=Path)
    debug.add_argument("--reference", type=Path, help="FP32 bundle or .onnx; default: the sibling <name>-<target>-fp32 bundle")
    debug.add_argument("--top", type=int, default=15)
    debug.add_argument("--out", type=Path, default=None,
                       help="where to write the JSON report; default <bundle name>.layers.json here (never inside the bundle)")
    debug.add_argument("--json", action="store_true")
    for module in PLUGIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            COMMANDS.update(importlib.import_module(module).add_commands(sub))
    return parser


def _add_build(sub: Any) -> None:
    build = sub.add_parser("build", help="compile a model into a bundle", epilog=EXIT_CODES_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("source", help="model.onnx, model.pt2, path/to/file.py:factory or package.module:factory")
    build.add_argument("--target", default="onnx", help="deployment target (see 'edgec targets'); default onnx")
    build.add_argument("--precision", default="fp32", help="fp32, fp16 or int8; default fp32")
    build.add_argument("--out", type=Path, default=Path("bundles"), help="output directory; default ./bundles")
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
    build.add_argument("--int8-mode", default="auto", help="auto, static or dynamic; default auto")
    build.add_argument("--no-simplify", action="store_true", help="skip the onnxslim clean-up")
    build.add_argument("--golden-samples", type=int, default=8, help="golden inputs stored in the bundle; default 8")
    build.add_argument("--min-cosine", type=float, help="fail when an output's cosine to FP32 is below this")
    build.add_argument("--require-speedup", type=float, nargs="?", const=1.0, metavar="FACTOR",
                       help="fail (exit 7, no bundle written) unless the quantized bundle's p50 latency on this host "
                            "beats its fp32 sibling's by more than FACTOR (default 1.0)")
    build.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the target (repeatable; 'edgec targets' lists them)")
    build.add_argument("--palettize", choices=["4", "6", "8"], help="coreml: palettized weights with 2^N colours (= --target-option palettize=N)")
    build.add_argument("--io-dtype", choices=["float", "int8"], help="tflite full-integer INT8: model input/output type (= --target-option io_dtype=...)")
    build.add_argument("--trt-profile", action="append", default=[], metavar="NAME:MIN,OPT,MAX",
                       help="tensorrt optimization profile of a dynamic input, shapes as 1x3x224x224 (repeatable)")
    build.add_argument("--prune", type=float, metavar="RATIO",
                       help="remove this fraction of channels (structured) or weights (unstructured); PyTorch sources only")
    build.add_argument("--prune-mode", default="structured", help="structured (default) or unstructured")
    build.add_argument("--finetune", metavar="MODULE:FUNCTION", help="finetune(module) -> module, run after pruning")
    build.add_argument("--report-layers", action="store_true", help="write a per-layer divergence report (layers.json) into the bundle")
    build.add_argument("--max-drop", type=float, help="accuracy budget, e.g. 0.01: keep the most sensitive layers in float until met")
    build.add_argument("--metric", default="top1", help="what --max-drop measures: top1 (agreement with FP32), cosine, or accuracy (needs --eval)")
    build.add_argument("--max-float-layers", type=int, help="with --max-drop: keep at most N layers in float (default 16)")
    build.add_argument("--eval", type=Path, help=".npz of model inputs plus 'labels' for --metric accuracy")
    build.add_argument("--force", action="store_true", help="replace an existing bundle")
    build.add_argument("--no-cache", action="store_true", help="do not read or write the stage cache")
    build.add_argument("--cache-dir", type=Path, help="stage cache directory; default $EDGEC_CACHE_DIR or ~/.cache/edgec")
    build.add_argument("-v", "--verbose", action="store_true", help="progress messages even when not on a terminal")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def _config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from edgec.compiler.config import BuildConfig, parse_input_shape, parse_target_option

    shapes = dict(parse_input_shape(text) for text in args.input)
    options = [parse_target_option(text) for text in args.target_option]
    options += [("palettize", args.palettize)] if args.palettize else []
    options += [("io_dtype", args.io_dtype)] if args.io_dtype else []
    options += [("trt_profile", text) for text in args.trt_profile]
    fields = {
        "source": args.source, "target": args.target, "precision": args.precision, "out": args.out,
        "name": args.name, "calib": args.calib, "calib_samples": args.calib_samples, "calib_max_mb": args.calib_max_mb,
        "calib_method": args.calib_method, "calib_preprocess": args.calib_preprocess, "input_shapes": shapes,
        "input_max_mb": args.input_max_mb,
        "int8_mode": args.int8_mode, "simplify": not args.no_simplify, "golden_samples": args.golden_samples,
        "min_cosine": args.min_cosine, "target_options": tuple(options), "prune": args.prune, "prune_mode": args.prune_mode, "finetune": args.finetune,
        "report_layers": args.report_layers, "max_drop": args.max_drop,
        "metric": args.metric, "max_float_layers": args.max_float_layers, "eval": args.eval, "force": args.force, "cache": not args.no_cache, "cache_dir": args.cache_dir,
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
    from edgec.compiler.pipeline import build
    from edgec.compiler.progress import Reporter

    config = _config(args)
    reporter = Reporter(False if args.quiet else (True if args.verbose else None))
    gate = None
    if args.require_speedup is not None:
        from edgec.benchmarks.bench import speedup_gate

        gate = speedup_gate(config, args.require_speedup, reporter)
    try:
        outcome = build(config, reporter, before_publish=gate)
    finally:
        reporter.close()
    m = outcome.manifest
    print(f"built {outcome.bundle_dir} ({m.target}, {m.precision}, model {m.model_bytes():,} bytes)")
    if not m.parity.get("measured", True):
        print(f"  parity not measured: {m.parity.get('reason')}")
    for name, metrics in m.parity.get("outputs", {}).items():
        extra = f", top1 agreement {metrics['top1_agreement']:.4f}" if "top1_agreement" in metrics else ""
        print(f"  parity {name}: cosine {metrics['cosine']:.6f}, max_abs {metrics['max_abs']:.3g}{extra}")
    if outcome.mixed_precision_cost:
        mp, cost = m.model_extra["mixed_precision"], outcome.mixed_precision_cost  # type: ignore[index]
        print(f"  mixed precision: {mp['metric']} {mp['value']:.4f} vs fp32 {mp['fp32']:.4f} (drop {mp['drop']:.4f} <= {mp['max_drop']}); "
              f"{len(mp['float_layers'])} layer{'' if len(mp['float_layers']) == 1 else 's'} kept in float: "
              f"{', '.join(mp['float_layers']) or 'none'}")
        print(f"  cost: size {cost['size']:,} vs {cost['size_all_quantized']:,} bytes all-quantized; "
              f"latency {cost['latency_ms']:.3f} vs {cost['latency_ms_all_quantized']:.3f} ms (batch 1, this host)")
    report = (m.model_extra or {}).get("layer_report")
    if report:
        print(f"  layer report: {outcome.bundle_dir / 'layers.json'} (worst: {', '.join(report['worst'])})")
    return 0


def cmd_debug(args: argparse.Namespace) -> int:
    from edgec.compiler.debug import debug_bundle

    layers, path = debug_bundle(args.bundle, args.reference, args.out)
    if args.json:
        print(json.dumps([d.to_json() for d in layers], indent=2))
    else:
        from edgec.compiler.fidelity import format_report

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
            worst = min(m["cosine"] for m in report.measured.values())
            print(f"ok {bundle}: {report.files_checked} files match, parity within tolerance (min cosine {worst:.6f})")
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.compiler.inspection import format_text, inspect_path

    info = inspect_path(args.path)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_text(info))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgec.core.errors import MissingDependencyError
    from edgec.targets.base import TARGETS

    for cls in TARGETS.all():
        try:
            cls().check_available()
            state = "ready"
        except MissingDependencyError as exc:
            state = f"not installed (pip install 'edgec[{exc.extra}]')"
        print(f"{cls.name:10s} precisions {','.join(cls.precisions):16s} routes {','.join(cls.routes):22s} {state}")
        for key, text in sorted(cls.option_help.items()):
            print(f"{'':10s}   --target-option {key}=...  {text}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "verify": cmd_verify, "inspect": cmd_inspect, "targets": cmd_targets, "debug": cmd_debug,
}
PLUGIN_MODULES: list[str] = ["edgec.benchmarks.cli", "edgec.cloud_sync.cli", "edgec.cloud_sync.serving.cli"]
"""Modules of higher rooms (benchmarks, cloud_sync) that add subcommands: each has
``add_commands(subparsers) -> {name: handler}`` and keeps heavy imports inside the handlers."""


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
    except Exception:
        traceback.print_exc()
        print(f"edgec: internal error (a bug in edgec {__version__}); please report the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
