"""``edgec build`` of a matrix or a recipe, and ``edgec recipe schema|check``.

A build is a *matrix* when it has several targets or precisions (``--target onnx,tflite --precision
fp32,int8``, or the flags repeated), ``-f RECIPE``, ``--jobs N`` or ``--json``; one target at one precision
without them is the plain ``edgec build`` (its output unchanged). A matrix builds every cell
(:mod:`edgec.compiler.matrix`) and prints one summary table (``--json``: a list of cells) on stdout;
it exits 0 when every cell was built, else with the exit code of the first failed cell in table order.

Options of a matrix: ``--target-option KEY=VALUE`` (and the named flags such as ``--palettize``) go to every
target of the matrix that has ``KEY``; ``--target-option TARGET.KEY=VALUE`` to that target only. An option no
target of the matrix has is a configuration error. ``--max-drop``, ``--report-layers`` and
``--require-speedup`` compare a quantized model with fp32: fp32 cells build without them.

With ``-f RECIPE`` the recipe gives the models, targets, precisions, options and gates; ``--target`` and
``--precision`` then pick among the recipe's (``edgec build -f edgec.yaml --target onnx``), and ``--out``,
``--jobs``, ``--force``, ``--json``, the cache flags and ``-q``/``-v`` apply; any other build flag is refused.
The recipe's ``bench`` and ``publish`` run ``edgec bench`` and ``edgec publish`` after every cell was built.

``--executor ray`` (recipe key ``executor: ray``) finishes every cell as a Ray task (see
``edgec.cloud_sync.farm``), on a new local Ray instance or the cluster at ``--address`` (``address``); the
bundles land in ``--out``, or, with ``--out URL`` (``out-store``), in a store the workers upload to;
``--cache-store URL`` (``cache-store``) shares the stage cache between the machines. A build with
``--executor ray`` is always a matrix (summary table, exit codes as above).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.compiler import matrix, recipe
from edgec.compiler.config import BuildConfig
from edgec.core.errors import ConfigError

MakeConfig = Callable[..., BuildConfig]
"""``make(args, options=[(key, value), ...]) -> BuildConfig``: the CLI's flags as one cell's configuration."""
QUANTIZED_ONLY = ("max_drop", "report_layers")
"""Build settings that compare a quantized model with fp32: an fp32 cell of a matrix builds without them."""
QUANTIZED_ONLY_FLAGS = ("require_speedup",)
"""Plugin flags (``edgec build --require-speedup``) that compare with fp32: fp32 cells build without them."""
RECIPE_FLAGS = {"command", "source", "file", "target", "precision", "out", "jobs", "force", "json", "no_cache",
                "cache_dir", "verbose", "quiet", "executor", "address", "cache_store"}
"""The ``edgec build`` flags that apply with ``-f RECIPE`` (any other one given is refused)."""


def is_matrix(args: argparse.Namespace) -> bool:
    """Whether ``edgec build`` runs as a matrix (see the module docstring)."""
    many = len(split(args.target, "--target")) > 1 or len(split(args.precision, "--precision")) > 1
    farm = (getattr(args, "executor", None) == "ray" or isinstance(args.out, str)  # a str --out is a store URL
            or getattr(args, "address", None) or getattr(args, "cache_store", None))
    return bool(args.file or many or args.json or (args.jobs or 1) > 1 or farm)


def split(values: Sequence[str] | None, flag: str) -> list[str]:
    """The entries of a repeatable, comma-separated flag, in order.

    Raises:
        ConfigError: an empty entry, or one given twice.
    """
    items = [item.strip() for text in values or () for item in text.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{flag} {','.join(values or ())!r} has an empty entry; expected NAME[,NAME...]")
    twice = sorted({item for item in items if items.count(item) > 1})
    if twice:
        raise ConfigError(f"{flag} lists {', '.join(twice)} more than once")
    return items


def route_options(pairs: Sequence[tuple[str, str]], targets: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Each target's ``KEY=VALUE`` pairs: ``TARGET.KEY`` to that target, ``KEY`` to every target that has it.

    With a single target every unqualified pair goes to it (its own error names a key it does not have).

    Raises:
        ConfigError: a ``TARGET.`` that is not in the matrix, or a key no target of the matrix has.
    """
    from edgec.targets.base import target_class

    routed: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    for key, value in pairs:
        owner, dot, name = key.rpartition(".")
        if dot:
            if owner not in routed:
                raise ConfigError(f"--target-option {key}={value}: {owner!r} is not a target of this build "
                                  f"({', '.join(targets)})")
            routed[owner].append((name, value))
            continue
        takers = [t for t in targets if len(targets) == 1 or key in target_class(t).Options.model_fields]
        if not takers:
            raise ConfigError(f"no target of this build ({', '.join(targets)}) has the option {key!r}",
                              hint="'edgec targets' lists each target's options")
        for target in takers:
            routed[target].append((key, value))
    return routed


