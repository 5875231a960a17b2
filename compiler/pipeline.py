"""The build pipeline: import -> conversion and clean-up passes -> precision passes -> target export ->
parity against the FP32 reference -> bundle written atomically.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.calibration.readers import ImagePreprocess, read_path
from edgec.compiler import __version__, mixed_precision, outdir, parity
from edgec.compiler.cache import StageCache, cache_key, default_cache_dir
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.base import Feed, ImportResult, find_importer
from edgec.compiler.passes.base import PassContext, make_pass, wrap_failure
from edgec.compiler.planner import PassStep, conversion_steps, float_steps, prune_steps
from edgec.compiler.synthetic import check_sample_size, synthetic_feeds
from edgec.core.bundle import GOLDEN, MANIFEST, BundleManifest, file_entry, write_golden
from edgec.core.errors import (
    AccuracyGateError,
    CalibrationError,
    ConfigError,
    EdgecError,
    ExportError,
    UnsupportedError,
)
from edgec.core.types import ModelArtifact, TensorSpec
from edgec.targets.base import TARGETS, ExportResult, PrecisionRequest, Target, package_versions

Log = Callable[[str], None]
SHIM_DIR = "edgec_shim"
LAYERS = "layers.json"
BUDGET_SAMPLES = 128
"""Calibration samples used to measure the metric of ``--max-drop`` when no ``--eval`` is given."""


@dataclass(frozen=True)
class BuildOutcome:
    """Where the bundle went and what its manifest says."""

    bundle_dir: Path
    manifest: BundleManifest
    cache_hits: int
    cache_misses: int
    mixed_precision_cost: dict[str, Any] | None = None


def get_target(name: str) -> Target:
    """Instantiate a registered target.

    Raises:
        ConfigError: unknown target.
    """
    try:
        return TARGETS.get(name)()
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGETS.names())}") from None


def build(config: BuildConfig, log: Log = lambda m: None,
          before_publish: Callable[[Path, BundleManifest], None] | None = None) -> BuildOutcome:
    """Build one bundle.

    ``before_publish(staging_dir, manifest)``, when given, runs on the complete staged bundle before it
    is moved into place (``edgec build --require-speedup`` benchmarks it there); if it raises, nothing
    is published.

    Raises:
        EdgecError: any user-facing failure; nothing is left in ``config.out`` then.
    """
    target = get_target(config.target)
    if config.precision not in target.precisions:
        raise UnsupportedError(f"the {target.name} target offers {', '.join(target.precisions)}, not {config.precision}")
    target.check_options(config.target_options)
    target.check_available()
    importer = find_importer(config.source)
    created = outdir.prepare(config.out)  # before any import: an unusable --out fails in a second, not after calibrating
    cache = StageCache(config.cache_dir or default_cache_dir(), enabled=config.cache, scratch=Path(tempfile.mkdtemp(prefix="edgec-")))
    try:
        return _build(config, target, importer, cache, log, before_publish)
    except BaseException:
        outdir.remove_created(config.out, created)
        raise
    finally:
        if cache.scratch is not None:
            shutil.rmtree(cache.scratch, ignore_errors=True)


def _build(config: BuildConfig, target: Target, importer: Any, cache: StageCache, log: Log,
           before_publish: Callable[[Path, BundleManifest], None] | None = None) -> BuildOutcome:
    log(f"importing {config.source}")
    imported = importer.load(config.source, cache, log)
    if config.calib is None:  # golden inputs will be drawn: size them before any pass runs
        check_sample_size(imported.artifact.inputs, config.input_max_mb, config.input_shapes)
    name = config.name or imported.name
    suffix = target.bundle_suffix(PrecisionRequest(config.precision, config.int8_mode, options=config.target_options))
    final = config.out / f"{name}-{target.name}-{config.precision}{suffix}"
    restored = outdir.recover(final, log)
    if final.exists() and not config.force:
        why = " (restored: a build --force was killed before it finished replacing it)" if restored else ""
        raise ConfigError(f"output bundle {final} already exists{why}", hint="remove it, pick another --out, or pass --force")
    toolchain = _toolchain(target, importer)
    records: list[dict[str, Any]] = []
    source_art = _run_steps(prune_steps(config, imported.artifact.format), imported.artifact, None, cache, toolchain, records, log)
    route, conversions = conversion_steps(source_art.format, target.routes, target.name, bool(config.input_shapes))
    float_art = _run_steps(conversions + float_steps(config, route), source_art, None, cache, toolchain, records, log)
    calibration = _calibration(config, float_art, log)
    request = PrecisionRequest(config.precision, config.int8_mode, calibration, options=config.target_options)
    golden_in = _golden_inputs(calibration, float_art.inputs, config)
    log(f"computing FP32 reference outputs on {len(golden_in)} golden inputs")
    golden_out = importer.reference(source_art, golden_in)  # after pruning: the model the user asked for
    extras: dict[str, Any] = {"files": {}, "manifest": {"input_stats": calibration.summary()} if calibration else {}}

    def quantize(exclude: tuple[str, ...]) -> ModelArtifact:
        attempt = list(records)
        art = _run_steps(target.precision_passes(replace(request, exclude=exclude), float_art), float_art, calibration,
                         cache, toolchain, attempt, log)
        extras["records"] = attempt
        return art

    if config.max_drop is not None or config.report_layers:
        final_art, request = _fidelity(config, target, request, float_art, quantize, calibration, golden_in, extras, cache, log)
    else:
        final_art = quantize(())
    manifest = _assemble(config, target, imported, final_art, final, golden_in, golden_out, route, request,
                         extras["records"], toolchain, log, extras, before_publish)
    log(f"bundle written to {final}")
    return BuildOutcome(final, manifest, cache.hits, cache.misses, extras.get("cost"))


def _fidelity(config: BuildConfig, target: Target, request: PrecisionRequest, float_art: ModelArtifact,
              quantize: Callable[[tuple[str, ...]], ModelArtifact], calibration: CalibrationSet | None, golden_in: list[Feed],
              extras: dict[str, Any], cache: StageCache, log: Log) -> tuple[ModelArtifact, PrecisionRequest]:
    """``--max-drop`` and ``--report-layers``: candidates are built and measured with the target's own export
    and runtime in scratch folders; the chosen exclusion set then goes into the real build, whose export is
    the chosen candidate's files (``extras["exported"]``), not a second conversion."""
    flag = "--max-drop" if config.max_drop is not None else "--report-layers"
    if config.precision == "fp32":
        raise ConfigError(f"{flag} compares a reduced-precision model with FP32; use it with --precision int8 or fp16")
    check_layer_support(target, flag)
    assert cache.scratch is not None
    feeds, labels = _budget_feeds(config, float_art, calibration, golden_in) if config.max_drop is not None else (golden_in, None)
    probe = mixed_precision.TargetProbe(target, request, float_art, quantize, feeds, cache.scratch / "fidelity")
    exclude: tuple[str, ...] = ()
    if config.max_drop is not None:
        result = mixed_precision.search(probe, labels, config.metric, config.max_drop, log, config.max_float_layers)
        exclude = result.exclude
        _record_mixed_precision(config, probe, result, len(feeds), extras)
    chosen = probe.build(exclude)
    extras["exported"] = chosen
    if config.report_layers:
        log("comparing layers with the FP32 reference")
        golden = target.bundle_feeds(golden_in, chosen.result)
        layers = target.compare_layers(probe.reference.model, chosen.model, golden)
        extras["files"][LAYERS] = json.dumps({"samples": len(golden), "layers": [d.to_json() for d in layers]}, indent=1, sort_keys=True) + "\n"
        extras["manifest"]["layer_report"] = {"file": LAYERS, "worst": [d.layer for d in layers[:5]]}
    return quantize(exclude), replace(request, exclude=exclude)


