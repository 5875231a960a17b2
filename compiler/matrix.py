"""Matrix builds: one source for many targets and precisions, sharing the work that does not depend on them.

``edgec build SOURCE --target onnx,openvino,tflite --precision fp32,int8`` and a recipe's models
(:mod:`edgec.compiler.recipe`) build every *cell* (model x target x precision), in table order: models in
order, each with its targets in the order given, each target with its precisions in order.

Rules:
1. Everything is checked before any source is imported: targets, precisions and each target's options
   (a configuration error stops the whole matrix, exit 2), ``--out``, and existing bundles (all of them named
   in one line). A cell the target cannot build (a precision it does not offer, an impossible option
   combination: unsupported, exit 4) or whose toolchain is not installed (exit 3) is marked failed there, and
   the other cells go on.
2. Each model's source is imported once. The conversion and clean-up passes run once per (route, ONNX
   rewrites) of its targets; the calibration data is loaded once and the FP32 reference outputs computed once
   for all float models that take the same inputs (:class:`Shared`). Each cell then runs only its own
   precision passes, export and parity check (:meth:`Build.finish`).
3. A failing cell is reported with its exit family and the others are still built and written. The exit code
   (:func:`exit_code`) is 0 when every cell was built, else that of the first failed cell in table order.
4. With ``jobs > 1`` the cells of a model are finished in that many worker processes, started with ``spawn``
   (no runtime is forked with live threads), all cells of one target in one worker (its toolchain is
   imported once; with more jobs than targets, a target's cells are split over several). The parent imports and prepares, target after target, while the workers finish the
   targets already prepared; a worker gets each cell's :class:`Prepared` (its models are files in the stage
   cache or the build's scratch folder, which outlive the workers; its arrays travel pickled) and writes
   the bundles itself.
5. Where the cells are finished is an :class:`Executor`: :class:`LocalExecutor` (this process, or ``jobs``
   worker processes: rule 4), or one named in :data:`EXECUTOR_MODULES` and loaded by name
   (``--executor ray``: every cell a Ray task, bundles and the stage cache in a store; see
   ``edgec.cloud_sync.farm``). Planning (rule 1), the shared stages (rule 2), the results and the exit code
   (rule 3) are the same whichever runs the cells.
"""

from __future__ import annotations

import importlib
import multiprocessing
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler import outdir
from edgec.compiler.cache import RemoteEntries, StageCache, default_cache_dir
from edgec.compiler.config import BuildConfig
from edgec.compiler.golden import GoldenSet
from edgec.compiler.importers.base import Importer, ImportResult, find_importer
from edgec.compiler.pipeline import Build, BuildOutcome, Prepared, PublishCheck, get_target
from edgec.compiler.planner import conversion_steps, graph_shapes
from edgec.core.errors import EXIT_INTERNAL, ConfigError, EdgecError, brief
from edgec.core.types import ModelArtifact, TensorSpec
from edgec.targets.base import PrecisionRequest, Target