def cli_models(args: argparse.Namespace, make: MakeConfig, pairs: Sequence[tuple[str, str]]) -> list[list[BuildConfig]]:
    """The one model of ``edgec build SOURCE``: a configuration per cell, targets outer, precisions inner.

    Raises:
        ConfigError: a bad target, precision, option or flag (before anything is imported).
    """
    targets = split(args.target, "--target") or ["onnx"]
    precisions = split(args.precision, "--precision") or ["fp32"]
    routed = route_options(pairs, targets)
    quantized = any(p != "fp32" for p in precisions)
    cells = []
    for target in targets:
        for precision in precisions:
            cell = argparse.Namespace(**{**vars(args), "target": target, "precision": precision})
            if precision == "fp32" and quantized:
                for name in QUANTIZED_ONLY:
                    setattr(cell, name, None if name == "max_drop" else False)
            cells.append(make(cell, options=routed[target]))
    return [cells]


@dataclass(frozen=True)
class CellChecks:
    """The ``before_publish`` checks of a cell from the build plugins (``--require-speedup``); it pickles, so
    worker processes make the checks themselves (:data:`edgec.compiler.matrix.CheckFactory`).

    Args:
        plugins: module names of the plugins that add build options.
        flags: per model (its source and name), the flags those plugins read.
    """

    plugins: tuple[str, ...]
    flags: dict[tuple[str, str | None], argparse.Namespace]

    def __call__(self, config: BuildConfig, log: Callable[[str], None]) -> Any:
        import importlib

        from edgec.compiler.pipeline import sibling_builder

        args = self.flags[(config.source, config.name)]
        if config.precision == "fp32":
            args = argparse.Namespace(**{**vars(args), **{flag: None for flag in QUANTIZED_ONLY_FLAGS}})
        checks = [check for module in self.plugins
                  for check in importlib.import_module(module).build_checks(args, config, log, sibling_builder(config, log))]
        if not checks:
            return None

        def run_all(staging: Path, manifest: Any) -> None:
            for check in checks:
                check(staging, manifest)

        return run_all


def run(args: argparse.Namespace, make: MakeConfig, pairs: Sequence[tuple[str, str]], plugins: Sequence[str],
        commands: dict[str, Callable[[argparse.Namespace], int]], parse: Callable[[list[str]], argparse.Namespace]) -> int:
    """``edgec build`` as a matrix or a recipe (see the module docstring); returns the exit code.

    Args:
        make: the CLI's flags as one cell's configuration.
        pairs: the ``--target-option`` and named-flag pairs.
        plugins: the modules that add build options and checks.
        commands: the CLI's handlers (``bench`` and ``publish`` run a recipe's last steps).
        parse: the CLI's parser (``parse(["bench", ...])``).

    Raises:
        ConfigError: bad flags, recipe or cells, before anything is imported (see :func:`matrix.plan`).
    """
    from edgec.compiler.progress import Reporter

    jobs = args.jobs
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected at least 1")
    built = _recipe(args, parse) if args.file else None
    if built is not None:
        _check_steps(built, commands)
        models = [list(m) for m in built.models]
        flags = {(m[0].source, m[0].name): argparse.Namespace(require_speedup=next((f for f in c if f), None))
                 for m, c in zip(built.models, built.checks)}
        jobs = jobs or built.recipe.jobs
    else:
        if args.source is None:
            raise ConfigError("edgec build needs a SOURCE model or -f RECIPE")
        models = cli_models(args, make, pairs)
        flags = {(models[0][0].source, models[0][0].name): args}
    options = executor_options(args, built, jobs or 1)
    if options.out_url is not None and built is not None and (built.recipe.bench or built.recipe.publish):
        raise ConfigError(f"{built.path}: bench and publish need the bundles in a folder, not in the store {options.out_url}",
                          hint="build into a folder (out), or leave bench and publish out of the recipe")
    staging = Path(tempfile.mkdtemp(prefix="edgec-farm-")) if options.out_url else None
    if staging is not None:  # bundles go to the store: the cells' folders are a driver-side placeholder
        models = [[c.model_copy(update={"out": staging}) for c in cells] for cells in models]
    reporter = Reporter(False if args.quiet else (True if args.verbose else None))
    try:
        executor = matrix.open_executor(options)
        results = matrix.build_matrix(models, reporter, jobs or 1, CellChecks(tuple(plugins), flags), executor)
    finally:
        reporter.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    _report(results, args.json)
    code = matrix.exit_code(results)
    if built is not None and code == 0:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            _after_build(built, results, commands, parse)
    elif built is not None and (built.recipe.bench or built.recipe.publish):
        print("edgec: bench and publish skipped: not every cell was built", file=sys.stderr)
    return code


