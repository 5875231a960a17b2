"""``tensorrt`` target: a TensorRT-ready ONNX for NVIDIA GPUs (Jetson, datacenter), plus the engine when built on one.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with, so the bundle always
holds what a device needs to build it:

- ``model.onnx``, TensorRT-ready: fp32; fp16 (float16 weights and activations, float32 inputs and outputs);
  or int8 as explicit Q/DQ (:func:`int8_pass_options`): int8 everywhere, zero points 0, per-channel weight
  scales on the output-channel axis, per-tensor activation scales, calibrated on ``--calib``. The graph is
  checked against those rules (:func:`check_trt_qdq`) and the build fails when it breaks one. A layer reading
  the root of squares summed (an STFT magnitude) stays float unless ``squares=int8`` (:func:`int8_excludes`,
  ``target_details.kept_float_squares``).
- ``tensorrt.json``: optimization profiles (min/opt/max shape per dynamic input, see
  :func:`optimization_profiles`) and the precision flags.
- ``model.plan``, only when ``tensorrt`` imports and an NVIDIA GPU is present at build time, built with a
  timing cache; the manifest then records the GPU, its compute capability and the TensorRT version.
  Otherwise the manifest says the engine is to be built on the device. ``edgec verify``/``bench`` on a GPU
  machine build the engine from the ONNX and ``tensorrt.json`` for every bundle, never loading its
  ``model.plan`` (native code); only the device agent and the shim's ``--trust-engine`` load it (see
  ``runtime_shims/tensorrt.py``).

FP16 is in the graph, not only a builder flag: TensorRT 11 removed the weak-typing flags (``BuilderFlag.FP16``,
``BuilderFlag.INT8``) and builds every network strongly typed, so a float32 ONNX would give a float32
engine there. The flags are still recorded and set for TensorRT 8.x, which has no strongly typed networks.

Parity on a host without a GPU is measured by running the TensorRT-ready ONNX in onnxruntime (a real
measurement of the Q/DQ or fp16 graph, recorded as ``parity_runtime: onnxruntime-cpu``); with a GPU, by
running the engine.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from edgec.core.errors import CalibrationError, ConfigError, ExportError, UnsupportedError, brief, require
from edgec.core.types import FORMAT_ONNX, ModelArtifact, TensorSpec, batch_dims, default_shape
from edgec.frameworks import onnx_utils
from edgec.runtime_shims import tensorrt as shim
from edgec.runtime_shims.base import RunnerError
from edgec.targets import _calibration_reuse, _onnx_squares
from edgec.targets.base import ExportResult, PassStep, PrecisionRequest, Target
from edgec.targets.onnx import ORT_CALIBRATION_METHODS, OnnxLayers
from edgec.targets.options import TargetOptions, option

MODEL_FILE = "model.onnx"
Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]
"""min, opt and max shape of one input."""
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Layers whose inputs get Q/DQ. Their outputs stay float: quantizing them too (onnxruntime's default) took
MiniLM's mean cosine to FP32 from 0.975 to 0.841 (measured on the 12 evaluation sentences)."""
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_TOKENS = 512


def int8_pass_options(method: str) -> dict[str, Any]:
    """``quantize_static`` options for TensorRT's explicit quantization (the rules :func:`check_trt_qdq` checks)."""
    return {
        "method": method,
        "per_channel": True,
        "activation_type": "int8",
        "symmetric_activations": True,
        "op_types": list(QUANTIZED_OPS),
        "extra_options": {
            "QuantizeBias": False,
            "QDQKeepRemovableActivations": True,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        },
    }


class TensorRTOptions(TargetOptions):
    """Options of the tensorrt target (unknown keys rejected).

    ``trt_profile`` replaces the default optimization profile of named inputs: from the command line as
    ``NAME:MIN,OPT,MAX`` texts (parsed here, before anything is built; checked against the model's inputs
    at export), from a recipe as ``{"input_ids": ((1, 1), (1, 128), (32, 512))}``.
    """

    trt_profile: dict[str, Profile] = option(
        {}, "NAME:MIN,OPT,MAX optimization profile of a dynamic input, shapes as 1x3x224x224, "
        "e.g. input_ids:1x1,1x128,32x512 (repeatable)", flag="--trt-profile", metavar="NAME:MIN,OPT,MAX",
        repeatable=True)
    squares: Literal["float", "int8"] = option(
        "float", "the root of squares summed (an STFT magnitude, an L2 norm) where a quantized layer reads it, "
                 "in INT8: float (default: that layer stays float), int8")

    @field_validator("trt_profile", mode="before")
    @classmethod
    def _parse_texts(cls, value: Any) -> Any:
        return dict(parse_profile(text) for text in value) if isinstance(value, (list, tuple)) else value

    @field_validator("trt_profile")
    @classmethod
    def _ordered(cls, value: dict[str, Profile]) -> dict[str, Profile]:
        for name, (low, opt, high) in value.items():
            if not len(low) == len(opt) == len(high) or not all(1 <= a <= b <= c for a, b, c in zip(low, opt, high)):
                raise ValueError(f"the profile of {name!r} needs three shapes of one rank with 1 <= min <= opt <= max")
        return value


