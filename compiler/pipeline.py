"""The build pipeline: import -> conversion and clean-up passes -> precision passes -> target export ->
parity against the FP32 reference -> bundle written atomically.

A :class:`Build` holds what every stage needs (the config, target, importer, stage cache, toolchain and
log) and has one method per stage::

    claim_output -> import_source -> convert (prune, conversion, float clean-up) -> calibrate -> golden
        -> fidelity (--max-drop / --report-layers) -> precision -> export -> parity -> assemble -> publish

The import, the passes, the FP32 reference runs and the target's export go through the stage cache
(:mod:`edgec.compiler.cached_stages`); parity is measured anew on every build.

The stages up to :meth:`Build.golden` give a frozen :class:`Prepared`, which does not depend on the
precision; :meth:`Build.finish` runs the rest on one. A :class:`Build` for another precision of the same
target finishes the same :class:`Prepared` without importing, converting, calibrating or running the
reference again (``tests/integration/compiler/test_build_stages.py``): the seam for builds of many cells from one
import. Another target needs its own :meth:`Build.convert` (its route and ONNX rewrites), but
:meth:`Build.import_source` can be shared.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.calibration.readers import ImagePreprocess
from edgec.compiler import (
    __version__,
    bundle_files,
    dynamic_dims,
    fidelity_stage,
    golden,
    input_values,
    outdir,
    parity,
    search_probe,
)
from edgec.compiler.cache import StageCache, default_cache_dir
from edgec.compiler.cached_stages import cached_export, cached_reference
from edgec.compiler.config import BuildConfig, absolute_path
from edgec.compiler.fidelity_stage import Fidelity
from edgec.compiler.golden import GoldenSet, PruningCheck
from edgec.compiler.golden_size import model_bytes, write_sized_golden
from edgec.compiler.importers.base import Feed, Importer, ImportResult, find_importer
from edgec.compiler.pass_runner import PassRunner
from edgec.compiler.planner import conversion_steps, float_steps, graph_shapes, prune_steps, upgrade_steps
from edgec.compiler.source_digest import source_digest
from edgec.compiler.synthetic import check_sample_size
from edgec.core.bundle import GOLDEN, MANIFEST, BundleManifest, file_entry
from edgec.core.errors import (
    AccuracyGateError,
    CalibrationError,
    ConfigError,
    EdgecError,
    ExportError,
    UnsupportedError,
    brief,
    raise_if_bug,
)
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.targets.base import TARGETS, ExportResult, LayerTools, PrecisionRequest, Target, package_versions

Log = Callable[[str], None]
PublishCheck = Callable[[Path, BundleManifest], None]
"""``check(staging_dir, manifest)``: runs on the complete staged bundle before it is published; raising stops it."""
SiblingBuilder = Callable[[str, Path, str], Path]
"""``build_sibling(precision, out, name) -> bundle dir``: see :func:`sibling_builder`."""


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class BuildOutcome:
    """Where the bundle went, what its manifest says, and what the build found on the way.

    Args:
        fidelity: the ``--max-drop`` / ``--report-layers`` outcome, when either was asked for.
        warnings: one line each, for the user (e.g. pruning changed the model's answers).
    """

    bundle_dir: Path
    manifest: BundleManifest
    cache_hits: int
    cache_misses: int
    fidelity: Fidelity | None = None
    warnings: tuple[str, ...] = ()

    @property
    def mixed_precision_cost(self) -> dict[str, Any] | None:
        """The ``--max-drop`` cost as JSON (size and latency versus all-quantized), or None."""
        cost = self.fidelity.cost if self.fidelity is not None else None
        return cost.to_json() if cost is not None else None


@dataclass(frozen=True)
class Prepared:
    """What the stages before the precision produce, shared by every precision built from it.

    Args:
        imported: the import's result (the source model, before pruning).
        source_art: the source model after pruning (the FP32 reference).
        route: the format the target takes, which ``float_art`` is in.
        float_art: the float model after conversion and clean-up passes.
        records: the manifest records of the passes so far.
        calibration: the calibration set, or None.
        golden: the golden inputs and reference outputs.
        holdout: calibration samples held out of ``calibration`` for ``--max-drop`` to measure on
            (:func:`edgec.compiler.fidelity_stage.hold_out`); empty when none are.
    """

    imported: ImportResult
    source_art: ModelArtifact
    route: str
    float_art: ModelArtifact
    records: tuple[dict[str, Any], ...]
    calibration: CalibrationSet | None
    golden: GoldenSet
    holdout: tuple[Feed, ...] = ()


@dataclass(frozen=True)
class PrecisionOutcome:
    """What the precision stages chose: the model the target exports, the request it answers (with the
    nodes kept in float), every pass record of the build, and the fidelity stage's outcome when it ran."""

    artifact: ModelArtifact
    request: PrecisionRequest
    records: tuple[dict[str, Any], ...]
    fidelity: Fidelity | None = None


def get_target(name: str) -> Target:
    """Instantiate a registered target.

    Raises:
        ConfigError: unknown target.
    """
    try:
        return TARGETS.get(name)()
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGETS.names())}") from None