def executor_options(args: argparse.Namespace, built: recipe.Built | None, jobs: int) -> matrix.ExecutorOptions:
    """``--executor``, ``--address``, ``--out URL`` and ``--cache-store``, over the recipe's keys (a plain
    path in ``out-store`` or ``cache-store`` is relative to the recipe's folder).

    Raises:
        ConfigError: ``--jobs`` with ``--executor ray`` (Ray places the cells).
    """
    spec = built.recipe if built is not None else None
    name = getattr(args, "executor", None) or (spec.executor if spec is not None else "local")
    if name == "ray" and (args.jobs or 1) > 1:
        raise ConfigError(f"--jobs {args.jobs} is for --executor local; with --executor ray, Ray places the cells on its workers")
    out_given = built is None or args.out != Path("bundles")
    out_url = args.out if isinstance(args.out, str) else None
    address, cache_url = getattr(args, "address", None), getattr(args, "cache_store", None)
    if built is not None and spec is not None:
        out_url = out_url if out_given else _url(built, spec.out_store)
        address, cache_url = address or spec.address, cache_url or _url(built, spec.cache_store)
    return matrix.ExecutorOptions(name, jobs, address, out_url, cache_url)


def _url(built: recipe.Built, value: str | None) -> str | None:
    return value if value is None or "://" in value else str(built.resolve(Path(value)))


def _recipe(args: argparse.Namespace, parse: Callable[[list[str]], argparse.Namespace]) -> recipe.Built:
    """The recipe's cells, with the flags that apply to recipes (refusing the others)."""
    if args.source is not None:
        raise ConfigError(f"give a SOURCE or -f RECIPE, not both ({args.source} and -f {args.file})")
    defaults = vars(parse(["build", "-f", str(args.file)]))
    given = sorted(k for k, v in vars(args).items() if k not in RECIPE_FLAGS and v != defaults.get(k))
    if given:
        flags = ", ".join("--" + k.removeprefix("target_flag_").replace("_", "-") for k in given)
        raise ConfigError(f"{flags} cannot be combined with -f: the recipe {args.file} sets the build",
                          hint="put it in the recipe ('edgec recipe schema' lists its keys)")
    loaded = recipe.read(args.file)
    if isinstance(args.out, Path) and args.out != defaults.get("out"):
        loaded = loaded.model_copy(update={"out": args.out.resolve()})
    return recipe.configs(args.file, loaded, force=True if args.force else None, cache=not args.no_cache,
                          cache_dir=args.cache_dir, targets=split(args.target, "--target"),
                          precisions=split(args.precision, "--precision"))


def _check_steps(built: recipe.Built, commands: dict[str, Any]) -> None:
    for step, command in (("bench", "bench"), ("publish", "publish")):
        if getattr(built.recipe, step) is not None and command not in commands:
            raise ConfigError(f"{built.path}: {step}: 'edgec {command}' is not available in this installation",
                              hint="pip install 'edgec[sync]'" if step == "publish" else None)


def _report(results: Sequence[matrix.CellResult], as_json: bool) -> None:
    for result in results:
        for warning in result.warnings:
            print(f"edgec: WARNING: {result.target} {result.precision}: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(matrix.format_table(results))


def _after_build(built: recipe.Built, results: Sequence[matrix.CellResult],
                 commands: dict[str, Callable[[argparse.Namespace], int]],
                 parse: Callable[[list[str]], argparse.Namespace]) -> None:
    """The recipe's ``bench`` (per model, with its eval data) and ``publish`` (each bundle into its channel).

    Raises:
        EdgecError: what ``edgec bench`` or ``edgec publish`` raised.
    """
    spec = built.recipe
    if spec.bench is not None:
        start = 0
        for configs, evaluation in zip(built.models, built.evals):
            cells = results[start:start + len(configs)]  # results are in table order, model by model
            start += len(configs)
            report = built.resolve(spec.bench.out) if spec.bench.out else configs[0].out / "report"
            out = report / cells[0].model if len(built.models) > 1 else report
            argv = ["bench", *(str(r.bundle) for r in cells), "--runs", str(spec.bench.runs), "--warmup",
                    str(spec.bench.warmup), "--repeats", str(spec.bench.repeats), "--out", str(out), "-q"]
            argv += ["--threads", str(spec.bench.threads)] if spec.bench.threads else []
            argv += ["--eval", str(evaluation)] if evaluation else []
            commands["bench"](parse(argv))
    if spec.publish is not None:
        publish = spec.publish
        for result in results:
            argv = ["publish", str(result.bundle), "--store", _store(built, publish.store), "--keys",
                    str(built.resolve(publish.keys)), "--channel", built.channel(result.model, result.target, result.precision),
                    "--percent", str(publish.percent)]
            commands["publish"](parse(argv))


def _store(built: recipe.Built, store: str) -> str:
    """A store URL; a plain path is relative to the recipe's folder."""
    return store if "://" in store else str(built.resolve(Path(store)))


def cmd_recipe(args: argparse.Namespace) -> int:
    """``edgec recipe schema`` (the JSON Schema of recipe files) and ``edgec recipe check FILE``."""
    if args.recipe_command == "schema":
        print(json.dumps(recipe.schema(), indent=2))
        return 0
    built = recipe.configs(args.file, recipe.read(args.file))
    cells = sum(len(m) for m in built.models)
    print(f"{args.file}: {len(built.models)} model{'s' if len(built.models) != 1 else ''}, {cells} cells: ok")
    return 0