def check_layer_support(target: Target, what: str) -> None:
    """Raise :class:`UnsupportedError` when the target cannot compare layers on this host.

    Raises:
        UnsupportedError: naming the targets that can.
    """
    if type(target).compare_layers is Target.compare_layers or not target.measures_parity():
        able = [n for n in TARGETS.names() if TARGETS.get(n).compare_layers is not Target.compare_layers]
        raise UnsupportedError(f"{what} needs per-layer comparison on this host, which the {target.name} target does not offer; "
                               f"targets that do: {', '.join(able)}")


def _record_mixed_precision(config: BuildConfig, probe: mixed_precision.TargetProbe, result: mixed_precision.SearchResult,
                            samples: int, extras: dict[str, Any]) -> None:
    all_quantized = probe.build(())
    extras["manifest"]["mixed_precision"] = {
        "metric": config.metric, "max_drop": config.max_drop, "samples": samples,
        "fp32": round(result.baseline, 6), "value": round(result.value, 6), "drop": round(result.drop, 6),
        "float_layers": result.float_layers, "float_nodes": list(result.exclude), "steps": result.steps,
        "size_all_quantized": all_quantized.size, "size": result.candidate.size,
    }
    extras["cost"] = {"latency_ms_all_quantized": probe.latency_ms(all_quantized), "latency_ms": probe.latency_ms(result.candidate),
                      "size_all_quantized": all_quantized.size, "size": result.candidate.size, "float_layers": result.float_layers}