def parse_profile(text: str) -> tuple[str, Profile]:
    """``"input_ids:1x1,1x128,32x512"`` -> ``("input_ids", ((1, 1), (1, 128), (32, 512)))``, syntax only.

    Raises:
        ValueError: not ``NAME:MIN,OPT,MAX`` with three shapes of whole dims.
    """
    name, _, shapes = str(text).rpartition(":")
    try:
        parts = [tuple(int(d) for d in part.lower().split("x")) for part in shapes.split(",")]
    except ValueError:
        parts = []
    if not name or len(parts) != 3:
        raise ValueError(f"{text!r} is not NAME:MIN,OPT,MAX")
    return name, (parts[0], parts[1], parts[2])


class TensorRTTarget(OnnxLayers, Target):
    """TensorRT-ready ONNX bundles; the engine is built where a GPU is (options: :class:`TensorRTOptions`)."""

    name = "tensorrt"
    extra = "tensorrt"
    routes = (FORMAT_ONNX,)
    precisions = ("fp32", "fp16", "int8")
    modules = ("onnx", "onnxruntime")
    runtime_modules = ("onnxruntime",)
    """Enough to build the bundle; ``tensorrt`` is only needed to build or run the engine."""
    packages = ("onnx", "onnxruntime", "tensorrt")
    Options = TensorRTOptions
    calibration_methods = ORT_CALIBRATION_METHODS
    runner_options = {"trust_engine": False}
    """Parity, ``edgec verify``, ``bench``, ``serve`` and layer probes never deserialize a bundle's ``model.plan``
    (an engine is native code, a bundle untrusted input): the runner builds the engine from the ONNX instead."""
    color = "#d62728"

    def validate(self, request: PrecisionRequest) -> None:
        super().validate(request)
        if request.precision == "int8" and request.int8_mode == "dynamic":
            raise UnsupportedError("TensorRT has no dynamic (run-time) INT8 quantization",
                                   hint="use --int8-mode static (or auto) with --calib PATH")

    def dims_to_fix(self, inputs: tuple[TensorSpec, ...], request: PrecisionRequest | None = None) -> list[tuple[TensorSpec, int]]:
        """The dynamic dims of float inputs other than the batch, which a default profile would pin to one
        size (:func:`optimization_profiles`); integer inputs (token ids, masks) get a 1..512 profile, and an
        input with a ``trt_profile`` of its own needs nothing."""
        profiles = request.options_as(TensorRTOptions).trt_profile if request is not None else {}
        return [(spec, axis) for spec, axis in super().dims_to_fix(inputs, request)
                if not spec.dtype.startswith(("int", "uint", "bool")) and spec.name not in profiles]

    def export_cache_key(self) -> dict[str, Any]:
        """An engine is built for this GPU and driver, or not at all: both are part of the export's key."""
        reason = shim.engine_unavailable_reason()
        return {**super().export_cache_key(), "engine": reason or shim.gpu_info()}

    def reuse(self) -> AbstractContextManager[Any]:
        """The candidates of one ``--max-drop`` search share calibration ranges, as the onnx target's do (the
        same ``quantize_static`` pass: :mod:`edgec.targets._calibration_reuse`)."""
        return _calibration_reuse.sharing()

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        if request.precision != "int8":
            return self.float_passes(request)
        if request.calibration is None:
            raise CalibrationError("INT8 for tensorrt needs calibration data: TensorRT's explicit quantization "
                                   "takes its ranges from Q/DQ scales calibrated on real inputs",
                                   hint="give --calib PATH with representative inputs (.npz or a folder)")
        return [("quantize_static", {**int8_pass_options(request.calibration.method), **int8_excludes(request, artifact)})]

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        model, resorted = load_sorted(artifact.path)
        qdq = _require_valid_qdq(model, request.precision)
        if resorted:
            onnx_utils.save_model(model, bundle_dir / MODEL_FILE)
        else:
            shutil.copyfile(artifact.path, bundle_dir / MODEL_FILE)
        settings: dict[str, Any] = {
            "onnx": MODEL_FILE,
            "precision": request.precision,
            "fp16": request.precision == "fp16",
            "int8": request.precision == "int8",
            "profiles": optimization_profiles(artifact.inputs, golden_shapes(artifact.inputs, request),
                                              request.options_as(TensorRTOptions).trt_profile),
        }
        files = [MODEL_FILE, shim.SETTINGS_FILE]
        details: dict[str, Any] = {"runtime": "tensorrt", "settings": shim.SETTINGS_FILE, "qdq": qdq,
                                   "builder": {k: settings[k] for k in ("fp16", "int8", "profiles")}}
        if request.precision == "int8" and request.options_as(TensorRTOptions).squares == "float":
            details["kept_float_squares"] = _onnx_squares.square_float_nodes(model, QUANTIZED_OPS)
        reason = shim.engine_unavailable_reason()
        if reason is None:
            settings["engine"] = _build_engine(bundle_dir, settings)
            files.append(shim.ENGINE_FILE)
            details.update({"engine": shim.ENGINE_FILE, "parity_runtime": "tensorrt", **settings["engine"]})
        else:
            details.update({"engine": "build on device", "engine_reason": reason, "parity_runtime": "onnxruntime-cpu"})
        (bundle_dir / shim.SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return ExportResult(MODEL_FILE, tuple(files), artifact.inputs, artifact.outputs, details)


def int8_excludes(request: PrecisionRequest, artifact: ModelArtifact) -> dict[str, list[str]]:
    """``nodes_to_exclude`` for INT8: ``request.exclude`` and, unless ``squares=int8``, every square-root chain
    with the layers that read its root (:func:`._onnx_squares.square_float_nodes`).

    TensorRT's Q/DQ never quantizes the chain itself (only the inputs of :data:`QUANTIZED_OPS`), but the layer
    reading the root quantizes it symmetrically: 127 levels over a magnitude that is never negative, where the
    other targets' asymmetric INT8 has 255. silero-vad 16k (``sqrt(re^2 + im^2)`` of its STFT read by
    ``encoder.0``, 16 held-out chunks): decisions 0.938 -> 1.000, speech probability mean error 0.044 -> 0.012
    (32 other chunks: 0.022 -> 0.018); the float ``encoder.0`` takes the bundle from 0.74 to 0.89 MB."""
    nodes = list(request.exclude)
    if request.options_as(TensorRTOptions).squares == "float":
        kept = _onnx_squares.square_float_nodes(onnx_utils.load_model(artifact.path), QUANTIZED_OPS)
        nodes += [n for n in kept if n not in nodes]
    return {"nodes_to_exclude": nodes} if nodes else {}


def load_sorted(path: Path) -> tuple[Any, bool]:
    """Load an ONNX model with its nodes in topological order, which TensorRT's parser needs.

    onnxruntime's float16 conversion appends the input casts at the end of the node list; onnxruntime
    does not mind, TensorRT's parser and ``onnx.checker`` do. Returns the model and whether it was re-sorted.

    Raises:
        ExportError: the graph has a cycle or a node reads a value nothing produces, or it fails the checker.
    """
    onnx = require("onnx", "onnx", "reading ONNX models")
    model = onnx.load(str(path))
    try:
        resorted = onnx_utils.sort_nodes(model)
    except ExportError as exc:
        raise ExportError(f"{path}: {exc.message}") from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: a model proto over 2 GB
        raise ExportError(f"{path} is not a valid ONNX model: {brief(exc, 200)}") from exc
    return model, resorted


def _build_engine(bundle_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Build ``model.plan`` next to the ONNX, with the timing cache of this GPU and TensorRT version.

    Raises:
        ExportError: TensorRT rejected the model or failed to build (its log is attached).
    """
    gpu = shim.gpu_info() or {}
    version = shim.tensorrt_version() or ""
    log: list[str] = []
    try:
        plan = shim.build_engine(bundle_dir / MODEL_FILE, settings, shim.timing_cache_path(gpu, version), log)
    except RunnerError as exc:
        raise ExportError(str(exc), hint="see the TensorRT log", log="\n".join(log)) from exc
    (bundle_dir / shim.ENGINE_FILE).write_bytes(plan)
    return {"file": shim.ENGINE_FILE, "gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
            "tensorrt": version}


def _require_valid_qdq(model: Any, precision: str) -> dict[str, Any]:
    """Check the Q/DQ rules; return counts for the manifest.

    Raises:
        ExportError: the graph breaks TensorRT's explicit-quantization rules, or an int8 graph has no Q/DQ.
    """
    counts = onnx_utils.op_counts(model)
    found = {"quantize_linear": counts.get("QuantizeLinear", 0), "dequantize_linear": counts.get("DequantizeLinear", 0)}
    problems = check_trt_qdq(model)
    if precision == "int8" and not found["dequantize_linear"]:
        problems.append("the int8 graph has no DequantizeLinear nodes: nothing was quantized")
    if problems:
        more = f" (and {len(problems) - 1} more, see the log)" if len(problems) > 1 else ""
        raise ExportError(f"the graph breaks TensorRT's explicit-quantization rules: {problems[0]}{more}",
                          log="\n".join(problems))
    return {**found, "rules": "int8, zero point 0, per-channel weights, per-tensor activations"}


def golden_shapes(inputs: tuple[TensorSpec, ...], request: PrecisionRequest) -> dict[str, Shape]:
    """Shapes of the build's golden inputs: the first calibration sample's, else those of the shared rule of
    synthetic inputs (:func:`edgec.core.types.default_shape`: 1 for the batch, 16 for other dynamic dims;
    float dims other than the batch are sized with ``--input`` before: :meth:`TensorRTTarget.dims_to_fix`)."""
    if request.calibration is not None:
        feed = request.calibration.feed(0)
        return {spec.name: tuple(int(d) for d in feed[spec.name].shape) for spec in inputs}
    batch = batch_dims(inputs)
    return {spec.name: default_shape(spec, batch) for spec in inputs}


def optimization_profiles(inputs: tuple[TensorSpec, ...], golden: dict[str, Shape],
                          overrides: dict[str, tuple[Shape, Shape, Shape]]) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes for each input with dynamic dims.

    Defaults, with ``opt`` the golden input's size: the batch axis (axis 0) 1..max(32, opt); other dynamic
    axes of integer inputs (token ids, masks) 1..max(512, opt); other dynamic axes of float inputs (image
    sides) fixed at the golden size.

    Raises:
        ConfigError: an override names an unknown input or does not fit its shape.
    """
    unknown = sorted(set(overrides) - {s.name for s in inputs})
    if unknown:
        raise ConfigError(f"TensorRT profile for {unknown[0]!r}, which is not a model input")
    profiles = {}
    for spec in inputs:
        if spec.name in overrides:
            profiles[spec.name] = _checked_override(spec, overrides[spec.name])
        elif not spec.is_static:
            profiles[spec.name] = _default_profile(spec, golden[spec.name])
    return profiles


def _default_profile(spec: TensorSpec, opt: Shape) -> dict[str, list[int]]:
    integer = spec.dtype.startswith(("int", "uint"))
    low, high = [], []
    for axis, (dim, size) in enumerate(zip(spec.shape, opt)):
        if isinstance(dim, int):
            low.append(dim)
            high.append(dim)
        elif axis == 0:
            low.append(1)
            high.append(max(DEFAULT_MAX_BATCH, size))
        elif integer:
            low.append(1)
            high.append(max(DEFAULT_MAX_TOKENS, size))
        else:
            low.append(size)
            high.append(size)
    return {"min": low, "opt": list(opt), "max": high}


def _checked_override(spec: TensorSpec, shapes: tuple[Shape, Shape, Shape]) -> dict[str, list[int]]:
    low, opt, high = (tuple(int(d) for d in s) for s in shapes)
    rank = len(spec.shape)
    fits = all(len(s) == rank for s in (low, opt, high)) and all(
        1 <= a <= b <= c and (not isinstance(d, int) or a == b == c == d) for d, a, b, c in zip(spec.shape, low, opt, high)
    )
    if not fits:
        raise ConfigError(f"TensorRT profile for {spec.name!r} {list(low)}, {list(opt)}, {list(high)} does not fit its "
                          f"shape {list(spec.shape)}; expected min <= opt <= max with fixed dims kept")
    return {"min": list(low), "opt": list(opt), "max": list(high)}


def check_trt_qdq(model: Any) -> list[str]:
    """Problems that keep TensorRT from taking a Q/DQ graph as explicit INT8; empty when it fits.

    Rules, per QuantizeLinear/DequantizeLinear node:
    1. Scale and zero point are constants; scales are positive and finite.
    2. The quantized type is int8 and the zero point is 0 (symmetric).
    3. Weights (a DequantizeLinear of a constant, directly or through a QuantizeLinear) feeding the weight input
       of Conv, ConvTranspose, Gemm or MatMul are per-channel: a 1-D scale on the output-channel axis, one
       value per output channel (Conv axis 0, ConvTranspose 1, Gemm 0 with transB else 1, MatMul the last).
    4. Activations are per-tensor: a scalar scale.
    """
    graph = _Graph(model)
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems.extend(_check_qdq_node(node, graph))
    return problems


class _Graph:
    """Constants (initializers and Constant nodes), producers and consumers of a graph."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "onnx", "checking Q/DQ graphs")
        self.consts = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
            for out in node.output:
                self.producer[out] = node
            for index, name in enumerate(node.input):
                self.consumers[name].append((node, index))

    def attr(self, node: Any, name: str, default: Any) -> Any:
        for a in node.attribute:
            if a.name == name:
                return a.i
        return default

    def is_weight(self, node: Any) -> bool:
        """A Q or DQ whose data is a constant, directly or through a QuantizeLinear."""
        source = node.input[0]
        if source in self.consts:
            return True
        upstream = self.producer.get(source)
        return node.op_type == "DequantizeLinear" and upstream is not None and upstream.op_type == "QuantizeLinear" \
            and upstream.input[0] in self.consts


def _check_qdq_node(node: Any, graph: _Graph) -> list[str]:
    label = f"{node.op_type} {node.name or node.output[0]!r}"
    scale = graph.consts.get(node.input[1])
    if scale is None:
        return [f"{label}: scale {node.input[1]!r} is not a constant"]
    problems = []
    if not (scale > 0).all() or not np.isfinite(scale).all():
        problems.append(f"{label}: scales must be positive and finite")
    problems.extend(_check_zero_point(node, graph, label))
    if graph.is_weight(node):
        if node.op_type == "DequantizeLinear":
            problems.extend(_check_weight_axis(node, graph, scale, label))
    elif scale.ndim != 0:
        problems.append(f"{label}: activation scale has shape {list(scale.shape)}; TensorRT needs per-tensor (a scalar)")
    return problems


def _check_zero_point(node: Any, graph: _Graph, label: str) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        data = graph.consts.get(node.input[0])
        if node.op_type == "QuantizeLinear" and graph.attr(node, "output_dtype", 0) != 3:  # 3 = INT8
            return [f"{label}: no zero point, so the output is uint8; TensorRT needs int8 with zero point 0"]
        if data is not None and node.op_type == "DequantizeLinear" and str(data.dtype) != "int8":
            return [f"{label}: quantized data is {data.dtype}; TensorRT needs int8"]
        return []
    zero = graph.consts.get(node.input[2])
    if zero is None:
        return [f"{label}: zero point {node.input[2]!r} is not a constant"]
    problems = []
    if str(zero.dtype) != "int8":
        problems.append(f"{label}: quantized type is {zero.dtype}; TensorRT needs int8")
    if zero.any():
        problems.append(f"{label}: zero point is not 0 (asymmetric); TensorRT needs symmetric quantization")
    return problems


def _check_weight_axis(node: Any, graph: _Graph, scale: Any, label: str) -> list[str]:
    weight = graph.consts.get(node.input[0])
    if weight is None:
        weight = graph.consts[graph.producer[node.input[0]].input[0]]
    problems = []
    for layer, index in graph.consumers.get(node.output[0], []):
        if layer.op_type not in QUANTIZED_OPS or index != 1:
            continue
        expected = _output_axis(layer, weight.ndim, graph)
        axis = graph.attr(node, "axis", 1)
        axis = axis + weight.ndim if axis < 0 else axis
        if scale.ndim != 1 or (scale.size == 1 and weight.shape[expected] != 1):
            problems.append(f"{label}: weights of {layer.op_type} {layer.name!r} are per-tensor; TensorRT needs "
                            f"per-channel scales on axis {expected}")
        elif axis != expected or scale.shape[0] != weight.shape[expected]:
            problems.append(f"{label}: weights of {layer.op_type} {layer.name!r} have {scale.shape[0]} scales on axis "
                            f"{axis}; expected {weight.shape[expected]} on the output-channel axis {expected}")
    return problems


def _output_axis(layer: Any, ndim: int, graph: _Graph) -> int:
    if layer.op_type == "Conv":
        return 0
    if layer.op_type == "ConvTranspose":
        return 1
    if layer.op_type == "Gemm":
        return 0 if graph.attr(layer, "transB", 0) else 1
    return ndim - 1