def build(config: BuildConfig, log: Log = _quiet, before_publish: PublishCheck | None = None) -> BuildOutcome:
    """Build one bundle.

    ``before_publish(staging_dir, manifest)``, when given, runs on the complete staged bundle before it
    is moved into place (``edgec build --require-speedup`` benchmarks it there); if it raises, nothing
    is published.

    Raises:
        EdgecError: any user-facing failure; nothing is left in ``config.out`` then.
    """
    target = get_target(config.target)
    target.validate(PrecisionRequest(config.precision, config.int8_mode, options=config.target_options))  # before any import
    target.check_available()
    importer = find_importer(config.source)
    check_data_paths(config)
    created = outdir.prepare(config.out)  # before any import: an unusable --out fails in a second, not after calibrating
    cache = StageCache(config.cache_dir or default_cache_dir(), enabled=config.cache, scratch=Path(tempfile.mkdtemp(prefix="edgec-")))
    try:
        return Build(config, target, importer, cache, log).run(before_publish)
    except BaseException:
        outdir.remove_created(config.out, created)
        raise
    finally:
        if cache.scratch is not None:
            shutil.rmtree(cache.scratch, ignore_errors=True)


def check_data_paths(config: BuildConfig) -> None:
    """``--calib`` and ``--eval`` exist: checked before the source is imported, though read only after it.

    Raises:
        CalibrationError: one of them does not exist.
    """
    if config.calib is not None and not config.calib.exists():
        raise CalibrationError(f"calibration path {config.calib} does not exist; expected a .npz file or a folder")
    if config.eval is not None and not config.eval.exists():
        raise CalibrationError(f"--eval {config.eval} does not exist; expected a .npz of model inputs plus a 'labels' array")


def sibling_builder(config: BuildConfig, log: Log = _quiet) -> SiblingBuilder:
    """A function that builds a sibling of ``config``'s bundle at another precision.

    ``build_sibling(precision, out, name)`` builds the same source for the same target and options into
    ``out`` under ``name`` (never replacing a bundle there), without ``--max-drop`` or ``--report-layers``,
    and returns the bundle's folder; the stage cache makes the shared stages cheap. ``edgec build
    --require-speedup`` hands it to the speedup check, which needs an fp32 sibling to compare with.
    """
    def build_sibling(precision: str, out: Path, name: str) -> Path:
        update = {"precision": precision, "out": absolute_path(out), "name": name, "force": False, "max_drop": None, "report_layers": False}
        return build(config.model_copy(update=update), log).bundle_dir

    return build_sibling


