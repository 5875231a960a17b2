"""``openvino`` target: OpenVINO IR (``model.xml`` + ``model.bin``) for Intel CPUs, GPUs and NPUs.

Routes (:attr:`OpenVinoTarget.routes` lists them in preference order: pt2, savedmodel, keras, onnx):
1. ``pt2``: a torch source goes straight through ``openvino.convert_model(ExportedProgram)``, OpenVINO's
   own PyTorch frontend: no ONNX export, no onnxscript. Static dims and tensor names are restored from
   the artifact's specs (the frontend leaves every dim dynamic and names outputs after torch ops).
   Measured on the digits CNN and MiniLM: same fidelity as through ONNX, latency equal within noise.
   A program the frontend rejects is an export error whose hint is to build from an ONNX export instead.
2. ``onnx``: ONNX sources (after edgec's clean-up passes) through ``openvino.convert_model(path)``, after
   the ``If`` nodes that fixed input dims decide (torch's rank and squeeze checks) became their branch
   (:mod:`edgec.targets._openvino_ifs`; ``target_details.folded_ifs``): OpenVINO converts both branches and
   refuses the one that never runs, or gives the ``If`` an unknown rank that a following ``Conv`` refuses.
3. ``savedmodel`` / ``keras``: TensorFlow sources through OpenVINO's TensorFlow frontend,
   ``openvino.convert_model(saved_model_dir)`` on the ``serving_default`` signature (a Keras model, ``.keras``
   or ``.h5``, is first exported to one, as for the tflite target). The frontend orders and names ports by
   the signature's keys, so the artifact's specs are matched by name, not position.
The route taken is recorded in ``target_details`` (``route``, ``converter``).

Precision is applied here with OpenVINO's own tools, so :meth:`OpenVinoTarget.precision_passes` is empty:
- ``fp32``: weights saved as f32.
- ``fp16``: ``openvino.save_model(compress_to_fp16=True)``: f16 weights, decompressed when compiled.
- ``int8`` ``static``: ``nncf.quantize`` (FakeQuantize, int8 weights and activations) fed by the build's
  calibration set through :func:`edgec.calibration.nncf_adapter.to_nncf_dataset`. ``model_type`` is
  ``transformer`` for MatMul-dominated models (SmoothQuant, attention-aware scopes; MiniLM: cosine
  mean 0.997 vs 0.60 with nncf's defaults, measured) and nncf's default otherwise.
  ``preset`` ``auto`` is ``mixed`` (asymmetric activations) when SiLU/GELU-like activations outnumber ReLUs
  (:mod:`edgec.targets._openvino_preset`; YOLOv8n: detection agreement 0.956, was a collapsed build).
  Recurrent ops (``LSTMSequence``, ``GRUSequence``, ``RNNSequence``, cells) stay in float unless the
  ``recurrent`` option is ``int8`` (``target_details.quantization.recurrent_float`` names them; Resemblyzer
  and silero-vad's LSTM collapsed with their states quantized). The op producing each model output stays float
  unless it is a convolution or matmul, or the ``outputs`` option is ``int8`` (``kept_float_outputs``;
  :func:`edgec.targets._openvino_preset.output_float_ops`: silero-vad 16k's speech probability was clipped to
  the calibration range before its final ``ReduceMean``). Squares summed up to their root (``sqrt(re^2 + im^2)`` of
  an STFT, an L2 norm) stay float unless the ``squares`` option is ``int8`` (``kept_float_squares``;
  :func:`edgec.targets._openvino_preset.square_float_ops`: silero-vad 16k's power spectrum in INT8 lost its quiet bins).
- ``int8`` ``dynamic``: ``nncf.compress_weights`` INT8_ASYM: int8 weights, float activations; no data needed.
  ``Gather``/``MatMul`` ops reading a float vector keep it float (``kept_float_vectors``,
  :func:`edgec.targets._openvino_preset.vector_weight_ops`: USE multilingual v3's per-row scales failed in nncf).
- ``int8`` ``auto`` (default): ``static`` when calibration data is given (:func:`weights_only_reason`);
  otherwise weight-only INT8, and ``target_details.quantization.reason`` says so (as the onnx target falls
  back to dynamic INT8).

Calibration methods map to nncf activation range estimators: ``minmax`` -> nncf's default (mean over
samples of per-tensor min/max), ``percentile`` -> ``MEAN_QUANTILE``, ``entropy`` -> ``HISTOGRAM``.
MiniLM mean cosine, measured: 0.9966, 0.9937 and 0.9963 respectively.

Options (:class:`OpenVinoOptions`: model type, preset, bias correction, ignored op types, inference
precision) come typed in the request (``--target-option KEY=VALUE``), validated before anything is built.

OpenVINO's CPU plugin runs float layers in bf16 by default on CPUs that have it; the bundle declares
``INFERENCE_PRECISION_HINT`` (f32 unless the ``inference_precision`` option says otherwise) in the model's
``runtime_options`` rt_info and the runner applies it, so parity is measured as it will run.

Rebuilds are byte-identical: OpenVINO numbers auto-named nodes (``Constant_25769``) from a process-wide
counter, so the target renumbers them in graph order (``Constant_c3``, :func:`canonical_names`): once
right after conversion, so an FP32 and an INT8 bundle of one model share their op names, and once
before saving for the nodes quantization added.

Fidelity (``edgec debug``, ``--report-layers``, ``--max-drop``): :meth:`OpenVinoTarget.compare_layers`
makes the output of every float op of the FP32 IR and of its namesake in the reduced-precision IR an
extra model output and runs both on CPU in f32; ops are named by their friendly names (what nncf's
``IgnoredScope(names=...)`` takes) and grouped into source layers by their weights' names
(``conv3.weight`` -> ``conv3``) or the first part of their names (``linear/aten.linear.default/MatMul``
-> ``linear``). ``PrecisionRequest.exclude`` becomes the ignored scope of ``nncf.quantize`` (and of
``nncf.compress_weights``): those ops keep float inputs and weights. On the ``pt2`` route layers are the torch
modules that called the ops (``convs.2``, ``act@1`` for a module's second call), from the program's
``nn_module_stack`` kept in the IR's rt_info (:mod:`edgec.targets._openvino_layers`).

A ``--max-drop`` search's candidates (:meth:`OpenVinoTarget.reuse`) share one conversion of the model (each export
gets a clone) and nncf's statistics per model, calibration set, method and options (:mod:`edgec.targets._openvino_reuse`,
:mod:`edgec.targets._openvino_stats`): each candidate is still nncf's quantization, saved and run with OpenVINO,
byte-identical to a build that shares nothing. Seconds per candidate, measured (2-core VM,
``python -m edgec.benchmarks.openvino_search_reuse``): fragile CNN 0.76 -> 0.25, magika 1.39 -> 0.50.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import (
    CalibrationError,
    ConfigError,
    ExportError,
    UnsupportedError,
    brief,
    raise_if_bug,
    require,
)
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2, ModelArtifact, sha256_file
from edgec.frameworks import fidelity
from edgec.frameworks.tf_utils import FORMAT_KERAS, FORMAT_SAVEDMODEL
from edgec.runtime_shims.openvino import RUNTIME_OPTIONS
from edgec.targets import _openvino_reuse, _openvino_stats
from edgec.targets._openvino_convert import convert_sized, quiet
from edgec.targets._openvino_layers import fx_name, port_name, stored_layers
from edgec.targets._openvino_preset import (
    CONVS,
    RECURRENT_TYPES,
    WEIGHTED,
    auto_preset,
    output_float_ops,
    recurrent_float,
    square_float_ops,
    vector_weight_ops,
)
from edgec.targets.base import ExportResult, Feed, LayerTools, PassStep, PrecisionRequest, Target
from edgec.targets.options import TargetOptions, option

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
MODEL_NAME = "model"
_AUTO_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]*)_(\d+)\b")
_CANONICAL = re.compile(r"\b[A-Z][A-Za-z0-9]*_c(\d+)\b")
"""A name :func:`canonical_names` gave (``Constant_c12``)."""
_PROBE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
_INLINED = re.compile(r"^(?:/?[^/]*_(?:then|else)_branch__Inline_\d+__(?=/))+")
"""The prefix OpenVINO's ONNX frontend gives the ops of an ``If`` branch it inlined (a condition it could fold:
silero-vad's ``If_0_then_branch__Inline_0__/stft/Pow``): not a layer, or one layer would hold the whole model."""
_SKIP_TYPES = frozenset({"Parameter", "Constant", "Result", "FakeQuantize", "Convert", "ShapeOf"})
_OP_NAME = re.compile(r'\sname="[^"]*"')
"""An IR element's ``name`` attribute (ops' friendly names; ports' tensor names are ``names``)."""
_MOVERS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose", "StridedSlice", "Slice", "Gather", "Pad",
                     "MaxPool", "Interpolate", "Broadcast", "Tile", "DepthToSpace", "SpaceToDepth", "ShuffleChannels"})