Log = Callable[[str], None]
CheckFactory = Callable[[BuildConfig, Log], PublishCheck | None]
"""``checks(cell_config, log)``: the ``before_publish`` check of one cell (``--require-speedup``), or None.
It must pickle (a module-level function, or a ``functools.partial`` of one) to run in worker processes."""
BUILT, FAILED = "built", "failed"
CELL_FIELDS = frozenset({"target", "precision", "target_options", "max_drop", "report_layers"})
"""The only fields in which the cells of one model may differ (``max_drop``/``report_layers``: fp32 cells
drop them, since they compare a quantized model with fp32)."""


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class CellResult:
    """One cell of the summary (``edgec build --json`` prints a list of these).

    Args:
        model: the model's bundle name.
        target: the target.
        precision: the precision.
        status: ``built`` or ``failed``.
        exit_code: 0, or the exit code of the failure's family.
        family: the failure's family (``unsupported``, ``export error``, ...); None when built.
        error: the failure's one-line message (with its hint); None when built.
        bundle: the bundle folder; None when failed.
        size: bytes of the model files; None when failed.
        parity: ``{"measured": bool, "min_cosine": float | None}``; None when failed.
        seconds: wall time of the cell's own stages (the shared ones count for the first cell that needed them).
        warnings: what the user should know about the built bundle.
    """

    model: str
    target: str
    precision: str
    status: str
    exit_code: int = 0
    family: str | None = None
    error: str | None = None
    bundle: str | None = None
    size: int | None = None
    parity: dict[str, Any] | None = None
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The result as JSON."""
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


def exit_code(results: Sequence[CellResult]) -> int:
    """0 when every cell was built, else the exit code of the first failed cell in table order (rule 3)."""
    return next((r.exit_code for r in results if r.status != BUILT), 0)


def failed(model: str, config: BuildConfig, exc: EdgecError, seconds: float = 0.0) -> CellResult:
    """The result of a cell that failed with ``exc``."""
    message = exc.one_line().removeprefix(f"edgec: {exc.family}: ")
    return CellResult(model, config.target, config.precision, FAILED, exc.exit_code, exc.family, message, seconds=seconds)


def built(model: str, outcome: BuildOutcome, seconds: float) -> CellResult:
    """The result of a cell whose bundle was written."""
    manifest = outcome.manifest
    cosines = [m["cosine"] for m in manifest.parity.get("outputs", {}).values() if "cosine" in m]
    parity = {"measured": bool(manifest.parity.get("measured", True)), "min_cosine": min(cosines, default=None)}
    return CellResult(model, manifest.target, manifest.precision, BUILT, bundle=str(outcome.bundle_dir),
                      size=manifest.model_bytes(), parity=parity, seconds=round(seconds, 3), warnings=outcome.warnings)


class Shared:
    """What the cells of one model share (rule 2), each piece made the first time a cell asks for it.

    A failure is kept and raised again to every cell that asks for the same piece, so a broken import or
    conversion is attempted once and reported on each cell that needed it.

    Args:
        proto: the configuration the shared stages run with: a quantized cell's when the model has one (its
            ``--max-drop`` holds calibration samples out), else the first cell's.
    """

    def __init__(self, proto: BuildConfig) -> None:
        self.proto = proto
        self.made: dict[tuple[Any, ...], tuple[bool, Any]] = {}

    def once(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for, its value (or its exception) afterwards."""
        if key not in self.made:
            try:
                self.made[key] = (True, make())
            except Exception as exc:
                self.made[key] = (False, exc)
        ok, value = self.made[key]
        if not ok:
            raise value
        return value


def _specs(specs: tuple[TensorSpec, ...]) -> str:
    return repr([s.to_json() for s in specs])


class CellBuild(Build):
    """A :class:`Build` of one cell whose import, calibration set and golden set come from its model's
    :class:`Shared`, and whose :meth:`prepared` is shared by every cell with the same route and rewrites.

    Args:
        shared: the model's shared pieces; the other arguments are :class:`Build`'s.
    """

    def __init__(self, config: BuildConfig, target: Target, importer: Importer, cache: StageCache, log: Log,
                 shared: Shared) -> None:
        super().__init__(config, target, importer, cache, log)
        self.shared = shared

    def import_source(self) -> ImportResult:
        """The model's one import."""
        return self.shared.once(("import",), super().import_source)  # type: ignore[no-any-return]

    def calibrate(self, artifact: ModelArtifact, *args: Any, **kwargs: Any) -> CalibrationSet | None:
        """The calibration set, loaded once for every float model with these inputs."""
        return self.shared.once(("calibrate", _specs(artifact.inputs)),  # type: ignore[no-any-return]
                                lambda: Build.calibrate(self, artifact, *args, **kwargs))

    def golden(self, imported: ImportResult, source_art: ModelArtifact, float_art: ModelArtifact,
               calibration: CalibrationSet | None, *args: Any, **kwargs: Any) -> GoldenSet:
        """The golden set, its reference outputs computed once for every float model with these inputs."""
        key = ("golden", str(source_art.path), _specs(float_art.inputs), calibration.digest if calibration else None,
               self.target.dynamic_shapes)  # a target that keeps dynamic dims adds golden inputs at a second size
        return self.shared.once(key, lambda: Build.golden(self, imported, source_art, float_art, calibration,  # type: ignore[no-any-return]
                                                          *args, **kwargs))

    def prepared(self) -> Prepared:
        """The stages before the precision, run once per (route, ONNX rewrites) with the model's shared config.

        Raises:
            EdgecError: importing, converting, calibrating or the reference failed.
        """
        imported = self.import_source()
        route, _ = conversion_steps(imported.artifact.format, self.target.routes, self.target.name,
                                    bool(graph_shapes(self.config)))
        config = self.shared.proto.model_copy(update={"target": self.config.target, "target_options": self.config.target_options})
        preparer = CellBuild(config, self.target, self.importer, self.cache, self.log, self.shared)
        return self.shared.once(("prepare", route, self.target.onnx_rewrites, self.target.dynamic_shapes),  # type: ignore[no-any-return]
                                lambda: preparer.prepare(imported))