class Build:
    """One build: what every stage needs, and one method per stage (see the module docstring).

    Args:
        config: the validated build configuration.
        target: the target, already checked against the config.
        importer: the importer that claims ``config.source``.
        cache: the stage cache, with a scratch folder the caller removes.
        log: progress messages.
    """

    def __init__(self, config: BuildConfig, target: Target, importer: Importer, cache: StageCache, log: Log = _quiet) -> None:
        self.config, self.target, self.importer, self.cache, self.log = config, target, importer, cache, log

    @cached_property
    def toolchain(self) -> dict[str, str]:
        """Versions of edgec (and a digest of its code: stage cache keys change when it is edited), python, numpy, the importer's framework and the target's tools."""
        versions = {"edgec": __version__, "edgec_code": source_digest(), "python": platform.python_version(),
                    "numpy": np.__version__}
        extra = ("torch", "onnxscript") if self.importer.name == "torch" else ()
        versions.update(package_versions(extra))
        versions.update(self.target.toolchain())
        return dict(sorted(versions.items()))

    @cached_property
    def passes(self) -> PassRunner:
        """Runs passes through the stage cache (keyed with :attr:`toolchain`)."""
        return PassRunner(self.cache, self.toolchain, self.log)

    def request(self, calibration: CalibrationSet | None = None, golden: GoldenSet | None = None) -> PrecisionRequest:
        """The precision request of this build (with nothing excluded; the golden set's first sample's shapes)."""
        shapes = tuple((name, tuple(np.shape(value))) for name, value in golden.inputs[0].items()) if golden and golden.inputs else ()
        return PrecisionRequest(self.config.precision, self.config.int8_mode, calibration, options=self.config.target_options,
                                data_shapes=shapes)

    def run(self, before_publish: PublishCheck | None = None) -> BuildOutcome:
        """All stages, in order."""
        final = self.claim_output()  # an existing bundle fails the build before the source is imported
        imported = self.import_source()
        return self.finish(self.prepare(imported), final, before_publish)

    def prepare(self, imported: ImportResult) -> Prepared:
        """The stages that do not depend on the precision: passes up to the float model, calibration, golden set."""
        source_art, route, float_art, records = self.convert(imported)
        calibration, holdout = fidelity_stage.hold_out(self.calibrate(float_art, self.input_values(imported)), self.config, self.log)
        return Prepared(imported, source_art, route, float_art, tuple(records), calibration,
                        self.golden(imported, source_art, float_art, calibration), holdout)

    def finish(self, prepared: Prepared, final: Path, before_publish: PublishCheck | None = None) -> BuildOutcome:
        """The stages that depend on the precision, ending with the bundle published at ``final``."""
        config = self.config
        request = self.request(prepared.calibration, prepared.golden)
        measured = config.max_drop is not None or config.report_layers
        with self.target.reuse() if measured else nullcontext():  # the final passes redo the chosen candidate's
            fidelity = self.fidelity(prepared, request) if measured else None
            request = fidelity.apply(request) if fidelity is not None else request
            artifact, records = self.precision(prepared, request)
        manifest = self.assemble(prepared, PrecisionOutcome(artifact, request, tuple(records), fidelity), final, before_publish)
        self.log(f"bundle written to {final}")
        return BuildOutcome(final, manifest, self.cache.hits, self.cache.misses, fidelity, self.warnings(manifest))

    # -- stages before the precision ---------------------------------------------------------------

    def import_source(self) -> ImportResult:
        """Load the source into the stage cache.

        Raises:
            ConfigError: no golden inputs can be drawn within ``--input-max-mb`` (checked before any pass).
        """
        self.log(f"importing {self.config.source}")
        imported = self.importer.load(self.config.source, self.cache, self.log)
        dynamic_dims.check_given(imported.artifact.inputs, self.config.input_shapes)
        given = self.input_values(imported)
        if self.config.calib is None:  # golden inputs will be drawn: size them before any pass runs
            check_sample_size(imported.artifact.inputs, self.config.input_max_mb, self.config.input_shapes)
            input_values.check_settings(imported.artifact.inputs, given)
        return imported

    def input_values(self, imported: ImportResult) -> dict[str, np.ndarray]:
        """``--input-value`` as arrays for the source model's inputs (see :mod:`edgec.compiler.input_values`).

        Raises:
            ConfigError: a name that is not an input, or a value the input cannot take.
        """
        return input_values.value_arrays(imported.artifact.inputs, self.config.input_values, dynamic_dims.sizes(self.config.input_shapes))

    def bundle_name(self, imported: ImportResult | None = None) -> str:
        """``--name``, else the source's name, with ``-pruned30`` (``-sparse30`` unstructured) when pruning.

        The source's name comes from the source string (:meth:`Importer.source_name`), so it is known
        before the import; ``imported`` gives the same name.
        """
        if self.config.name:
            return self.config.name
        name = imported.name if imported is not None else self.importer.source_name(self.config.source)
        if self.config.prune is None:
            return name
        kind = "pruned" if self.config.prune_mode == "structured" else "sparse"
        return f"{name}-{kind}{self.config.prune * 100:g}"

    def output_dir(self, imported: ImportResult | None = None) -> Path:
        """``OUT/NAME-TARGET-PRECISION[SUFFIX]``, where the bundle goes (not checked: see :meth:`claim_output`)."""
        suffix = self.request().options_as(self.target.Options).suffix()
        return self.config.out / f"{self.bundle_name(imported)}-{self.target.name}-{self.config.precision}{suffix}"

    def claim_output(self, imported: ImportResult | None = None) -> Path:
        """The bundle's folder, ``OUT/NAME-TARGET-PRECISION[SUFFIX]``; known before the import.

        Raises:
            ConfigError: it exists and ``--force`` was not given.
        """
        config = self.config
        final = self.output_dir(imported)
        restored = outdir.recover(final, self.log)
        if final.exists() and not config.force:
            why = " (restored: a build --force was killed before it finished replacing it)" if restored else ""
            raise ConfigError(f"output bundle {final} already exists{why}", hint="remove it, pick another --out, or pass --force")
        return final

    def convert(self, imported: ImportResult) -> tuple[ModelArtifact, str, ModelArtifact, list[dict[str, Any]]]:
        """Pruning, then conversion to the target's route and the float clean-up passes.

        Returns:
            The pruned source model, the route, the float model and the passes' records.
        """
        records: list[dict[str, Any]] = []
        route, conversions = conversion_steps(imported.artifact.format, self.target.routes, self.target.name,
                                              bool(graph_shapes(self.config)))
        if route == FORMAT_ONNX:  # dims the target cannot keep dynamic need --input sizes, asked for before any pass
            dynamic_dims.check_target_dims(self.target, imported.artifact.inputs, self.config.input_shapes, self.request())
        self.target.check_available(route)  # what the route's converter needs (tflite's onnx2tf), before any pass runs
        source_art = self.passes.run(prune_steps(self.config, imported.artifact.format), imported.artifact, None, records)
        steps = conversions + upgrade_steps(source_art, route) + float_steps(self.config, route, self.target.onnx_rewrites)
        float_art = self.passes.run(steps, source_art, None, records)
        return source_art, route, float_art, records

    def calibrate(self, artifact: ModelArtifact, values: dict[str, np.ndarray] | None = None) -> CalibrationSet | None:
        """The calibration set matched to ``artifact``'s inputs, or None without ``--calib``; ``values``
        (``--input-value``) set their inputs in every sample.

        Raises:
            CalibrationError: the data cannot be read or does not match the inputs.
        """
        config = self.config
        if config.calib is None:
            return None
        preprocess = ImagePreprocess.parse(config.calib_preprocess) if config.calib_preprocess else None
        calib = load_calibration(config.calib, artifact.inputs, method=config.calib_method, samples=fidelity_stage.calibration_samples(config),
                                 preprocess=preprocess, max_bytes=config.calib_max_mb << 20, values=values)
        self.log(f"calibration: {len(calib)} samples from {config.calib} (digest {calib.digest[:12]})")
        return calib

    def golden(self, imported: ImportResult, source_art: ModelArtifact, float_art: ModelArtifact,
               calibration: CalibrationSet | None) -> GoldenSet:
        """Golden inputs (see :mod:`edgec.compiler.golden`) and the source framework's FP32 outputs on them:
        of the pruned model (the model the user asked for) and, when pruning ran, of the model before it."""
        values = self.input_values(imported)

        def reference(artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:  # folded inputs: the source still takes them
            return self.reference(artifact, input_values.complete(feeds, artifact.inputs, values))

        samples = self.config.golden_samples
        self.log(f"computing FP32 reference outputs on {samples if calibration is None else min(samples, len(calibration))} golden inputs")
        if calibration is None:
            inputs, outputs, source = golden.synthetic_reference(float_art.inputs, samples, self.config.input_max_mb, values,
                                                                 lambda feeds: reference(source_art, feeds), self.config.input_shapes)
        else:
            inputs, source = golden.from_calibration(calibration, samples)
            outputs = reference(source_art, inputs)
        golden.check_finite(outputs, synthetic=calibration is None)
        if self.target.dynamic_shapes:  # the bundle keeps dynamic dims: prove a second size of them too
            inputs, outputs, source = golden.with_second_shape(inputs, outputs, source, float_art.inputs, self.config.input_shapes,
                                                               self.config.input_max_mb, lambda feeds: reference(source_art, feeds))
        pruning = None
        if self.config.prune is not None:
            check_in, check_source = golden.pruning_inputs(calibration, inputs, source)
            self.log(f"computing outputs of the model before and after pruning on {len(check_in)} inputs")
            pruning = PruningCheck(check_in, check_source, reference(imported.artifact, check_in),
                                   reference(source_art, check_in))
        return GoldenSet(inputs, outputs, source, pruning)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        """The source framework's FP32 outputs of ``artifact`` on ``feeds``, through the stage cache."""
        return cached_reference(self.cache, self.importer, artifact, feeds, self.toolchain)

    # -- stages that depend on the precision -------------------------------------------------------

    def precision(self, prepared: Prepared, request: PrecisionRequest) -> tuple[ModelArtifact, list[dict[str, Any]]]:
        """The target's precision passes on the float model, keeping ``request.exclude`` in float.

        Returns:
            The model the target exports, and every pass record of the build.
        """
        records = list(prepared.records)
        steps = self.target.precision_passes(request, prepared.float_art)
        return self.passes.run(steps, prepared.float_art, prepared.calibration, records), records

    def fidelity(self, prepared: Prepared, request: PrecisionRequest) -> Fidelity:
        """``--max-drop`` and ``--report-layers``: candidates are built and measured with the target's own
        export and runtime in scratch folders; the chosen candidate's files become the bundle's model, not a
        second conversion.

        Raises:
            ConfigError: an fp32 build, or ``--metric accuracy`` without usable ``--eval`` data.
            UnsupportedError: the target cannot compare layers on this host.
            AccuracyGateError: the ``--max-drop`` budget cannot be met.
        """
        config = self.config
        flag = "--max-drop" if config.max_drop is not None else "--report-layers"
        if config.precision == "fp32":
            raise ConfigError(f"{flag} compares a reduced-precision model with FP32; use it with --precision int8 or fp16")
        check_layer_support(self.target, flag)
        assert self.cache.scratch is not None
        gold = prepared.golden
        budget = fidelity_stage.budget_feeds(config, prepared.float_art, prepared.holdout, gold.inputs) if config.max_drop is not None else None
        probe = search_probe.TargetProbe(self.target, request, prepared.float_art,
                                            lambda candidate: self.precision(prepared, candidate)[0],
                                            budget.feeds if budget else gold.inputs,
                                            Path(tempfile.mkdtemp(prefix="fidelity-", dir=self.cache.scratch)))
        mixed, cost = fidelity_stage.search(probe, budget, config, self.log) if budget is not None else (None, None)
        chosen = probe.build(mixed.float_nodes, mixed.calibration, mixed.variant) if mixed is not None else probe.build(())
        report = None
        if config.report_layers:
            self.log("comparing layers with the FP32 reference")
            report = fidelity_stage.layer_report(self.target, probe, chosen, gold.inputs)
        return Fidelity(chosen, mixed, cost, report)

    def export(self, chosen: PrecisionOutcome, staging: Path, work: Path, final: Path) -> ExportResult:
        """The target's model files in ``staging``: the fidelity stage's chosen candidate's, else the target's
        export, from the stage cache when an earlier build exported the same model with the same request,
        options and toolchain (see :func:`~edgec.compiler.cached_stages.export_key`).

        Raises:
            EdgecError: the converter failed; its log is saved beside the bundle as ``NAME.failed.log``.
        """
        if chosen.fidelity is not None:  # --max-drop / --report-layers already exported exactly this model
            self.log(f"using the {self.target.name} model built while measuring layers")
            return bundle_files.copy_candidate(chosen.fidelity.chosen, staging)
        try:
            return cached_export(self.cache, self.target, chosen.artifact, chosen.request, self.toolchain,
                                 staging, work, self.log)[0]
        except EdgecError as exc:
            if exc.log:
                log_path = final.with_name(f"{final.name}.failed.log")
                log_path.write_text(exc.log)
                exc.message += f" (converter log: {log_path})"
            raise

    def parity(self, prepared: Prepared, staging: Path, exported: ExportResult) -> dict[str, Any]:
        """The manifest's ``parity``: the bundle against the FP32 reference on the golden inputs (and, when
        pruning ran, against the model before pruning); writes ``golden.npz``.

        Raises:
            AccuracyGateError: an output's cosine is below ``--min-cosine`` (fp32: 0.9999 by default).
            ExportError: the built model does not run.
        """
        config, gold = self.config, prepared.golden
        inputs = self.target.bundle_feeds(gold.inputs, exported)
        outputs = self.target.bundle_outputs(gold.outputs, exported)
        reference = f"{prepared.imported.source_format} fp32" + (f" after {config.prune_mode} pruning" if config.prune else "")
        entry: dict[str, Any] = {"reference": reference, "samples": len(inputs), "golden_source": gold.source}
        actual: list[Feed] = []
        parts: parity.Parts = {}
        if not self.target.measures_parity():
            entry.update(measured=False, reason=f"the {self.target.name} runtime cannot execute models on this host; "
                                                "run 'edgec verify' on a device")
        else:
            parts = parity.output_parts(prepared.float_art.path) if prepared.float_art.format == FORMAT_ONNX else {}
            actual, inputs, outputs, refused = self._run_golden(staging, exported.model_file, inputs, outputs)
            if refused is not None:
                entry.update(samples=len(inputs), second_shape_refused=refused)
            measured = parity.compare(outputs, actual, list(outputs[0]), parts)
            _gate(config, measured)
            entry.update(measured=True, outputs=measured, tolerance=parity.tolerance(measured, config.precision))
            degraded = parity.collapsed(measured, not gold.synthetic)
            if degraded:
                _collapse_gate(config, self.target, degraded)
                entry["degraded"] = degraded
        if gold.pruning is not None:
            entry["unpruned"] = self._unpruned(gold.pruning, prepared.imported.source_format, staging, exported, entry["measured"])
        kept, entry["golden_stored"] = write_sized_golden(staging / GOLDEN, inputs, outputs,
                                                         model_bytes(staging, exported.files), config.golden_max_mb)
        if actual and len(kept) < len(inputs):  # verify runs the samples kept: its tolerance is theirs
            stored = parity.compare([outputs[i] for i in kept], [actual[i] for i in kept], list(outputs[0]), parts)
            entry["tolerance"] = parity.tolerance(stored, config.precision)
        return entry

    def assemble(self, prepared: Prepared, chosen: PrecisionOutcome, final: Path,
                 before_publish: PublishCheck | None = None) -> BundleManifest:
        """Export into a staging folder beside ``final``, add shims, golden data and the manifest, run
        ``before_publish`` on it, then publish; nothing is left behind on failure."""
        self.config.out.mkdir(parents=True, exist_ok=True)
        staging = outdir.staging_dir(final)
        work = Path(tempfile.mkdtemp(prefix="edgec-export-"))
        try:
            exported = self.export(chosen, staging, work, final)
            manifest = self._write_bundle(prepared, chosen, staging, exported, final)
            if before_publish is not None:
                before_publish(staging, manifest)
            self.publish(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return manifest

    def publish(self, staging: Path, final: Path) -> None:
        """Rename the staged bundle into place (replacing one only with ``--force``)."""
        outdir.publish(staging, final, self.config.force)

    def warnings(self, manifest: BundleManifest) -> tuple[str, ...]:
        """What the user should know about the built bundle (pruning that changed the model's answers, a
        collapsed bundle written with ``--allow-degraded``)."""
        unpruned = manifest.parity.get("unpruned")
        warning = golden.pruning_warning(unpruned, self.config.finetune is not None) if unpruned else None
        degraded = manifest.parity.get("degraded")
        collapse = f"written with --allow-degraded although it collapsed: {'; '.join(degraded)}" if degraded else None
        return tuple(w for w in (warning, collapse) if w)

    # -- helpers of the stages ---------------------------------------------------------------------

    def _write_bundle(self, prepared: Prepared, chosen: PrecisionOutcome, staging: Path, exported: ExportResult,
                      final: Path) -> BundleManifest:
        fidelity, request = chosen.fidelity, chosen.request
        shims = bundle_files.ship_shims(staging)
        parity_entry = self.parity(prepared, staging, exported)
        extra_files = fidelity.files() if fidelity is not None else {}
        for rel, text in extra_files.items():
            (staging / rel).write_text(text)
        extra_fields: dict[str, Any] = {"input_stats": prepared.calibration.summary()} if prepared.calibration is not None else {}
        extra_fields.update(fidelity.manifest_fields() if fidelity is not None else {})
        imported = prepared.imported
        manifest = BundleManifest(
            name=final.name.rsplit(f"-{self.target.name}-", 1)[0],
            target=self.target.name,
            precision=self.config.precision,
            files=[file_entry(staging, f) for f in sorted({*exported.files, *shims, *extra_files, GOLDEN})],
            inputs=[s.to_json() for s in dynamic_dims.with_ranges(exported.inputs, self.config.input_shapes)],
            outputs=[s.to_json() for s in exported.outputs],
            source={"format": imported.source_format, "sha256": imported.source_sha256, "route": prepared.route},
            passes=list(chosen.records),
            calibration=request.calibration.to_manifest() if request.calibration else None,
            parity=parity_entry,
            toolchain=self.toolchain,
            model_file=exported.model_file,
            target_details=exported.details,
            model_cost=bundle_files.model_cost(staging / exported.model_file, prepared.golden.inputs[0]),
            **extra_fields,
        )
        (staging / MANIFEST).write_text(manifest.dumps())
        return manifest

    def _run_golden(self, bundle: Path, model_file: str, inputs: list[Feed],
                    outputs: list[Feed]) -> tuple[list[Feed], list[Feed], list[Feed], str | None]:
        """The bundle's outputs on the golden inputs, with the inputs and reference outputs they answer.

        Golden samples at a second size of the dynamic dims (see :func:`golden.with_second_shape`) that the
        target's runtime refuses, where the first size runs, are dropped: the bundle then proves the first size
        only, and the last item says why (a PP-OCR recognizer's pooling kernel outgrows a halved height on
        OpenVINO, which onnxruntime pads). A first size that does not run is the usual export error.
        """
        first = {name: np.shape(value) for name, value in inputs[0].items()}
        keep = [i for i, feed in enumerate(inputs) if {name: np.shape(value) for name, value in feed.items()} == first]
        try:
            return self._run_bundle(bundle, model_file, inputs), inputs, outputs, None
        except ExportError as exc:
            if len(keep) == len(inputs):
                raise
            refused = brief(exc, 240)
        inputs, outputs = [inputs[i] for i in keep], [outputs[i] for i in keep]
        actual = self._run_bundle(bundle, model_file, inputs)
        self.log(f"  the {self.target.name} runtime refuses the second size of the dynamic dims; the golden set keeps "
                 f"the first size only ({refused})")
        return actual, inputs, outputs, refused

    def _run_bundle(self, bundle: Path, model_file: str, inputs: list[Feed],
                    what: str = "measuring parity against the FP32 reference") -> list[Feed]:
        self.log(what)
        try:
            with self.target.runner(bundle, model_file) as runner:
                return [runner.infer(feed) for feed in inputs]
        except EdgecError:
            raise
        except Exception as exc:  # the runtime's own errors on the built model; a bug in edgec's runner is raised as one
            raise_if_bug(exc, f"running the built {self.target.name} bundle")
            raise ExportError(f"the built {self.target.name} model does not run: {type(exc).__name__}: "
                              f"{brief(exc, 300)}") from exc

    def _unpruned(self, check: PruningCheck, source_format: str, staging: Path, exported: ExportResult,
                  runs: bool) -> dict[str, Any]:
        """The bundle's outputs (or, where the target cannot run here, the pruned source model's) against
        the model before pruning, on the pruning check's inputs."""
        reference = f"{source_format} fp32 before pruning"
        if not runs:
            return golden.unpruned_entry(check, reference, "the pruned fp32 model", check.unpruned, check.pruned)
        actual = self._run_bundle(staging, exported.model_file, self.target.bundle_feeds(check.inputs, exported),
                                  f"comparing the bundle with the unpruned model on {len(check.inputs)} inputs")
        return golden.unpruned_entry(check, reference, "the bundle", self.target.bundle_outputs(check.unpruned, exported), actual)


def check_layer_support(target: Target, what: str) -> LayerTools:
    """The target as :class:`LayerTools`, when it can compare layers on this host.

    Raises:
        UnsupportedError: naming the targets that can.
    """
    if isinstance(target, LayerTools) and target.measures_parity():
        return target
    able = [n for n in TARGETS.names() if issubclass(TARGETS.get(n), LayerTools)]
    raise UnsupportedError(f"{what} needs per-layer comparison on this host, which the {target.name} target does not offer; "
                           f"targets that do: {', '.join(able)}")


def _gate(config: BuildConfig, measured: dict[str, Any]) -> None:
    minimum = config.min_cosine if config.min_cosine is not None else parity.DEFAULT_MIN_COSINE.get(config.precision)
    if minimum is None:
        return
    worst = min(measured.items(), key=lambda kv: kv[1]["cosine"])
    if worst[1]["cosine"] < minimum:
        raise AccuracyGateError(
            f"output {worst[0]!r} has cosine {worst[1]['cosine']:.6f} to the FP32 reference, below the required {minimum}; "
            "no bundle written"
        )


def _collapse_gate(config: BuildConfig, target: Target, reasons: list[str]) -> None:
    """Refuse a collapsed bundle (see :func:`edgec.compiler.parity.collapsed`) unless ``--allow-degraded``.

    Raises:
        AccuracyGateError: naming what collapsed and what to try.
    """
    if config.allow_degraded:
        return
    dynamic = config.precision == "int8" and (config.calib is None or config.int8_mode == "dynamic")
    tries = "--int8-mode static with --calib DATA, " if dynamic else ""
    if config.precision == "int8" and not dynamic and target.collapse_hint:
        tries += f"{target.collapse_hint}, "
    raise AccuracyGateError(
        f"the {config.precision} bundle has collapsed against the FP32 reference: {'; '.join(reasons)}; no bundle written",
        hint=f"try {tries}--max-drop 0.01 (keeps the most sensitive layers in float), fp16, or --allow-degraded to "
             "write it anyway")