"""One-input ops nncf moves a reader's quantizer up through (:func:`_reads_quantized`)."""
_AGNOSTIC = _MOVERS | {"Split", "VariadicSplit"}
"""Ops whose input quantizer is their readers' (nncf moved it up): kept in float alone, they change nothing."""
_DEQUANTIZE = _MOVERS | {"Convert", "Subtract", "Multiply"}
"""Ops between a quantized value (a moved quantizer, int8 weights) and the op reading it (:func:`_reads_quantized`)."""
_DEQUANTIZE_DEPTH = 6
_INT_WEIGHTS = frozenset({"i8", "u8", "i4", "u4"})
_RT_INFO = re.compile(r"<rt_info>.*?</rt_info>", re.S)
"""The model's runtime info after its edges (conversion parameters, nncf's quantization config)."""
_RANGES = {"minmax": None, "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


class OpenVinoOptions(TargetOptions):
    """Options of the openvino target (unknown keys rejected)."""

    model_type: Literal["auto", "transformer", "default"] = option(
        "auto", "nncf model type for static INT8: auto (transformer when MatMuls outnumber convs), transformer, default")
    preset: Literal["auto", "performance", "mixed"] = option(
        "auto", "nncf preset: auto (mixed when SiLU/GELU-like activations outnumber ReLUs, else nncf's default), "
                "performance (symmetric activations), mixed (asymmetric)")
    fast_bias_correction: bool = option(True, "true or false (nncf's full bias correction)")
    ignored_types: tuple[str, ...] = option(
        (), "comma-separated OpenVINO op types kept in float by INT8, e.g. Softmax,MVN")
    recurrent: Literal["float", "int8"] = option(
        "float", "recurrent ops (LSTMSequence, GRUSequence, RNNSequence, cells) in static INT8: float (default), int8")
    outputs: Literal["float", "int8"] = option(
        "float", "the op producing each model output (not a convolution or matmul) in static INT8: float (default), int8")
    squares: Literal["float", "int8"] = option(
        "float", "squares summed up to their root (an STFT magnitude, an L2 norm) in static INT8: float (default), int8")
    inference_precision: Literal["f32", "bf16", "f16"] = option(
        "f32", "INFERENCE_PRECISION_HINT the bundle declares: f32 (FP32 parity), bf16, f16")

    @field_validator("ignored_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value


class OpenVinoTarget(Target, LayerTools):
    """OpenVINO IR bundles, run with the OpenVINO runtime (CPU here; GPU/NPU on devices)."""

    name = "openvino"
    extra = "openvino"
    routes = (FORMAT_PT2, FORMAT_SAVEDMODEL, FORMAT_KERAS, FORMAT_ONNX)
    route_modules = {FORMAT_SAVEDMODEL: ("tensorflow",), FORMAT_KERAS: ("tensorflow",)}
    precisions = ("fp32", "fp16", "int8")
    modules = ("openvino", "nncf")
    runtime_modules = ("openvino",)
    packages = ("openvino", "nncf")
    precision_notes = {"fp16": "halves storage; weights are decompressed to f32 when compiled: 1.00x fp32 latency "
                               "(measured); fp16 compute: --target-option inference_precision=f16"}
    Options = OpenVinoOptions
    dynamic_shapes = True
    export_version = "6"  # 2: preset auto picks mixed for SiLU-like activations; If nodes folded from fixed dims; 3: recurrent ops float; 4: output ops float; 5: square-root chains float; 6: weight-only INT8 keeps float vectors float
    calibration_methods = ("minmax", "entropy", "percentile")
    sparsity_gain = "size after compression"
    color = "#9467bd"

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        if request.precision not in self.precisions:
            raise UnsupportedError(f"the openvino target has no precision {request.precision!r}")
        return []

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        ov = require("openvino", self.extra, "the openvino target")
        options = request.options_as(OpenVinoOptions)
        model_key = (artifact.digest, artifact.format, artifact.inputs, artifact.outputs)  # what conversion reads
        model, details, artifact = _openvino_reuse.converted(model_key, request.data_shapes,
                                                             lambda: _convert(ov, artifact, work_dir, request))
        if request.precision == "int8":
            _check_names(model, request.exclude)
            model, details["quantization"] = _int8(model, request, options, (model_key, artifact.inputs))  # as converted
        details["weights"] = {"fp32": "f32", "fp16": "f16 (compress_to_fp16)", "int8": "int8"}[request.precision]
        declared = {"INFERENCE_PRECISION_HINT": options.inference_precision}
        for key, value in declared.items():
            model.set_rt_info(value, [RUNTIME_OPTIONS, key])
        details["runtime_options"] = declared
        canonical_names(model)
        _save(ov, model, bundle_dir / MODEL_FILE, compress_to_fp16=request.precision == "fp16")
        details["runtime"] = "openvino"
        return ExportResult(MODEL_FILE, (MODEL_FILE, WEIGHTS_FILE), artifact.inputs, artifact.outputs, details)

    def reuse(self) -> AbstractContextManager[Any]:
        """Builds in this scope share the converted FP32 model and nncf's statistics, keyed by model, calibration
        set, method and options (:mod:`edgec.targets._openvino_reuse`)."""
        return _openvino_reuse.sharing()

    def model_digest(self, folder: Path, files: Iterable[str]) -> str:
        """sha256 over the weights and the IR without what differs between exports of the same model: the names
        OpenVINO and nncf give the ops they add (``Constant_385201``, counted per process) and the model's
        ``rt_info`` (nncf's ignored scope: the request, not the model). Keeping an activation in float that nncf
        quantizes at its consumer's input changes neither (YOLOv8n: 20 of the search's 30 candidates)."""
        digest = hashlib.sha256()
        for name in sorted(files):
            path = folder / name
            if name.endswith(".xml"):
                graph, edges, tail = path.read_text(encoding="utf-8").rpartition("</edges>")
                text = _OP_NAME.sub("", graph) + edges + _RT_INFO.sub("", tail)
                digest.update(f"{name}\0".encode() + hashlib.sha256(text.encode()).hexdigest().encode())
            else:
                digest.update(f"{name}\0".encode() + sha256_file(path).encode())
        return digest.hexdigest()

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[fidelity.LayerDivergence]:
        """Per-op divergence of an IR from the FP32 IR of the same model (see the module docstring)."""
        ov = require("openvino", self.extra, "layer comparison for the openvino target")
        core = ov.Core()
        ref_model, cand_model = core.read_model(str(reference)), core.read_model(str(candidate))
        cand_ops = {op.get_friendly_name(): op for op in cand_model.get_ordered_ops()}
        nodes, ref_ports, cand_ports = [], [], []
        layers = op_layers(ref_model)
        for op in ref_model.get_ordered_ops():
            name = op.get_friendly_name()
            twin = cand_ops.get(name)
            if op.get_type_name() in _SKIP_TYPES or not op.outputs() or not op.output(0).get_element_type().is_real():
                continue
            inputs = tuple(port_name(i.get_source_output()) for i in op.inputs())
            real = [k for k in range(op.get_output_size()) if op.output(k).get_element_type().is_real()]
            ports = [port_name(op.output(k)) for k in real]  # every float output: an LSTM's states too
            quantized = twin is None or _reads_quantized(twin)
            nodes.append(fidelity.NodeInfo(name, op.get_type_name(), layers[name], name, inputs, tuple(ports[1:]), quantized))
            if twin is not None and twin.get_type_name() == op.get_type_name():
                ref_ports += [(port, op.output(k)) for port, k in zip(ports, real)]
                cand_ports += [(port, twin.output(k)) for port, k in zip(ports, real)]
        ref_run, cand_run = _probe(core, ref_model, [p for _, p in ref_ports]), _probe(core, cand_model, [p for _, p in cand_ports])
        sums = fidelity.ErrorSums()  # one feed at a time: memory stays near one inference of each model
        for feed in feeds:
            for (name, _), ref, got in zip(ref_ports, ref_run(feed), cand_run(feed)):
                sums.add(name, ref, got)
        return fidelity.rank_errors(nodes, sums.errors())


def _convert(ov: Any, artifact: ModelArtifact, work_dir: Path, request: PrecisionRequest) -> tuple[Any, dict[str, Any], ModelArtifact]:
    model, details, artifact = convert_sized(ov, artifact, work_dir, dict(request.data_shapes))
    canonical_names(model)  # before quantization: the names compare_layers reports and exclude gives
    return model, details, artifact


def _int8(model: Any, request: PrecisionRequest, options: OpenVinoOptions, model_key: Hashable = None) -> tuple[Any, dict[str, Any]]:
    mode = request.int8_mode
    if mode == "static" and request.calibration is None:
        raise CalibrationError("static INT8 for the openvino target needs calibration data",
                               hint="give --calib PATH, or --int8-mode dynamic for weight-only INT8")
    reason = weights_only_reason(request)
    if reason is not None:
        model, details = compress_weights_int8(model, reason, request.exclude)
    else:
        assert request.calibration is not None  # weights_only_reason: none without calibration data
        model, details = quantize_static(model, request.calibration, options, request.exclude, model_key)
    if request.exclude:
        details["kept_float"] = list(request.exclude)
    return model, details


def weights_only_reason(request: PrecisionRequest) -> str | None:
    """Why INT8 is weight-only (``nncf.compress_weights``), None for static INT8: ``--int8-mode dynamic`` or no
    calibration data. ``auto`` with calibration data stays static on MatMul-dominated models too (nncf's
    transformer mode), where the onnx target picks dynamic INT8: keeping their recurrent layers float is what
    static INT8 on openvino does (Resemblyzer, whose unrolled LSTMs are its MatMuls: cosine 0.999 static, 0.935
    weight-only). USE multilingual v3 scores 0.990 static and 0.9997 with ``--int8-mode dynamic``."""
    if request.int8_mode == "dynamic":
        return "--int8-mode dynamic"
    if request.calibration is None:
        return "no calibration data given"
    return None


def is_transformer(model: Any) -> bool:
    """Whether MatMuls outnumber convolutions (the same rule as the onnx target's INT8 choice)."""
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    return types.count("MatMul") > sum(types.count(c) for c in CONVS)


def quantize_static(model: Any, calibration: CalibrationSet, options: OpenVinoOptions,
                    exclude: tuple[str, ...] = (), model_key: Hashable = None) -> tuple[Any, dict[str, Any]]:
    """``nncf.quantize`` on every calibration sample, ops named in ``exclude`` left in float; returns the
    model and what was chosen. ``model_key`` names the source model: inside :meth:`OpenVinoTarget.reuse`, nncf's
    statistics are then kept for that model, this calibration set, method and options and reused (None: not kept).

    Raises:
        CalibrationError: nncf rejected the calibration data.
        ExportError: quantization failed otherwise.
    """
    nncf = require("nncf", "openvino", "INT8 quantization for the openvino target")
    from edgec.calibration.nncf_adapter import to_nncf_dataset

    model_type = options.model_type
    if model_type == "auto":
        model_type = "transformer" if is_transformer(model) else "default"
    kwargs: dict[str, Any] = {"subset_size": len(calibration), "fast_bias_correction": options.fast_bias_correction}
    if model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    preset = options.preset if options.preset != "auto" else auto_preset(model)
    if preset != "auto":
        kwargs["preset"] = nncf.QuantizationPreset(preset)
    recurrent, modules, names = recurrent_float(model, options.recurrent)  # modules: torch unrolled them (pt2)
    types = list(dict.fromkeys((*options.ignored_types, *recurrent)))
    outputs, squares = output_float_ops(model, options.outputs), square_float_ops(model, options.squares)
    if types or exclude or names or outputs or squares:
        floats = dict.fromkeys((*exclude, *names, *outputs, *squares))
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=types, names=list(floats), validate=False)
    estimator = _RANGES[calibration.method]
    if estimator is not None:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        params = getattr(RangeEstimatorParametersSet, estimator)
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(activations_range_estimator_params=params)
    kept = None if model_key is None else _openvino_reuse.statistics(
        (model_key, calibration.digest, len(calibration), calibration.method, repr(options), tuple(sorted(
            (k, repr(v)) for k, v in kwargs.items() if k != "ignored_scope"))))  # the scope changes points, not values
    quantized = _run_nncf(nncf, "nncf.quantize", lambda: _openvino_stats.quantize(nncf, model, to_nncf_dataset(calibration), kwargs, kept))
    return quantized, {
        "mode": "static", "tool": "nncf.quantize", "model_type": model_type, "preset": preset,
        "fast_bias_correction": options.fast_bias_correction, "ignored_types": list(options.ignored_types),
        "recurrent": options.recurrent, "recurrent_float": [*recurrent, *modules], "kept_float_outputs": outputs,
        "kept_float_squares": squares,
        "activation_ranges": (estimator or "nncf default (mean min/max)").lower(), "subset_size": len(calibration),
        "fake_quantize_ops": _count(quantized, "FakeQuantize"),
    }


def compress_weights_int8(model: Any, reason: str, exclude: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Weight-only INT8 (``nncf.compress_weights`` INT8_ASYM, per output channel; ops in ``exclude`` keep
    float weights); activations stay float."""
    nncf = require("nncf", "openvino", "INT8 weight compression for the openvino target")
    vectors = vector_weight_ops(model)  # nncf fails on them (see vector_weight_ops)
    names = list(dict.fromkeys((*exclude, *vectors)))
    scope = {"ignored_scope": nncf.IgnoredScope(names=names, validate=False)} if names else {}
    compressed = _run_nncf(nncf, "nncf.compress_weights",
                           lambda: nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, **scope))
    return compressed, {"mode": "weights", "tool": "nncf.compress_weights", "weights": "int8_asym per channel",
                        "reason": reason, **({"kept_float_vectors": vectors} if vectors else {})}


def _run_nncf(nncf: Any, what: str, call: Any) -> Any:
    log = io.StringIO()
    try:
        with quiet(log, nncf):
            return call()
    except CalibrationError:
        raise
    except Exception as exc:  # nncf's errors (any type) on this model; a bug in edgec's dataset callbacks is raised as one
        raise_if_bug(exc, what)
        error = CalibrationError if "dataset" in str(exc).lower() else ExportError
        raise error(f"{what} failed: {type(exc).__name__}: {brief(exc)}",
                    log=log.getvalue() + f"\n{type(exc).__name__}: {exc}\n") from exc


def canonical_names(model: Any) -> int:
    """Renumber auto-generated node names (``Type_<counter>``) in graph order as ``Type_c<n>``; returns how
    many changed.

    Names renumbered before keep their numbers, so a second call (after quantization added nodes) names
    only the new ones, counting on from the largest number in use. The numbering is a bijection on name
    tokens, so distinct names stay distinct; Parameters keep their names. The model is named ``model``.
    """
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() != "Parameter"]
    used = [int(m) for op in ops for m in _CANONICAL.findall(op.get_friendly_name())]
    numbers: dict[str, int] = {}
    start = max(used, default=-1) + 1

    def renumber(match: re.Match[str]) -> str:
        key = match.group(0)
        numbers.setdefault(key, start + len(numbers))
        return f"{match.group(1)}_c{numbers[key]}"

    changed = 0
    for op in ops:
        name = op.get_friendly_name()
        new = _AUTO_NAME.sub(renumber, name)
        if new != name:
            op.set_friendly_name(new)
            changed += 1
    model.set_friendly_name(MODEL_NAME)
    return changed


def _check_names(model: Any, exclude: tuple[str, ...]) -> None:
    """Every op to keep in float must exist (names come from :meth:`OpenVinoTarget.compare_layers`)."""
    names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    missing = [n for n in exclude if n not in names]
    if missing:
        raise ConfigError(f"ops to keep in float not found in the OpenVINO model: {', '.join(missing[:5])}")


def op_layers(model: Any) -> dict[str, str]:
    """Op friendly name -> source layer: on the pt2 route the torch module that called it (``convs.2``, ``act@1``:
    :mod:`edgec.targets._openvino_layers`); else the name of its first named weight of its own (:func:`_own_weight`)
    without ``.weight``/``.bias`` (``conv3.weight`` -> ``conv3``), else the first part of its name (``linear/aten.linear.default/MatMul``
    -> ``linear``, the torch op) after any inlined ``If`` branch's prefix (:data:`_INLINED`), else its name; an op OpenVINO named itself (``Multiply_c1``: a convolution with its
    batch norm folded in) takes the layer of its first consumer; a recurrent op is a layer of its own, and the
    ops OpenVINO added to feed it (``Transpose_c18`` of a state input) take its layer."""
    ops = list(model.get_ordered_ops())
    layers, modules = {}, stored_layers(model)  # pt2 route: the torch module of each FX node (_openvino_layers)
    for op in ops:
        name = op.get_friendly_name()
        weights = [n for i in op.inputs()[1:] if _own_weight(i.get_source_output())
                   for n in sorted(i.get_source_output().get_names()) if not n.isdigit()]  # pt2 constants: "65"
        module = modules.get(fx_name(name))
        layers[name] = module or (_weight_layer(weights[0]) if weights else (_INLINED.sub("", name).split("/", 1)[0] or name))
    for op in ops:
        bias_of = _biased(op)
        if bias_of is not None and layers[op.get_friendly_name()] == op.get_friendly_name():
            layers[op.get_friendly_name()] = layers[bias_of]
    own = {op.get_friendly_name() for op in ops if op.get_type_name() in RECURRENT_TYPES}  # a layer even if auto-named
    for op in reversed(ops):  # consumers come later in graph order
        name = op.get_friendly_name()
        if _CANONICAL.fullmatch(layers[name]) and name not in own:
            users = [t.get_node().get_friendly_name() for out in op.outputs() for t in out.get_target_inputs()]
            layers[name] = next((layers[u] for u in users if u in layers and (u in own or not _CANONICAL.fullmatch(layers[u]))),
                                layers[name])
    return layers


def _reads_quantized(op: Any) -> bool:
    """Whether an op of an nncf-quantized model reads a quantized value: an input from a ``FakeQuantize`` or
    from int8 or int4 weights (``Constant`` -> ``Convert`` -> ``Subtract``/``Multiply``), through at most
    :data:`_DEQUANTIZE_DEPTH` of the ops in :data:`_DEQUANTIZE` (nncf also moves a quantizer up through value
    movers: silero-vad's output ``ReduceMean`` reads it through a ``Squeeze``). nncf puts a value's quantizer on
    its readers' inputs, so an op that reads none (YOLOv8n's ``Swish`` activations after each conv's bias ``Add``)
    is the same model kept in float, and so is a mover (:data:`_AGNOSTIC`) whose input quantizer nncf moved up
    from its readers (YOLOv8n's ``Split`` ops)."""
    if op.get_type_name() in _AGNOSTIC:
        return False
    pending = [(i.get_source_output().get_node(), 0) for i in op.inputs()]
    while pending:
        node, depth = pending.pop()
        kind = node.get_type_name()
        if kind == "FakeQuantize" or (kind == "Constant" and node.get_output_element_type(0).get_type_name() in _INT_WEIGHTS):
            return True
        if kind in _DEQUANTIZE and depth < _DEQUANTIZE_DEPTH:
            pending += [(i.get_source_output().get_node(), depth + 1) for i in node.inputs()]
    return False


def _biased(op: Any) -> str | None:
    """The convolution or matmul whose bias ``op`` adds, None if it adds none: an ``Add`` of an unnamed
    ``Constant`` to the output of a weighted op that nothing else reads. OpenVINO's ONNX frontend splits a biased
    ``Conv`` into ``Convolution`` (``/model.4/cv1/conv/Conv/WithoutBiases``) and an ``Add`` named after the ONNX
    node, whose bias constant (reshaped to broadcast) carries no name: the ``Add`` was a layer of its own, and
    keeping it in float left the convolution quantized (YOLOv8n: every conv the search tried changed nothing)."""
    if op.get_type_name() != "Add" or op.get_input_size() != 2:
        return None
    source, other = op.input(0).get_source_output(), op.input(1).get_source_output()
    if other.get_node().get_type_name() != "Constant" or other.get_names():
        return None
    producer = source.get_node()
    if producer.get_type_name() not in WEIGHTED or len(source.get_target_inputs()) != 1:
        return None
    return str(producer.get_friendly_name())


def _own_weight(output: Any) -> bool:
    """A Constant output that names a layer: read by one op only, with more than one value (a shared or
    scalar constant, such as ReLU6's bounds read by every Clamp, names nothing), of floats (a ``Slice``'s
    integer starts are no weights: silero-vad's STFT slices were layers named ``/stft/Slice_output_0_starts``)."""
    shape = output.get_partial_shape()
    values = int(np.prod(shape.to_shape())) if shape.is_static else 2
    return (output.get_node().get_type_name() == "Constant" and len(output.get_target_inputs()) == 1 and values > 1
            and output.get_element_type().is_real())


def _weight_layer(weight: str) -> str:
    """``conv3.weight`` -> ``conv3``; ``encoder_layer_3_output_dense_weight:0`` (pt2 route) -> ``encoder_layer_3_output_dense``."""
    base = re.sub(r":\d+$", "", weight)
    return re.sub(r"[._](weight|bias)$", "", base) or base


def _probe(core: Any, model: Any, ports: list[Any]) -> Callable[[Feed], list[np.ndarray]]:
    """A function running ``model`` on one feed and returning the values of the given op outputs.

    Inference is f32 (so FP32 stays FP32 on bf16 CPUs) with the CPU plugin's low-precision
    transformations off: FakeQuantize ops then run as simulated quantization, exactly nncf's semantics.
    With them on, the plugin fuses Convolution+Relu+FakeQuantize into int8 kernels and returns wrong
    values for an intermediate output inside such a fusion (measured: a Convolution and its Relu both
    made outputs gave zeros from the Relu on, OpenVINO 2025/2026 CPU plugin).
    """
    if not ports:
        return lambda feed: []
    added = model.add_outputs(ports)  # Result ops; an op already an output keeps its Result
    results = [r.get_friendly_name() for r in model.get_results()]
    try:
        compiled = core.compile_model(model, "CPU", {**_PROBE_CONFIG, "LP_TRANSFORMS_MODE": "NO"})
    except RuntimeError:  # the CPU plugin's internal switch is gone: compile as usual
        compiled = core.compile_model(model, "CPU", _PROBE_CONFIG)
    request = compiled.create_infer_request()
    outputs = [compiled.outputs[results.index(a.get_node().get_friendly_name())] for a in added]

    def run(feed: Feed) -> list[np.ndarray]:
        result = request.infer(feed)
        return [np.asarray(result[port]) for port in outputs]

    return run


def _save(ov: Any, model: Any, path: Path, compress_to_fp16: bool) -> None:
    try:
        ov.save_model(model, str(path), compress_to_fp16=compress_to_fp16)
    except Exception as exc:  # one OpenVINO call: RuntimeError (C++) for a model it cannot serialize
        raise ExportError(f"openvino.save_model failed: {type(exc).__name__}: {brief(exc)}") from exc


def _count(model: Any, op_type: str) -> int:
    return sum(1 for op in model.get_ordered_ops() if op.get_type_name() == op_type)