@dataclass
class Cell:
    """One planned cell: its build, its bundle folder, or why it cannot be built here (rule 1)."""

    model: str
    build: CellBuild
    final: Path | None = None
    failure: CellResult | None = None


@dataclass
class Plan:
    """Every model's cells, checked; the folders created for ``--out`` (removed when nothing is built)."""

    models: list[list[Cell]]
    created: dict[Path, Path | None] = field(default_factory=dict)

    def remove_created(self) -> None:
        """Remove the ``--out`` folders the plan created, where they are still empty."""
        for out, created in self.created.items():
            outdir.remove_created(out, created)


def plan(models: Sequence[Sequence[BuildConfig]], cache: StageCache, log: Log = _quiet,
         claim: Callable[[Plan], None] | None = None) -> Plan:
    """Check every cell before anything is imported (rule 1).

    Args:
        claim: the executor's own check of the outputs (bundles that exist in its store), after the folders'.

    Raises:
        ConfigError: a bad option or combination of a cell, an unusable ``--out``, two cells writing one
            bundle, or bundles that exist (without ``--force``); nothing has been imported or left behind then.
        EdgecError: what ``claim`` raised (a store that cannot be reached: exit 9).
    """
    result = Plan([])
    for configs in models:
        if not configs:
            raise ConfigError("a model with no targets or precisions to build")
        _check_same_model(configs)
        shared = Shared(next((c for c in configs if c.precision != "fp32"), configs[0]))
        result.models.append([_check_cell(config, shared, cache, log) for config in configs])
    try:
        for cell in (c for cells in result.models for c in cells):
            out = cell.build.config.out
            if out not in result.created:
                result.created[out] = outdir.prepare(out)
        _claim_outputs(result)
        if claim is not None:
            claim(result)
    except BaseException:
        result.remove_created()
        raise
    return result


def _check_same_model(configs: Sequence[BuildConfig]) -> None:
    base = configs[0].model_dump(exclude=set(CELL_FIELDS))
    for config in configs[1:]:
        if config.model_dump(exclude=set(CELL_FIELDS)) != base:
            raise ValueError(f"cells of one model differ beyond {sorted(CELL_FIELDS)}: {configs[0]} vs {config}")


def _check_cell(config: BuildConfig, shared: Shared, cache: StageCache, log: Log) -> Cell:
    """Rule 1 for one cell: a configuration error is raised, any other failure marks the cell."""
    target = get_target(config.target)
    build = CellBuild(config, target, find_importer(config.source), cache,
                      _prefixed(log, f"{config.target} {config.precision}: "), shared)
    model = build.bundle_name()
    try:
        target.validate(PrecisionRequest(config.precision, config.int8_mode, options=config.target_options))
        target.check_available()
    except ConfigError:
        raise
    except EdgecError as exc:
        return Cell(model, build, failure=failed(model, config, exc))
    return Cell(model, build)