def _budget_feeds(config: BuildConfig, float_art: ModelArtifact, calibration: CalibrationSet | None,
                  golden_in: list[Feed]) -> tuple[list[Feed], np.ndarray | None]:
    if config.metric == "accuracy":
        if config.eval is None:
            raise ConfigError("--metric accuracy needs --eval DATA.npz (model inputs plus a 'labels' array)")
        raw = read_path(config.eval, float_art.inputs, None, max_bytes=config.calib_max_mb << 20)
        if "labels" not in raw:
            raise CalibrationError(f"--eval {config.eval} has no 'labels' array; expected inputs plus labels")
        data = CalibrationSet.from_arrays(raw, float_art.inputs, source=str(config.eval))
        return list(data.feeds()), np.asarray(raw["labels"]).reshape(-1)
    if calibration is not None:
        return list(calibration.feeds(BUDGET_SAMPLES)), None
    return golden_in, None


def _toolchain(target: Target, importer: Any) -> dict[str, str]:
    versions = {"edgec": __version__, "python": platform.python_version(), "numpy": np.__version__}
    extra = ("torch", "onnxscript") if importer.name == "torch" else ()
    versions.update(package_versions(extra))
    versions.update(target.toolchain())
    return dict(sorted(versions.items()))


def _run_steps(steps: list[PassStep], artifact: ModelArtifact, calibration: CalibrationSet | None, cache: StageCache,
               toolchain: dict[str, str], records: list[dict[str, Any]], log: Log) -> ModelArtifact:
    for pass_name, options in steps:
        step = make_pass(pass_name, options)
        calib_digest = calibration.digest if (calibration is not None and step.uses_calibration) else None
        key = cache_key("pass", step.name, step.version, step.options_json(), artifact.digest, calib_digest, toolchain)

        def produce(work: Path, step: Any = step, current: ModelArtifact = artifact) -> dict[str, Any]:
            log(f"running pass {step.name}")
            try:
                result = step.run(current, PassContext(work, calibration, log))
            except EdgecError:
                raise
            except Exception as exc:
                raise wrap_failure(exc, step, [r["name"] for r in records]) from exc
            return {
                "file": result.artifact.path.name,
                "format": result.artifact.format,
                "digest": result.artifact.digest,
                "inputs": [s.to_json() for s in result.artifact.inputs],
                "outputs": [s.to_json() for s in result.artifact.outputs],
                "modified": result.modified,
                "stats": result.stats,
            }

        entry, meta, hit = cache.get_or_create(key, produce)
        if hit:
            log(f"pass {step.name}: cached")
        artifact = ModelArtifact(
            entry / meta["file"], meta["format"],
            tuple(TensorSpec.from_json(s) for s in meta["inputs"]),
            tuple(TensorSpec.from_json(s) for s in meta["outputs"]),
            meta["digest"],
        )
        records.append({"name": step.name, "options": step.options_json(), "modified": meta["modified"], "stats": meta["stats"]})
    return artifact


def _calibration(config: BuildConfig, artifact: ModelArtifact, log: Log) -> CalibrationSet | None:
    if config.calib is None:
        return None
    preprocess = ImagePreprocess.parse(config.calib_preprocess) if config.calib_preprocess else None
    calib = load_calibration(config.calib, artifact.inputs, method=config.calib_method, samples=config.calib_samples, preprocess=preprocess,
                              max_bytes=config.calib_max_mb << 20)
    log(f"calibration: {len(calib)} samples from {config.calib} (digest {calib.digest[:12]})")
    return calib


def _golden_inputs(calibration: CalibrationSet | None, inputs: tuple[TensorSpec, ...], config: BuildConfig) -> list[Feed]:
    if calibration is not None:
        return list(calibration.feeds(config.golden_samples))
    return synthetic_feeds(inputs, config.golden_samples, config.input_max_mb)


