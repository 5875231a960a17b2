"""The build farm: ``edgec build --executor ray`` finishes every cell of a matrix as a Ray task.

Ray places and runs the tasks; there is no scheduler here. The driver (the machine running ``edgec build``)
plans the matrix and runs each model's shared stages once, exactly as a local build does
(:mod:`edgec.compiler.matrix`); then every cell goes to Ray as one task that finishes it (precision passes,
export, parity, bundle) on whichever worker Ray picks. A worker may be another machine: what it needs travels
through Ray's object store (the shared stages as a :class:`~edgec.cloud_sync.farm_store.Parcel`, put once per
model and route) or through a store URL, never through the driver's disk.

Rules:
1. Before anything is imported: Ray is installed (else exit 3 naming ``pip install 'edgec[ray]'``), the
   cluster answers and the stores open (exit 9, or 2 for a bad URL), and no cell's bundle exists in the
   output store (without ``--force``; one error naming them all, exit 2).
2. Outputs: with ``--out URL`` (``s3://``, ``gs://``, ``az://``, ``file://``) each worker uploads its bundle
   (a bundle is visible only once complete: :mod:`edgec.cloud_sync.farm_store` rule 1); with a folder, the
   bundle comes back through Ray's object store and the driver renames it into place as a local build does.
3. Stage cache: each worker keeps its own (its ``$EDGEC_CACHE_DIR``); with ``--cache-store URL`` (or
   ``$EDGEC_CACHE_STORE``) the driver and every worker share a second level in that store.
4. A failing cell is reported with its exit family (a failed upload: sync, exit 9) while the others are
   built and land; a worker that dies is retried once by Ray, then its cell fails with exit 1.
5. Workers need edgec with the extras of the targets they build (the same image as the driver).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgec.cloud_sync.farm_store import (
    Parcel,
    StoreEntries,
    bundle_exists,
    bundle_url,
    entry_unit,
    pack,
    tar_folder,
    unpack,
    untar,
    upload_bundle,
)
from edgec.cloud_sync.store import Store, open_store
from edgec.compiler import outdir
from edgec.compiler.cache import StageCache, default_cache_dir
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.base import Importer
from edgec.compiler.matrix import (
    BUILT,
    FAILED,
    Cell,
    CellResult,
    CheckFactory,
    ExecutorOptions,
    Log,
    Plan,
    failed,
    finish_cell,
)
from edgec.compiler.pipeline import Build, Prepared, get_target
from edgec.core.errors import EXIT_INTERNAL, ConfigError, EdgecError, SyncError, brief, require

RAY_EXTRA = "ray"
CACHE_STORE_ENV = "EDGEC_CACHE_STORE"
CONNECT_TIMEOUT_S = 5
TASK_RETRIES = 1
"""Ray runs a task again this many times when its worker dies (a killed node); a failing cell is not retried."""


def executor(options: ExecutorOptions) -> RayExecutor:
    """The Ray executor (``edgec.compiler.matrix.EXECUTOR_MODULES``), checked and connected (rule 1).

    Raises:
        MissingDependencyError: ray (or obstore, for store URLs) is not installed.
        ConfigError: a bad store URL.
        SyncError: the cluster or a store cannot be reached.
    """
    return RayExecutor(options)


@dataclass(frozen=True)
class Job:
    """What a worker needs to finish one cell besides its parcel (it pickles).

    Args:
        model: the model's bundle name (the summary's first column).
        config: the cell's configuration; the worker replaces ``out`` and ``cache_dir`` with its own.
        importer: the importer of the source (the worker never opens the source itself).
        bundle: the bundle folder's name.
        out_url: the store the worker uploads the bundle to; None: the bundle goes back to the driver.
        cache_url: the store holding the shared stage cache, or None.
        checks: the cell's ``before_publish`` check factory, if any.
    """

    model: str
    config: BuildConfig
    importer: Importer
    bundle: str
    out_url: str | None
    cache_url: str | None
    checks: CheckFactory | None


@dataclass(frozen=True)
class Returned:
    """A task's answer: the cell's result and, when the driver writes the bundle, the bundle as tar bytes."""

    result: CellResult
    bundle: bytes | None = None


class RayExecutor:
    """Cells as Ray tasks (see the module docstring).

    Args:
        options: ``--address``, ``--out URL`` and ``--cache-store``.
    """

    def __init__(self, options: ExecutorOptions) -> None:
        self.ray = require("ray", RAY_EXTRA, "edgec build --executor ray")
        self.options = options
        self.out_store: Store | None = open_store(options.out_url) if options.out_url else None
        self.cache_url = options.cache_url or os.environ.get(CACHE_STORE_ENV) or None
        self.cache_remote = StoreEntries(open_store(self.cache_url)) if self.cache_url else None
        self.started = self._connect(options.address)

    def _connect(self, address: str | None) -> bool:
        """Join the running Ray instance, the cluster at ``address`` ($RAY_ADDRESS), or start a local one;
        True when this executor started the connection (and so ends it)."""
        ray = self.ray
        if ray.is_initialized():  # the caller's instance (a test, a notebook)
            return False
        given = address or os.environ.get("RAY_ADDRESS")
        if given and given not in ("auto", "local"):
            _probe(given)  # ray.init retries an address that does not answer for minutes
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            raise SyncError(f"cannot reach the Ray cluster at {where}: {brief(exc, 200)}",
                            hint="check --address (host:6379 after 'ray start --head', or ray://host:10001)") from None
        return True

    def claim(self, plan: Plan) -> None:
        """No cell's bundle exists in the output store, unless it is built with ``--force`` (rule 1).

        Raises:
            ConfigError: bundles exist there, all named.
            StoreUnavailable: the store failed.
        """
        store = self.out_store
        if store is None:
            return
        cells = [c for cells in plan.models for c in cells if c.failure is None and c.final is not None]
        existing = [bundle_url(store, c.final.name) for c in cells
                    if c.final is not None and not c.build.config.force and bundle_exists(store, c.final.name)]
        if existing:
            many = len(existing) > 1
            raise ConfigError(f"output bundle{'s' if many else ''} already exist{'' if many else 's'}: {', '.join(existing)}",
                              hint="remove them, pick another --out, or pass --force")

    def run(self, models: list[list[Cell]], checks: CheckFactory | None, log: Log) -> list[list[CellResult]]:
        """Prepare each model's shared stages here, send every cell to Ray as soon as its stages are ready,
        and collect the results as they come; per model, in table order."""
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(finish_remote)
        results: list[dict[int, CellResult]] = []
        pending: dict[Any, tuple[int, int, Cell]] = {}
        try:
            for number, cells in enumerate(models):
                results.append({i: c.failure for i, c in enumerate(cells) if c.failure is not None})
                for index, ref in self._submit(cells, results[-1], checks, task):
                    pending[ref] = (number, index, cells[index])
            log(f"{len(pending)} cells sent to Ray ({_resources(ray)})")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                number, index, cell = pending.pop(ready[0])
                results[number][index] = self._collect(ready[0], cell, log)
        finally:
            for ref in pending:
                ray.cancel(ref)
        return [[done[i] for i in range(len(cells))] for done, cells in zip(results, models)]

    def _submit(self, cells: list[Cell], results: dict[int, CellResult], checks: CheckFactory | None,
                task: Any) -> list[tuple[int, Any]]:
        """One task per buildable cell; its shared stages prepared here and put in Ray's object store once."""
        parcels: dict[int, tuple[Prepared, Any]] = {}
        submitted = []
        for index, cell in enumerate(cells):
            if index in results:
                continue
            try:
                prepared = cell.build.prepared()
            except EdgecError as exc:
                results[index] = failed(cell.model, cell.build.config, exc)
                continue
            if id(prepared) not in parcels:
                parcels[id(prepared)] = (prepared, self.ray.put(_parcel(cell, prepared)))
            submitted.append((index, task.remote(self._job(cell, checks), parcels[id(prepared)][1])))
        return submitted

    def _job(self, cell: Cell, checks: CheckFactory | None) -> Job:
        assert cell.final is not None
        return Job(cell.model, cell.build.config, cell.build.importer, cell.final.name,
                   self.options.out_url, self.cache_url, checks)

    def _collect(self, ref: Any, cell: Cell, log: Log) -> CellResult:
        """The cell's result; a bundle that came back is renamed into its folder here (rule 2)."""
        config = cell.build.config
        try:
            returned: Returned = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the worker died (twice), or a bug escaped the task
            result = CellResult(cell.model, config.target, config.precision, FAILED, EXIT_INTERNAL, "internal error",
                                f"the Ray task failed: {brief(exc, 300)}")
        else:
            result = returned.result
            if returned.bundle is not None:
                result = _land(returned.bundle, result, cell)
        log(f"{result.target} {result.precision}: {result.status}")
        return result

    def close(self) -> None:
        """Disconnect from Ray when this executor connected (a local instance it started stops)."""
        if self.started:
            self.ray.shutdown()
            self.started = False