def _claim_outputs(result: Plan) -> None:
    """Each buildable cell's bundle folder; one error naming every bundle that exists or that two cells share."""
    existing: list[str] = []
    seen: dict[Path, str] = {}
    for cell in (c for cells in result.models for c in cells if c.failure is None):
        final = cell.build.output_dir()
        if final in seen:
            raise ConfigError(f"two cells would write {final} ({seen[final]} and {cell.model}); give the models different names")
        seen[final] = cell.model
        try:
            cell.final = cell.build.claim_output()
        except ConfigError:
            existing.append(str(final))
    if len(existing) > 1:
        raise ConfigError(f"output bundles already exist: {', '.join(existing)}",
                          hint="remove them, pick another --out, or pass --force")
    if existing:
        raise ConfigError(f"output bundle {existing[0]} already exists", hint="remove it, pick another --out, or pass --force")


def _prefixed(log: Log, prefix: str) -> Log:
    return lambda message: log(prefix + message)


def build_matrix(models: Sequence[Sequence[BuildConfig]], log: Log = _quiet, jobs: int = 1,
                 checks: CheckFactory | None = None, executor: Executor | None = None) -> list[CellResult]:
    """Build every cell of every model (rules 1-5).

    Args:
        models: per model, one configuration per cell, in table order; the cells of a model differ only in
            :data:`CELL_FIELDS`.
        log: progress messages.
        jobs: worker processes finishing cells (1: all in this process); used when ``executor`` is None.
        checks: the ``before_publish`` check of each cell, if any (see :data:`CheckFactory`).
        executor: where the cells are finished; default ``LocalExecutor(jobs)``. It is closed at the end.

    Returns:
        One result per cell, in table order.

    Raises:
        ConfigError: see :func:`plan`; nothing has been imported or written then.
    """
    if not models or not models[0]:
        raise ConfigError("nothing to build: no model has a target and precision")
    executor = executor if executor is not None else LocalExecutor(jobs)
    first = models[0][0]
    cache = StageCache(first.cache_dir or default_cache_dir(), enabled=first.cache,
                       scratch=Path(tempfile.mkdtemp(prefix="edgec-")), remote=executor.cache_remote)
    results: list[CellResult] = []
    try:
        matrix = plan(models, cache, log, executor.claim)
        try:
            results = [r for rows in executor.run(matrix.models, checks, log) for r in rows]
        finally:
            if not any(r.status == BUILT for r in results):
                matrix.remove_created()
        return results
    finally:
        executor.close()
        shutil.rmtree(cache.scratch or "", ignore_errors=True)


@dataclass(frozen=True)
class ExecutorOptions:
    """How ``edgec build`` runs the cells (``--executor``, ``--address``, ``--out URL``, ``--cache-store``).

    Args:
        name: ``local`` or a name in :data:`EXECUTOR_MODULES`.
        jobs: local worker processes.
        address: where the executor's cluster is (Ray: ``host:6379`` or ``ray://host:10001``); None: its default.
        out_url: a store URL the bundles are uploaded to instead of the ``--out`` folder.
        cache_url: a store URL holding the stage cache the workers share.
    """

    name: str = "local"
    jobs: int = 1
    address: str | None = None
    out_url: str | None = None
    cache_url: str | None = None


class Executor(Protocol):
    """Where the cells of a matrix are finished (rule 5)."""

    cache_remote: RemoteEntries | None
    """The second level of this build's stage cache (a store the workers share), or None."""

    def claim(self, plan: Plan) -> None:
        """Check the outputs the executor owns (bundles in its store) before anything is imported.

        Raises:
            ConfigError: bundles exist there (without ``--force``).
        """

    def run(self, models: list[list[Cell]], checks: CheckFactory | None, log: Log) -> list[list[CellResult]]:
        """Prepare (rule 2) and finish every planned cell; per model, one result per cell in table order."""

    def close(self) -> None:
        """Release what the executor holds (a cluster connection it opened)."""


