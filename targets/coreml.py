"""``coreml`` target: an ``.mlpackage`` (ML program) for Apple devices, converted by coremltools.

Routes: coremltools converts PyTorch and TensorFlow, not ONNX. A ``torch.export`` program (``.pt2`` or
a factory) is converted directly; TensorFlow SavedModels and ``.keras`` files (formats ``savedmodel``
and ``keras``) go through coremltools' TensorFlow frontend. An ONNX-only source is refused by the
planner before anything is written.

Precisions (applied here, inside :meth:`CoreMLTarget.export`, by coremltools itself):
1. ``fp32``: float32 weights and compute.
2. ``fp16``: float16 weights and compute (the Core ML default; what the Neural Engine runs).
3. ``int8``: float16 compute, weights linearly quantized to int8 per output channel
   (``linear_quantize_weights``). Every weight of rank >= 2 with more than :data:`WEIGHT_THRESHOLD`
   elements is quantized: coremltools' default threshold (2048) would leave small models such as
   the digits CNN's first convolution in float.
4. ``--palettize 4|6|8`` (with fp16 or fp32; :class:`CoreMLOptions`): weights become k-means look-up
   tables of 2**n entries.
5. ``int8`` with ``--int8-mode static``: activations are quantized too, calibrated on ``--calib``
   (``linear_quantize_activations``). coremltools calibrates by running the Core ML model, which it can
   only do on macOS, so on other hosts this is refused rather than approximated.

Dynamic dims: the dims that ``torch.export`` left dynamic stay dynamic (a ``RangeDim`` with the
exported bounds); an unknown dim of a TensorFlow source (a Keras batch of None) gets 1..:data:`MAX_DIM`,
the bound coremltools gives an unbounded ``torch.export`` dim; fixed dims stay fixed. Inputs and
outputs keep the source's names and shapes, so a device app can switch runtimes; int64 inputs become
int32 (Core ML has no int64 inputs) and outputs are float32. What coremltools' torch frontend refuses
in the form ``torch.export`` writes it is rewritten exactly first
(:func:`edgec.targets._coreml_torch.convertible`).

On hosts other than macOS coremltools cannot execute a model: the build checks what it can (the spec
loads, inputs/outputs match the source, weights are stored at the expected precision, sizes) and
records those checks in ``target_details``; parity is recorded as not measured. ``edgec verify`` on
a Mac runs the golden inputs through :class:`~edgec.runtime_shims.coreml.CoreMLRunner`.

The package is made byte-reproducible: the conversion date is dropped from the model metadata, the
package manifest's random item identifiers are replaced by ones derived from the item paths, and
coremltools' ExecuTorch debug map (not used by Core ML) is left out.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import field_validator

from edgec.core.errors import (
    ConfigError,
    EdgecError,
    ExportError,
    UnsupportedError,
    brief,
    raise_if_bug,
    require,
)
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.frameworks.tf_utils import FORMAT_KERAS, FORMAT_SAVEDMODEL, native_output_to
from edgec.targets.base import ExportResult, Feed, PassStep, PrecisionRequest, Target
from edgec.targets.options import TargetOptions, option

MODEL_DIR = "model.mlpackage"
WEIGHTS_DIR = "Data/com.apple.CoreML/weights"
SPEC_FILE = "Data/com.apple.CoreML/model.mlmodel"
DEFAULT_DEPLOYMENT_TARGET = "iOS16"
"""iOS 16 / macOS 13: the first release with compressed (int8, palettized) ML program weights."""
WEIGHT_THRESHOLD = 128
"""Quantize weights with more than this many elements; below it the per-channel scales outweigh the saving."""
PALETTE_BITS = (4, 6, 8)
ACTIVATION_MIN_TARGET = "iOS17"
MIN_CHANNELS = 8
"""int8 weights get one scale per row of axis 0; with fewer rows than this a weight stays float."""
MIN_WEIGHT_ELEMENTS = 16
"""Smaller float constants (pads, shapes, scalars) are not counted as weights."""
MAX_DIM = 2**31 - 1
"""Upper bound of a dynamic dim the source leaves unbounded: what coremltools gives such a ``torch.export`` dim."""
PARITY_COMPUTE_UNITS = "CPU_ONLY"
"""Compute units for parity runs: the CPU gives the same arithmetic on every Mac."""
_DROPPED_METADATA = ("com.github.apple.coremltools.conversion_date",)
_DROPPED_FILES = ("executorch_debug_handle_mapping.json",)
_UUID_NAMESPACE = uuid.UUID("6f1d6c2e-6a43-4f3e-9a4e-5c0a1e0dc0de")


@dataclass(frozen=True)
class CoreMLPlan:
    """How one build converts and compresses, resolved from the request and checked once.

    Args:
        compute: ``fp32`` or ``fp16`` compute precision.
        weights: ``float``, ``int8`` or ``palettize``.
        nbits: palette bits when ``weights == "palettize"``.
        activations: ``float`` or ``int8``.
        deployment_target: coremltools target name, e.g. ``iOS16``.
        weight_threshold: weights with more elements than this are compressed.
    """

    compute: str
    weights: str
    nbits: int | None
    activations: str
    deployment_target: str
    weight_threshold: int

    def expected_storage(self) -> str:
        """Storage label of the compressible weights: ``fp32``, ``fp16``, ``int8`` or ``palette<n>``."""
        if self.weights == "int8":
            return "int8"
        if self.weights == "palettize":
            return f"palette{self.nbits}"
        return self.compute


class CoreMLOptions(TargetOptions):
    """Options of the coreml target (unknown keys rejected)."""

    palettize: int | None = option(None, "4, 6 or 8: k-means palettized weights (2^N-entry tables) with fp16/fp32 compute",
                                   flag="--palettize", choices=tuple(map(str, PALETTE_BITS)), metavar="N")
    min_deployment_target: str = option(DEFAULT_DEPLOYMENT_TARGET,
                                        "minimum OS as a coremltools target name, e.g. iOS17 or macOS14")

    @field_validator("palettize")
    @classmethod
    def _palette_bits(cls, value: int | None) -> int | None:
        if value is not None and value not in PALETTE_BITS:
            raise ValueError(f"must be one of {', '.join(map(str, PALETTE_BITS))}")
        return value

    @field_validator("min_deployment_target")
    @classmethod
    def _target_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]+[0-9]+(_[0-9]+)?", value):
            raise ValueError("not a coremltools target name")
        return value

    def suffix(self) -> str:
        """``-p<bits>`` for palettized bundles, so they do not replace the plain fp16/fp32 one."""
        return f"-p{self.palettize}" if self.palettize else ""


def check_request(request: PrecisionRequest, palettize: int | None) -> None:
    """What can be refused before anything is converted: bad palette bits, impossible combinations.

    Raises:
        ConfigError: bad palette bits.
        UnsupportedError: a combination coremltools cannot build (on this host).
    """
    if palettize is not None and palettize not in PALETTE_BITS:
        raise ConfigError(f"--palettize must be one of {', '.join(map(str, PALETTE_BITS))}, got {palettize}")
    if request.precision not in ("fp32", "fp16", "int8"):
        raise UnsupportedError(f"the coreml target has no precision {request.precision!r}")
    if request.precision == "int8" and palettize is not None:
        raise UnsupportedError("--palettize replaces int8 weight quantization", hint="use --precision fp16 --palettize N")
    if request.precision == "int8" and request.int8_mode == "static" and sys.platform != "darwin":
        raise UnsupportedError(
            "Core ML activation INT8 (--int8-mode static) calibrates by running the Core ML model, which "
            "coremltools can only do on macOS",
            hint="build it on a Mac, or use --int8-mode auto on this host (int8 weights, float16 activations)",
        )


def make_plan(request: PrecisionRequest, palettize: int | None, deployment_target: str) -> CoreMLPlan:
    """Resolve the precision request into a :class:`CoreMLPlan`.

    Raises:
        ConfigError: bad palette bits.
        UnsupportedError: a combination coremltools cannot build on this host or deployment target, or
            activation INT8 without calibration data.
    """
    check_request(request, palettize)
    compute = "fp32" if request.precision == "fp32" else "fp16"
    weights = "palettize" if palettize else ("int8" if request.precision == "int8" else "float")
    activations = "int8" if request.precision == "int8" and request.int8_mode == "static" else "float"
    plan = CoreMLPlan(compute, weights, palettize, activations, deployment_target, _threshold(weights, palettize))
    if plan.activations == "int8" and request.calibration is None:
        raise UnsupportedError("Core ML activation INT8 needs calibration data", hint="pass --calib")
    return plan


def _threshold(weights: str, nbits: int | None) -> int:
    if weights == "palettize" and nbits:
        return max(WEIGHT_THRESHOLD, 4 * 2**nbits)  # a LUT of 2**n entries must pay for itself
    return WEIGHT_THRESHOLD


class CoreMLTarget(Target):
    """Core ML ``.mlpackage`` bundles (ML programs) for iOS, macOS, watchOS and tvOS (options: :class:`CoreMLOptions`)."""

    name = "coreml"
    extra = "coreml"
    routes = (FORMAT_PT2, FORMAT_SAVEDMODEL, FORMAT_KERAS)
    precisions = ("fp32", "fp16", "int8")
    modules = ("coremltools",)
    route_modules = {FORMAT_PT2: ("torch",), FORMAT_SAVEDMODEL: ("tensorflow",), FORMAT_KERAS: ("tensorflow",)}
    packages = ("coremltools",)
    Options = CoreMLOptions
    runs_on = ("darwin",)
    runner_options = {"compute_units": PARITY_COMPUTE_UNITS}
    serves = False
    color = "#2ca02c"

    def validate(self, request: PrecisionRequest) -> None:
        super().validate(request)
        check_request(request, request.options_as(CoreMLOptions).palettize)

    # check_available is the base class's, by module lookup only: importing coremltools costs 8 s or more,
    # which a rebuild whose export is cached never needs (the export imports it and checks the deployment
    # target before converting)

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        self.plan(request)  # refuse impossible combinations before anything is converted
        return []  # coremltools applies the precision during export

    def plan(self, request: PrecisionRequest) -> CoreMLPlan:
        """The build plan for a request and its :class:`CoreMLOptions`.

        Raises:
            UnsupportedError: see :func:`make_plan`.
        """
        options = request.options_as(CoreMLOptions)
        return make_plan(request, options.palettize, options.min_deployment_target)

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        plan = self.plan(request)
        log = io.StringIO()
        with _converter_errors(log), _captured(log):
            ct = _coremltools()
            _check_target(ct, plan)
            float_model = _convert(ct, artifact, plan, work_dir)
            model = _compress(ct, float_model, plan, request)
            package = bundle_dir / MODEL_DIR
            _save(model, package)
            inputs, outputs, checks = validate_package(package, artifact, plan)
            if model is not float_model:
                checks["weight_error"] = weight_error(_program(float_model), _program(model))
            for converted in {id(m): m for m in (float_model, model)}.values():
                _drop_temp_package(converted)
        files = tuple(sorted(str(p.relative_to(bundle_dir)) for p in package.rglob("*") if p.is_file()))
        details = _details(artifact, plan, package, checks)
        return ExportResult(MODEL_DIR, files, inputs, outputs, details)

    def bundle_feeds(self, feeds: list[Feed], result: ExportResult) -> list[Feed]:
        dtypes = {s.name: s.dtype for s in result.inputs}
        return [{k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feed.items()} for feed in feeds]



def _drop_temp_package(model: Any) -> None:
    """Remove the package coremltools wrote for ``model`` in the system temp folder (it removes it only at
    interpreter exit: a build farm worker or a matrix build would collect one per Core ML build)."""
    if getattr(model, "is_package", False) and getattr(model, "is_temp_package", False):
        shutil.rmtree(model.package_path, ignore_errors=True)


@contextlib.contextmanager
def _captured(log: io.StringIO | None = None) -> Iterator[io.StringIO]:
    """Send coremltools' progress bars, warnings and log lines to ``log`` instead of the terminal."""
    buffer = log if log is not None else io.StringIO()
    with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
        yield buffer


