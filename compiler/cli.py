"""The ``edgec`` command line (click). Validates input at the boundary and maps errors to exit codes.

Exit codes: 0 ok, 1 internal error (a bug, with traceback), 2 configuration, 3 missing dependency,
4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity, 9 sync (store or network).
A matrix build (several targets or precisions, ``-f RECIPE``) exits 0 when every cell was built, else with the
code of the first failed cell in its summary table (see :mod:`edgec.compiler.matrix_cli`). A usage error is
one line, ``edgec: config error: <what was wrong> (see 'edgec build --help')``, exit 2.

A reader that goes away (``edgec inspect m.onnx --json | head -c 10``) changes nothing but where the rest
of the output goes: the command runs to its end and exits with its own code, with nothing added on stderr
(see :class:`edgec.core.cli_kit.ClosedPipeSafe`). Unlike git (killed by SIGPIPE, exit 141),
``edgec verify a b | head -1`` still verifies ``b`` and its exit code still says whether it passed.

Shell completion is click's: ``eval "$(_EDGEC_COMPLETE=bash_source edgec)"`` in ``~/.bashrc`` (``zsh_source``
for zsh, ``fish_source`` for fish); ``--target`` completes target names and ``--precision`` precisions.

Commands of higher rooms (benchmarks, cloud_sync) come from plugin modules named in :data:`PLUGIN_MODULES`
and are loaded only when installed, so ``edgec --help`` works with the core alone.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edgec.compiler import __version__
from edgec.compiler.build_options import PATH, build_params
from edgec.core.cli_kit import Argument, Group, Option, command, parse_only, run
from edgec.core.errors import EXIT_CONFIG, ConfigError

EXIT_CODES_HELP = """exit codes:
  0 ok, 1 internal error (a bug: please report the traceback), 2 configuration, 3 missing dependency,
  4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity, 9 sync (store or network)"""

MATRIX_EXIT_HELP = """
  a matrix (several targets or precisions, or -f RECIPE) builds every cell it can and exits 0 when all were
  built, else with the code of the first failed cell in its summary table (targets in order, precisions in order)"""

SECTION = "Build and inspect"
"""The help heading of the compiler's commands; a plugin names its own (``SECTION``)."""


def cli() -> Group:
    """The ``edgec`` group: the compiler's commands, then those of the installed plugins (:data:`PLUGIN_MODULES`).

    Fills :data:`COMMANDS` and :data:`BUILD_PLUGINS`.
    """
    version = Option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                     help="Show the version and exit.")
    group = Group("edgec", help="Compile trained models into verified edge bundles.", epilog=EXIT_CODES_HELP,
                  dest="command", required=None, callback=_no_command, params=[version])
    plugins = _plugins()
    build_options = [option for module in BUILD_PLUGINS for option in plugins[module].build_options()]
    for cmd in (command("build", cmd_build, build_params(build_options), help="compile a model into a bundle",
                        epilog=EXIT_CODES_HELP + MATRIX_EXIT_HELP), *_inspect_commands(), _recipe_group()):
        group.add_command(cmd, section=SECTION)
    from edgec.compiler import cache_cli

    for cmd in cache_cli.commands():
        group.add_command(cmd, section=SECTION)
    for plugin in plugins.values():
        for cmd in plugin.commands():
            group.add_command(cmd, section=getattr(plugin, "SECTION", None))
    COMMANDS.clear()
    COMMANDS.update({name: cmd.handler for name, cmd in group.commands.items() if hasattr(cmd, "handler")})
    return group


def _plugins() -> dict[str, Any]:
    """The installed plugin modules, by name; those that add ``edgec build`` options go into :data:`BUILD_PLUGINS`."""
    plugins = {}
    BUILD_PLUGINS.clear()
    for module in PLUGIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            plugins[module] = importlib.import_module(module)
            if hasattr(plugins[module], "build_options"):
                BUILD_PLUGINS[module] = plugins[module]
    return plugins


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"edgec {__version__}")
        ctx.exit(0)


def _no_command() -> int | None:
    """``edgec`` alone prints the help and exits 2 (a command is needed)."""
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        return None
    click.echo(ctx.get_help())
    return EXIT_CONFIG