def _probe(address: str) -> None:
    """Connect to the cluster's ``HOST:PORT`` (``ray://HOST:PORT``) once, within :data:`CONNECT_TIMEOUT_S`.

    Raises:
        ConfigError: the address is not ``[ray://]HOST:PORT``.
        SyncError: nothing answers there.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT (after 'ray start --head') or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise SyncError(f"cannot reach the Ray cluster at {address}: {exc.strerror or brief(exc)}",
                        hint="check --address (or $RAY_ADDRESS) and that the cluster is running ('ray status' there)") from None


def _parcel(cell: Cell, prepared: Prepared) -> Parcel:
    """The shared stages and the ``--eval`` data of a cell, with the files they name (stage-cache entries whole)."""
    cache = cell.build.cache
    roots = tuple(p for p in (cache.root, cache.scratch) if p is not None)
    return pack((prepared, cell.build.config.eval), entry_unit(roots))


def _land(bundle: bytes, result: CellResult, cell: Cell) -> CellResult:
    """Unpack a bundle sent back by a worker beside its folder, then rename it into place."""
    assert cell.final is not None
    staging = outdir.staging_dir(cell.final)
    try:
        untar(bundle, staging)
        outdir.publish(staging, cell.final, cell.build.config.force)
    except EdgecError as exc:
        return failed(cell.model, cell.build.config, exc, result.seconds)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return replace(result, bundle=str(cell.final))


def _resources(ray: Any) -> str:
    cpus = ray.cluster_resources().get("CPU", 0)
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    return f"{nodes} node{'s' if nodes != 1 else ''}, {cpus:g} CPUs"


# -- on the worker -------------------------------------------------------------------------------------


def finish_remote(job: Job, parcel: Parcel) -> Returned:
    """A Ray task: finish one cell from its parcel in a scratch folder, then upload the bundle to the
    output store or send it back (rule 2). Any failure becomes the cell's result."""
    work = Path(tempfile.mkdtemp(prefix="edgec-farm-"))
    try:
        prepared, eval_path = unpack(parcel, work / "in")
        config = job.config.model_copy(update={"out": work / "out", "cache_dir": None, "force": False, "eval": eval_path})
        remote = _cache_remote(job.cache_url)
        cache = StageCache(default_cache_dir(), enabled=config.cache, scratch=work / "scratch", remote=remote)
        build = Build(config, get_target(config.target), job.importer, cache)
        folder = config.out / job.bundle
        result = finish_cell(job.model, build, lambda: prepared, folder, job.checks)
        if result.status != BUILT:
            return Returned(result)
        if job.out_url is None:
            return Returned(result, tar_folder(folder))
        try:
            return Returned(replace(result, bundle=upload_bundle(open_store(job.out_url), job.bundle, folder, job.config.force)))
        except EdgecError as exc:
            return Returned(failed(job.model, job.config, exc, result.seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cache_remote(url: str | None) -> StoreEntries | None:
    """The shared stage cache; a store that cannot be opened here is no cache, not a failed cell (rule 3)."""
    if url is None:
        return None
    try:
        return StoreEntries(open_store(url))
    except EdgecError:
        return None