@contextlib.contextmanager
def _converter_errors(log: io.StringIO) -> Iterator[None]:
    """Turn converter failures into user-facing errors that carry the converter's output."""
    try:
        yield
    except EdgecError:
        raise  # edgec's own checks: the message says it all
    except NotImplementedError as exc:
        raise_if_bug(exc, "converting with coremltools")
        raise UnsupportedError(f"coremltools cannot convert this model: {brief(exc)}",
                               log=log.getvalue() + traceback.format_exc()) from exc
    except Exception as exc:  # coremltools' errors (any type) on this model; a bug in edgec's steps is raised as one
        raise_if_bug(exc, "converting with coremltools")
        raise ExportError(f"coremltools failed: {type(exc).__name__}: {brief(exc)}",
                          log=log.getvalue() + traceback.format_exc()) from exc



def _coremltools() -> Any:
    """coremltools, imported once with Python's and the native libraries' output captured: it logs about
    its optional native parts and, where TensorFlow is installed, imports it (absl and oneDNN banners go
    straight to file descriptor 2, past Python's sys.stderr)."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgec-ct-") as tmp, native_output_to(Path(tmp) / "import.log"), _captured():
        return require("coremltools", "coreml", "the coreml target")


def _check_target(ct: Any, plan: CoreMLPlan) -> None:
    names = [n for n in ct.target.__members__]
    if plan.deployment_target not in names:
        raise ConfigError(f"unknown Core ML deployment target {plan.deployment_target!r}; expected one of "
                          f"{', '.join(n for n in names if n.startswith(('iOS', 'macOS')))}")
    spec_version = ct.target[plan.deployment_target].value
    if spec_version < ct.target.iOS16.value:
        raise UnsupportedError(f"ML programs with compressed weights need iOS16/macOS13 or later, not {plan.deployment_target}")
    if plan.activations == "int8" and spec_version < ct.target[ACTIVATION_MIN_TARGET].value:
        raise UnsupportedError(f"Core ML activation INT8 needs iOS17/macOS14 or later, not {plan.deployment_target}")


def _convert(ct: Any, artifact: ModelArtifact, plan: CoreMLPlan, work_dir: Path) -> Any:
    import numpy as np

    precision = ct.precision.FLOAT32 if plan.compute == "fp32" else ct.precision.FLOAT16
    outputs = [ct.TensorType(name=s.name, dtype=np.float32 if s.dtype.startswith("float") else None)
               for s in artifact.outputs]
    common = {"convert_to": "mlprogram", "compute_precision": precision, "outputs": outputs,
              "minimum_deployment_target": ct.target[plan.deployment_target]}
    if artifact.format == FORMAT_PT2:
        from edgec.frameworks.torch_utils import safe_load_pt2
        from edgec.targets._coreml_torch import convertible

        program = convertible(safe_load_pt2(artifact.path).run_decompositions())
        return ct.convert(program, **common)
    if artifact.format in (FORMAT_SAVEDMODEL, FORMAT_KERAS):
        return _convert_tensorflow(ct, artifact, work_dir, {k: v for k, v in common.items() if k != "outputs"})
    raise UnsupportedError(f"the coreml target cannot convert a {artifact.format} model")


def _convert_tensorflow(ct: Any, artifact: ModelArtifact, work_dir: Path, common: dict[str, Any]) -> Any:
    """SavedModel / Keras through coremltools' TensorFlow frontend.

    The serving SavedModel comes from the TensorFlow importer (Keras models are exported to one);
    outputs are renamed afterwards to the source's names, since TensorFlow names graph outputs itself.
    """
    from edgec.frameworks.tf_utils import serving_saved_model, tf_module

    tf_module()
    saved = serving_saved_model(artifact, work_dir / "savedmodel")
    inputs = [ct.TensorType(name=s.name, shape=_ct_shape(ct, s)) for s in artifact.inputs]
    model = ct.convert(str(saved), source="tensorflow", inputs=inputs, **common)
    spec = model.get_spec()
    for old, new in zip([o.name for o in spec.description.output], [s.name for s in artifact.outputs]):
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)


def _ct_shape(ct: Any, spec: TensorSpec) -> Any:
    """Fixed dims as they are; an unknown dim (a Keras batch of None) as :data:`MAX_DIM`-bounded, like a
    ``torch.export`` dim without bounds (ML programs refuse unbounded ranges)."""
    return ct.Shape([d if isinstance(d, int) else ct.RangeDim(1, MAX_DIM) for d in spec.shape])


def _compress(ct: Any, model: Any, plan: CoreMLPlan, request: PrecisionRequest) -> Any:
    import coremltools.optimize.coreml as cto

    if plan.activations == "int8":
        assert request.calibration is not None  # checked by make_plan
        config = cto.OptimizationConfig(
            global_config=cto.experimental.OpActivationLinearQuantizerConfig(mode="linear_symmetric"))
        samples = [dict(feed) for feed in request.calibration.feeds()]
        model = cto.experimental.linear_quantize_activations(model, config, samples)
    if plan.weights == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=plan.weight_threshold)
        skip = {name: None for name in _few_channel_weights(_program(model), plan.weight_threshold)}
        return cto.linear_quantize_weights(model, config=cto.OptimizationConfig(global_config=op, op_name_configs=skip))
    if plan.weights == "palettize":
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=plan.nbits, weight_threshold=plan.weight_threshold)
        return cto.palettize_weights(model, config=cto.OptimizationConfig(global_config=op))
    return model


def _program(model: Any) -> Any:
    """The model's MIL program, read back from its spec where coremltools kept none (the TensorFlow route
    rebuilds the model from its spec to rename the outputs): compression reads the same program back."""
    if model._mil_program is not None:
        return model._mil_program
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = model.get_spec()
    return load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)


def _few_channel_weights(program: Any, threshold: int) -> list[str]:
    """Weights with fewer than :data:`MIN_CHANNELS` rows along axis 0, which int8 quantization leaves in float.

    coremltools quantizes per channel along axis 0. MiniLM's converted program holds (1, 384, 384)
    attention matrices (the converter adds the leading axis): one scale for 147k values gave up to 5.4%
    relative L2 error, against at most about 2% for the per-channel weights (measured).
    """
    if program is None:
        return []
    return [op.name for op in _operations(program.functions["main"])
            if op.op_type == "const" and getattr(op.outputs[0].val, "ndim", 0) >= 2
            and op.outputs[0].val.size > threshold and op.outputs[0].val.shape[0] < MIN_CHANNELS]


def _save(model: Any, package: Path) -> None:
    """Save byte-reproducibly: no conversion date, deterministic protobuf, path-derived package identifiers."""
    for key in _DROPPED_METADATA:
        if key in model.user_defined_metadata:
            del model.user_defined_metadata[key]
    model.save(str(package))
    for name in _DROPPED_FILES:
        (package / name).unlink(missing_ok=True)
    spec_file = package / SPEC_FILE
    spec = type(model.get_spec())()
    spec.ParseFromString(spec_file.read_bytes())
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))  # map fields in key order
    _stabilise_manifest(package / "Manifest.json")
    for path in package.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # coremltools writes 0600 files


def _stabilise_manifest(path: Path) -> None:
    """Replace the random item identifiers of an ``.mlpackage`` manifest with path-derived ones."""
    data = json.loads(path.read_text())
    entries = data.get("itemInfoEntries", {})
    renamed = {old: str(uuid.uuid5(_UUID_NAMESPACE, entry.get("path", old))).upper() for old, entry in entries.items()}
    data["itemInfoEntries"] = {renamed[old]: entry for old, entry in entries.items()}
    if data.get("rootModelIdentifier") in renamed:
        data["rootModelIdentifier"] = renamed[data["rootModelIdentifier"]]
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


# --- validation on any host -------------------------------------------------------------------------


def validate_package(package: Path, artifact: ModelArtifact, plan: CoreMLPlan
                     ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, Any]]:
    """Check a saved package without executing it: spec loads, interface matches, weight storage.

    Returns:
        the bundle's input and output specs, and the check results for the manifest.

    Raises:
        ExportError: a check fails (the package is not what was asked for).
    """
    ct = _coremltools()
    try:
        spec = ct.utils.load_spec(str(package))
        program = load_program(package, spec)
    except Exception as exc:  # coremltools' errors (any type) reading the package back; edgec's bugs raised as such
        raise_if_bug(exc, f"reading the saved {MODEL_DIR} back")
        raise ExportError(f"the saved {MODEL_DIR} does not load: {brief(exc)}") from exc
    inputs, ranges = _check_inputs(spec, artifact.inputs)
    outputs = _check_outputs(program, artifact.outputs)
    storage = weight_storage(program)
    _check_storage(storage, plan)
    checks = {"spec_loads": True, "io_match_source": True, "weights_expected": plan.expected_storage(),
              "dynamic_dims": ranges, "specification_version": int(spec.specificationVersion),
              "weight_storage": summarise_storage(storage)}
    return inputs, outputs, checks


def load_program(package: Path, spec: Any = None) -> Any:
    """The package's ML program as a coremltools MIL ``Program`` (weights read from ``weight.bin``)."""
    ct = _coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = spec if spec is not None else ct.utils.load_spec(str(package))
    return load(spec, spec.specificationVersion, file_weights_dir=str(package / WEIGHTS_DIR))