def _inspect_commands() -> list[click.Command]:
    return [
        command("verify", cmd_verify, [Argument("bundle", type=PATH, nargs=-1, required=True),
                                       Option("--threads", type=int),
                                       _json("print the measured parity as JSON")],
                help="check a bundle's file hashes and golden-output parity"),
        command("inspect", cmd_inspect, [Argument("path", type=PATH), _json()],
                help="show inputs, outputs, ops, size and precision of a model or bundle"),
        command("targets", cmd_targets, [_json("print the targets and what each lacks as JSON")],
                help="list targets, their precisions and whether what they need is installed"),
        command("debug", cmd_debug, [
            Argument("bundle", type=PATH),
            Option("--reference", type=PATH, help="FP32 bundle or .onnx; default: the sibling <name>-<target>-fp32 bundle"),
            Option("--top", type=int, default=15),
            Option("--out", type=PATH, default=None,
                   help="where to write the JSON report; default <bundle name>.layers.json here (never inside the bundle)"),
            _json()], help="rank the layers of a quantized bundle by the error they add versus FP32"),
    ]


def _json(text: str | None = None) -> Option:
    return Option("--json", is_flag=True, default=False, help=text)


def _recipe_group() -> Group:
    group = Group("recipe", dest="recipe_command",
                  help="recipe files for 'edgec build -f': print their JSON Schema, or check one")
    group.add_command(command("schema", cmd_recipe, [], help="print the JSON Schema of recipe files (for editors)"))
    group.add_command(command("check", cmd_recipe, [Argument("file", type=PATH)], help="validate a recipe without building"))
    return group


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """What a command's handler gets for ``edgec ARGV``, without running it (``parse_args(["bench", ...])``).

    Raises:
        click.ClickException: a command line ``edgec`` would refuse.
    """
    return parse_only(cli(), "edgec", argv)


class _Parser:
    """``_parser().parse_args(argv)``, as with the argparse parser this CLI had."""

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        return parse_args(argv)


def _parser() -> _Parser:
    return _Parser()


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
        return matrix_cli.run(args, _config, _target_option_pairs(args), list(BUILD_PLUGINS), COMMANDS, parse_args)
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
        tried = ", ".join(f"{method} {value:.4f}" for method, value in mp.calibrations)
        calibrated = f"; calibration {mp.calibration} (all layers quantized: {tried})" if mp.calibration else ""
        print(f"  search: {mp.builds} candidate builds, measured on {mp.samples} {mp.measured_on} samples{calibrated}")
        if mp.variant:
            lists = ", ".join(f"{variant} {value:.4f}" for variant, value in mp.variants)
            print(f"  built with {mp.variant} (all layers quantized: {lists})")
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
"""The handler of each command (``edgec build -f`` runs a recipe's ``bench`` and ``publish`` through them)."""
PLUGIN_MODULES: list[str] = ["edgec.benchmarks.cli", "edgec.cloud_sync.cli", "edgec.cloud_sync.serving.cli"]
"""Modules of higher rooms (benchmarks, cloud_sync) that add commands, imported only when installed. A plugin has
``commands() -> [click.Command]`` (made with :func:`edgec.core.cli_kit.command`; heavy imports stay inside the
handlers) and may name its help section (``SECTION``). It may also add options to ``edgec build``:
``build_options() -> [click.Option]``, and ``build_checks(args, config, log, build_sibling) ->
[check(staging_dir, manifest)]``, checks the build runs on the staged bundle before publishing it
(``--require-speedup``). The compiler never imports them by name."""
BUILD_PLUGINS: dict[str, Any] = {}
"""The plugins that add ``edgec build`` options, by module name."""


def _all_checks(checks: list[Callable[[Path, Any], None]]) -> Callable[[Path, Any], None]:
    """One ``before_publish`` callback running ``checks`` in order."""
    def run_all(staging: Path, manifest: Any) -> None:
        for check in checks:
            check(staging, manifest)

    return run_all


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgec`` console script; returns the exit code.

    A closed stdout or stderr pipe does not stop the command or change its exit code (see the module docstring).
    """
    return run(cli(), argv, __version__)


if __name__ == "__main__":
    sys.exit(main())