def _assemble(config: BuildConfig, target: Target, imported: ImportResult, artifact: ModelArtifact, final: Path,
              golden_in: list[Feed], golden_out: list[Feed], route: str, request: PrecisionRequest,
              records: list[dict[str, Any]], toolchain: dict[str, str], log: Log, extras: dict[str, Any],
              before_publish: Callable[[Path, BundleManifest], None] | None = None) -> BundleManifest:
    config.out.mkdir(parents=True, exist_ok=True)
    staging = outdir.staging_dir(final)
    work = Path(tempfile.mkdtemp(prefix="edgec-export-"))
    try:
        exported = _export(target, artifact, staging, request, work, final, log, extras.get("exported"))
        shims = ship_shims(staging)
        golden_in = target.bundle_feeds(golden_in, exported)
        golden_out = target.bundle_outputs(golden_out, exported)
        parity_entry = _parity(config, target, staging, exported.model_file, golden_in, golden_out, imported, log)
        write_golden(staging / GOLDEN, golden_in, golden_out)
        for rel, text in extras["files"].items():
            (staging / rel).write_text(text)
        manifest = BundleManifest(
            name=final.name.rsplit(f"-{target.name}-", 1)[0],
            target=target.name,
            precision=config.precision,
            files=[file_entry(staging, f) for f in sorted({*exported.files, *shims, *extras["files"], GOLDEN})],
            inputs=[s.to_json() for s in exported.inputs],
            outputs=[s.to_json() for s in exported.outputs],
            source={"format": imported.source_format, "sha256": imported.source_sha256, "route": route},
            passes=records,
            calibration=request.calibration.to_manifest() if request.calibration else None,
            parity=parity_entry,
            toolchain=toolchain,
            model_file=exported.model_file,
            target_details=exported.details,
            model_cost=_model_cost(staging / exported.model_file),
            **extras["manifest"],
        )
        (staging / MANIFEST).write_text(manifest.dumps())
        if before_publish is not None:
            before_publish(staging, manifest)
        outdir.publish(staging, final, config.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _model_cost(model: Path) -> dict[str, Any] | None:
    """Params, MACs per sample and weight sparsity of an ONNX model file (None for other formats)."""
    if model.suffix != ".onnx":
        return None
    from edgec.compiler import flops

    return flops.file_cost(model).to_json()


def ship_shims(bundle: Path) -> list[str]:
    """Copy the runtime shims into ``bundle/edgec_shim/`` so the bundle runs with numpy + its runtime only.

    Returns:
        The copied files, relative to the bundle.
    """
    import edgec.runtime_shims as shims

    source = Path(shims.__file__).parent
    dest = bundle / SHIM_DIR
    dest.mkdir()
    copied = []
    for path in sorted(source.glob("*.py")):
        shutil.copyfile(path, dest / path.name)
        copied.append(f"{SHIM_DIR}/{path.name}")
    return copied


def _export(target: Target, artifact: ModelArtifact, staging: Path, request: PrecisionRequest, work: Path,
            final: Path, log: Log, prebuilt: mixed_precision.Candidate | None = None) -> ExportResult:
    if prebuilt is not None:  # --max-drop / --report-layers already exported exactly this model
        log(f"using the {target.name} model built while measuring layers")
        for name in prebuilt.result.files:
            source = prebuilt.model.parent / name
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, staging / name)
            else:
                shutil.copyfile(source, staging / name)
        return prebuilt.result
    log(f"exporting for {target.name}")
    try:
        return target.export(artifact, staging, request, work)
    except EdgecError as exc:
        if exc.log:
            log_path = final.with_name(f"{final.name}.failed.log")
            log_path.write_text(exc.log)
            exc.message += f" (converter log: {log_path})"
        raise


def _parity(config: BuildConfig, target: Target, staging: Path, model_file: str, golden_in: list[Feed],
            golden_out: list[Feed], imported: ImportResult, log: Log) -> dict[str, Any]:
    reference = f"{imported.source_format} fp32" + (f" after {config.prune_mode} pruning" if config.prune else "")
    if not target.measures_parity():
        return {"measured": False, "reference": reference, "samples": len(golden_in),
                "reason": f"the {target.name} runtime cannot execute models on this host; run 'edgec verify' on a device"}
    measured = _measure(target, staging, model_file, golden_in, golden_out, log)
    _gate(config, measured)
    return {"measured": True, "reference": reference, "samples": len(golden_in), "outputs": measured,
            "tolerance": parity.tolerance(measured, config.precision)}


def _measure(target: Target, bundle: Path, model_file: str, golden_in: list[Feed], golden_out: list[Feed], log: Log) -> dict[str, Any]:
    log("measuring parity against the FP32 reference")
    try:
        with target.runner(bundle, model_file) as runner:
            actual = [runner.infer(feed) for feed in golden_in]
    except EdgecError:
        raise
    except Exception as exc:
        raise ExportError(f"the built {target.name} model does not run: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
    return parity.compare(golden_out, actual, list(golden_out[0]))


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