_ARRAY_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32", "INT8": "int8"}
"""Core ML ``ArrayFeatureType.ArrayDataType`` names -> numpy dtype names."""


def _check_inputs(spec: Any, sources: tuple[TensorSpec, ...]) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    described = list(spec.description.input)
    if [d.name for d in described] != [s.name for s in sources]:
        raise ExportError(f"Core ML inputs {[d.name for d in described]} do not match the source's {[s.name for s in sources]}")
    specs, ranges = [], {}
    for desc, source in zip(described, sources):
        array = desc.type.multiArrayType
        bounds = _dim_bounds(array)
        if len(bounds) != len(source.shape) or any(isinstance(d, int) and b != (d, d) for d, b in zip(source.shape, bounds)):
            raise ExportError(f"Core ML input {desc.name!r} has dims {bounds}; the source has {list(source.shape)}")
        dynamic = {i: list(b) for i, b in enumerate(bounds) if b[0] != b[1]}
        if dynamic:
            ranges[desc.name] = dynamic
        dtype = _ARRAY_DTYPES.get(type(array).ArrayDataType.Name(array.dataType), source.dtype)
        extra = {**source.extra, **({"source_dtype": source.dtype} if dtype != source.dtype else {})}
        specs.append(TensorSpec(source.name, source.shape, dtype, extra))
    return tuple(specs), ranges