EXECUTOR_MODULES = {"ray": "edgec.cloud_sync.farm"}
"""Executors of higher rooms, loaded by module name (no import edge): each module has
``executor(options: ExecutorOptions) -> Executor``, which checks what it needs before anything is imported."""


def open_executor(options: ExecutorOptions) -> Executor:
    """The executor ``options`` name, checked and connected.

    Raises:
        ConfigError: an unknown executor, or options the local one does not take.
        MissingDependencyError: the executor's extra is not installed.
    """
    if options.name == "local":
        given = [flag for flag, value in (("--address", options.address), ("a store URL as --out", options.out_url),
                                          ("--cache-store", options.cache_url)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} needs --executor ray", hint="add --executor ray, or leave them out")
        return LocalExecutor(options.jobs)
    module = EXECUTOR_MODULES.get(options.name)
    if module is None:
        raise ConfigError(f"unknown executor {options.name!r}; expected local or {', '.join(EXECUTOR_MODULES)}")
    return importlib.import_module(module).executor(options)  # type: ignore[no-any-return]


@dataclass
class LocalExecutor:
    """This process (``jobs == 1``), or ``jobs`` worker processes (rule 4)."""

    jobs: int = 1
    cache_remote: RemoteEntries | None = None

    def claim(self, plan: Plan) -> None:
        """Nothing beyond the folders :func:`plan` checked."""

    def run(self, models: list[list[Cell]], checks: CheckFactory | None, log: Log) -> list[list[CellResult]]:
        """Each model's cells in turn."""
        return [_run_parallel(cells, self.jobs, checks, log) if self.jobs > 1 else [_run_cell(c, checks) for c in cells]
                for cells in models]

    def close(self) -> None:
        """Nothing to release."""


def _run_cell(cell: Cell, checks: CheckFactory | None) -> CellResult:
    if cell.failure is not None:
        return cell.failure
    assert cell.final is not None
    build = cell.build
    build.log("building")
    return finish_cell(cell.model, build, build.prepared, cell.final, checks)


def finish_cell(model: str, build: Build, prepared: Callable[[], Prepared], final: Path,
                checks: CheckFactory | None) -> CellResult:
    """Finish one cell: its precision stages, export, parity and bundle; a failure becomes its result.

    A bug (not an :class:`EdgecError`) prints its traceback on stderr at once and fails the cell with exit 1.
    """
    start = time.perf_counter()
    try:
        check = checks(build.config, build.log) if checks is not None else None
        outcome = build.finish(prepared(), final, check)
    except EdgecError as exc:
        build.log(f"failed: {exc.one_line()}")
        return failed(model, build.config, exc, time.perf_counter() - start)
    except Exception as exc:  # a bug in edgec: reported with its traceback, and the other cells go on
        traceback.print_exc()
        return CellResult(model, build.config.target, build.config.precision, FAILED, EXIT_INTERNAL, "internal error",
                          f"{type(exc).__name__}: {brief(exc)} (a bug in edgec; traceback above)",
                          seconds=time.perf_counter() - start)
    return built(model, outcome, time.perf_counter() - start)


@dataclass(frozen=True)
class _Task:
    """What a worker process needs to finish the cells of one target (it pickles): per cell its index in
    the table, configuration, :class:`Prepared` and bundle folder."""

    model: str
    cells: tuple[tuple[int, BuildConfig, Prepared, Path], ...]
    cache_root: Path
    checks: CheckFactory | None


def _run_parallel(cells: list[Cell], jobs: int, checks: CheckFactory | None, log: Log) -> list[CellResult]:
    """Rule 4: the cells of one target go to one worker process (its toolchain is imported once; with more
    jobs than targets, a target's cells are split over several), which starts as soon as this process has
    prepared them, while it prepares the next target's; results in table order."""
    results: dict[int, CellResult] = {i: c.failure for i, c in enumerate(cells) if c.failure is not None}
    groups = _groups(cells, jobs)
    if not groups:
        return [results[i] for i in range(len(cells))]
    workers = min(jobs, len(groups))
    log(f"building {len(cells) - len(results)} cells in {workers} worker processes")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for group in groups:
            task = _task(cells, group, results, checks)
            if task.cells:
                futures[pool.submit(_finish_task, task)] = task
        for future in as_completed(futures):
            results.update(_task_results(future, futures[future], log))
    return [results[i] for i in range(len(cells))]


def _groups(cells: list[Cell], jobs: int) -> list[list[int]]:
    """The indices of the buildable cells, per target in table order; each target's split in up to
    ``jobs // targets`` groups (round robin) when there are more jobs than targets."""
    by_target: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        if cell.failure is None:
            by_target.setdefault(cell.build.config.target, []).append(index)
    split = max(1, jobs // max(1, len(by_target)))
    return [indices[i::split] for indices in by_target.values() for i in range(min(split, len(indices)))]


def _task(cells: list[Cell], group: list[int], results: dict[int, CellResult], checks: CheckFactory | None) -> _Task:
    """The cells of ``group``, prepared here; a cell whose preparation fails gets its result in ``results``."""
    ready = []
    for index in group:
        cell = cells[index]
        try:
            prepared = cell.build.prepared()
        except EdgecError as exc:
            results[index] = failed(cell.model, cell.build.config, exc)
            continue
        assert cell.final is not None
        ready.append((index, cell.build.config, prepared, cell.final))
    return _Task(cells[0].model, tuple(ready), cells[0].build.cache.root, checks)


def _task_results(future: Any, task: _Task, log: Log) -> dict[int, CellResult]:
    try:
        results: dict[int, CellResult] = future.result()
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory): its cells failed
        results = {index: CellResult(task.model, config.target, config.precision, FAILED, EXIT_INTERNAL, "internal error",
                                     f"the worker process died: {brief(exc)}") for index, config, _, _ in task.cells}
    for result in results.values():
        log(f"{result.target} {result.precision}: {result.status}")
    return results


def _finish_task(task: _Task) -> dict[int, CellResult]:
    """A worker's cells: a fresh :class:`Build` per cell finishing the parent's :class:`Prepared`, quietly."""
    results = {}
    for index, config, prepared, final in task.cells:
        cache = StageCache(task.cache_root, enabled=config.cache, scratch=Path(tempfile.mkdtemp(prefix="edgec-")))
        try:
            build = Build(config, get_target(config.target), find_importer(config.source), cache)
            results[index] = finish_cell(task.model, build, _given(prepared), final, task.checks)
        finally:
            shutil.rmtree(cache.scratch or "", ignore_errors=True)
    return results


def _given(prepared: Prepared) -> Callable[[], Prepared]:
    return lambda: prepared


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def format_table(results: Sequence[CellResult]) -> str:
    """The summary: one line per cell, then how many were built and what the exit code says."""
    head = f"{'model':16} {'target':10} {'precision':9} {'status':6} {'exit':>4} {'size':>9} {'min cosine':>10}  bundle / error"
    lines = [head, "-" * len(head)]
    for r in results:
        size = _size(r.size)
        cosine = (r.parity or {}).get("min_cosine")
        shown = f"{cosine:.6f}" if cosine is not None else ("not run" if r.parity else "-")
        tail = r.bundle if r.status == BUILT else f"{r.family}: {r.error}"
        lines.append(f"{r.model:16} {r.target:10} {r.precision:9} {r.status:6} {r.exit_code:>4} {size:>9} {shown:>10}  {tail}")
    bad = [r for r in results if r.status != BUILT]
    lines.append(f"{len(results) - len(bad)} of {len(results)} cells built"
                 + (f"; exit code {exit_code(results)}: the first failed cell's ({bad[0].family})" if bad else ""))
    return "\n".join(lines)