def _dim_bounds(array: Any) -> list[tuple[int, int]]:
    if array.shapeRange.sizeRanges:
        return [(int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges]
    if array.enumeratedShapes.shapes:
        shapes = [list(s.shape) for s in array.enumeratedShapes.shapes]
        return [(min(dims), max(dims)) for dims in zip(*shapes)]
    return [(int(d), int(d)) for d in array.shape]


def _check_outputs(program: Any, sources: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    from coremltools.converters.mil.mil import types

    outputs = list(program.functions["main"].outputs)
    if [o.name for o in outputs] != [s.name for s in sources]:
        raise ExportError(f"Core ML outputs {[o.name for o in outputs]} do not match the source's {[s.name for s in sources]}")
    specs = []
    for out, source in zip(outputs, sources):
        shape = list(out.shape)
        if len(shape) != len(source.shape) or any(isinstance(d, int) and isinstance(c, int) and d != c
                                                  for d, c in zip(source.shape, shape)):
            raise ExportError(f"Core ML output {out.name!r} has shape {shape}; the source has {list(source.shape)}")
        dtype = {"fp32": "float32", "fp16": "float16", "int32": "int32"}.get(types.builtin_to_string(out.dtype), source.dtype)
        extra = {**source.extra, **({"source_dtype": source.dtype} if dtype != source.dtype else {})}
        specs.append(TensorSpec(source.name, source.shape, dtype, extra))
    return tuple(specs)


@dataclass(frozen=True)
class StoredWeight:
    """One weight tensor of an ML program and how it is stored."""

    name: str
    storage: str
    """``fp32``, ``fp16``, ``int8``/``uint8``/``int4``... for linear quantization, ``palette<n>`` for LUTs."""
    elements: int
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)


def weight_storage(program: Any) -> list[StoredWeight]:
    """Every weight of the program's main function with its storage type."""
    weights = []
    for op in _operations(program.functions["main"]):
        stored = _classify(op)
        if stored is not None:
            weights.append(stored)
    return weights


def _operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", ()):
            yield from _operations(inner)


def _classify(op: Any) -> StoredWeight | None:
    from coremltools.converters.mil.mil import types

    out = op.outputs[0]
    shape = tuple(int(d) for d in out.shape) if all(isinstance(d, int) for d in out.shape) else ()
    elements = math.prod(shape) if shape else 0
    if op.op_type == "const":
        feeds_constexpr = any(child.op_type.startswith("constexpr_") for child in out.child_ops)
        label = types.builtin_to_string(out.dtype)
        if feeds_constexpr or label not in ("fp32", "fp16") or elements < MIN_WEIGHT_ELEMENTS:
            return None
        return StoredWeight(op.name, label, elements, shape)
    if op.op_type == "constexpr_lut_to_dense":
        lut = op.lut.shape
        entries = lut[-1] if len(lut) == 1 else lut[-2]
        return StoredWeight(op.name, f"palette{int(math.log2(entries))}", elements, shape)
    data = {"constexpr_affine_dequantize": "quantized_data", "constexpr_blockwise_shift_scale": "data"}.get(op.op_type)
    if data is not None:
        return StoredWeight(op.name, types.builtin_to_string(getattr(op, data).dtype), elements, shape)
    if op.op_type.startswith("constexpr_"):
        return StoredWeight(op.name, op.op_type, elements, shape)
    return None


def summarise_storage(weights: list[StoredWeight]) -> dict[str, dict[str, int]]:
    """``{storage: {"tensors": n, "elements": m}}``, sorted by storage name."""
    summary: dict[str, dict[str, int]] = {}
    for w in weights:
        entry = summary.setdefault(w.storage, {"tensors": 0, "elements": 0})
        entry["tensors"] += 1
        entry["elements"] += w.elements
    return dict(sorted(summary.items()))


def _check_storage(weights: list[StoredWeight], plan: CoreMLPlan) -> None:
    expected = plan.expected_storage()

    def wanted(w: StoredWeight) -> str:
        compressible = plan.weights != "float" and w.rank >= 2 and w.elements > plan.weight_threshold
        if compressible and plan.weights == "int8" and w.shape[0] < MIN_CHANNELS:
            compressible = False
        return expected if compressible else plan.compute

    wrong = [w for w in weights if w.storage != wanted(w)]
    if wrong:
        shown = ", ".join(f"{w.name} as {w.storage}" for w in wrong[:3])
        raise ExportError(f"{len(wrong)} weight(s) are not stored as {expected} as asked: {shown}")
    if plan.weights != "float" and not any(w.storage == expected for w in weights):
        raise ExportError(f"no weight of the model was compressed to {expected}")


def weight_error(float_program: Any, compressed_program: Any) -> dict[str, Any]:
    """Relative L2 error of each compressed weight against the same weight before compression.

    Compression ops are named after the float constant they replace plus a suffix (``_quantized``,
    ``_palettized``); their dense values come from coremltools' own decompression, so this measures
    what the device will compute with, without running the model.
    """
    import numpy as np

    floats = {op.name: op.outputs[0].val for op in _operations(float_program.functions["main"]) if op.op_type == "const"}
    errors = []
    for op in _operations(compressed_program.functions["main"]):
        ref = floats.get(op.name.rsplit("_", 1)[0]) if op.op_type.startswith("constexpr_") else None
        if ref is None:
            continue
        got = np.asarray(op.materialized_val_inference(), dtype=np.float64)
        ref64 = np.asarray(ref, dtype=np.float64)
        errors.append(float(np.linalg.norm(got - ref64) / max(float(np.linalg.norm(ref64)), 1e-30)))
    if not errors:
        return {"compared": 0}
    return {"compared": len(errors), "max_rel_l2": float(f"{max(errors):.4g}"),
            "mean_rel_l2": float(f"{sum(errors) / len(errors):.4g}")}


def package_sizes(package: Path) -> dict[str, int]:
    """Bytes of the whole package, of ``weight.bin`` and of the model spec."""
    files = [p for p in package.rglob("*") if p.is_file()]
    weights = package / WEIGHTS_DIR / "weight.bin"
    spec = package / SPEC_FILE
    return {"package_bytes": sum(p.stat().st_size for p in files),
            "weights_bytes": weights.stat().st_size if weights.is_file() else 0,
            "spec_bytes": spec.stat().st_size if spec.is_file() else 0}


def _details(artifact: ModelArtifact, plan: CoreMLPlan, package: Path, checks: dict[str, Any]) -> dict[str, Any]:
    return {
        "runtime": "coreml",
        "model_type": "mlprogram",
        "converted_from": artifact.format,
        "plan": asdict(plan),
        "sizes": package_sizes(package),
        "validation": checks,
        "parity_compute_units": PARITY_COMPUTE_UNITS,
        "parity_on_build_host": "measured" if sys.platform == "darwin" else
        "not measured: coremltools runs Core ML models only on macOS; run 'edgec verify' on a Mac",
    }
