"""``tflite`` target: ``.tflite`` flatbuffers for LiteRT on phones and small Linux boards.

Routes (recorded in the manifest's ``target_details.route``):
- ``savedmodel`` / ``keras`` sources: TensorFlow's ``TFLiteConverter`` on the model's serving signature.
- ``onnx`` (and PyTorch, through the ``export_onnx`` pass): onnx2tf turns the ONNX graph into a Keras
  graph in a subprocess (it is slow to import, prints a lot and may exit the interpreter on errors); the
  worker saves it as a SavedModel whose signature keeps the ONNX input/output names, then the same
  ``TFLiteConverter`` step applies the precision. That route lives in :mod:`._tflite_onnx`. Before it,
  the passes named in :attr:`TfliteTarget.onnx_rewrites` (``unroll_rnn``, ``split_reduce_l2``, ``fuse_gelu``,
  ``split_slice``, ``edge_pad_pools``) rewrite exactly what onnx2tf cannot turn into TFLite builtins, or turns
  into what full-integer INT8 cannot quantize (a max pool padded with -3.4e38); the manifest's ``passes`` say
  what they matched.

Precisions are applied by the converter (``precision_passes`` is empty):
- ``fp32``: builtin ops only, no optimisation.
- ``fp16``: float16 weights (``supported_types=[float16]``), float compute on devices without fp16.
- ``int8``, full-integer (``TFLITE_BUILTINS_INT8``, the calibration set as the representative dataset):
  with ``--calib``, for TF sources and convolutional ONNX models, or always with ``--int8-mode static``.
  Model inputs/outputs stay float (quantize/dequantize at the edges) unless ``--io-dtype int8``
  (``--target-option io_dtype=int8``): then a device feeds int8 with the scale and zero point in the
  manifest's tensor specs, and the bundle's golden inputs are int8.
- ``int8``, dynamic-range (int8 weights, float activations and IO): with ``--int8-mode dynamic``,
  without ``--calib``, and in ``auto`` mode for MatMul-dominated ONNX models (transformers; the same
  rule as the onnx target) and for models that keep an ``LSTM``/``GRU``/``RNN`` node (one the ``unroll_rnn``
  pass could not unroll: onnx2tf makes it a ``WHILE`` loop, and TensorFlow 2.21's full-integer quantizer
  crashes the process on it, so ``--int8-mode static`` is refused for them). Measured on MiniLM-L6 (1x32 tokens, 12 sentences, mean cosine to PyTorch):
  full-integer 0.341, dynamic-range 0.9986.

Full-integer INT8 of an ONNX model whose output comes from a ``Concat`` (a detector's boxes, 0-320, with class
probabilities, 0-1) checks the ranges that ``Concat`` joins on the calibrated model and keeps it in float when they
differ by more than 10x (:mod:`._tflite_mixed`, the onnx target's rule; the manifest's
``target_details.kept_float_outputs`` lists it), with a ``LOGISTIC`` that feeds it (int8, its output is fixed at
1/256 steps). Measured on YOLOv8n 320 (zoo matrix): the class part's cosine to FP32 in the parity check went from
0.0 (build refused, exit 7) to 0.92; detection agreement on the held-out photos (best anchors scoring 0.001-0.03)
went from 0.856 with the class ``LOGISTIC`` int8 to 0.922 with it float, at the same size and time.

Full-integer INT8 of an ONNX model whose ``LSTM``/``GRU``/``RNN`` nodes the ``unroll_rnn`` pass unrolled keeps
their ops float, with the state path (the moves between a state input or output and them), unless
``--target-option recurrent=int8`` (:func:`._tflite_mixed.recurrent_float_nodes`; the openvino target's option of
the same name). The manifest's ``target_details`` say ``recurrent`` and list the nodes (``recurrent_float``) and
how many ops stayed float (``recurrent_float_ops``). Quantized, every step's state takes one scale and the
error is fed back at every call: a streaming LSTM whose cell state reaches ~20 (the integration test)
drifted by 0.77 over 8 calls, against 2e-6 float; Resemblyzer (3 LSTMs) with ``--int8-mode static``: embedding
cosine 0.9995 at 0.97x size and 1.02x time (all quantized: 0.380, collapsed). ``--int8-mode auto`` picks
dynamic-range INT8 for models that are mostly LSTM (MatMul-dominated; Resemblyzer 0.897), where it does not apply.

Full-integer INT8 of an ONNX model keeps float its squares summed up to their root (``sqrt(re^2 + im^2)`` of an
STFT, an L2 norm: :func:`._tflite_mixed.square_float_nodes`, ``target_details.kept_float_squares``) unless
``--target-option squares=int8``: one INT8 scale over a power spectrum loses its quiet bins. silero-vad 16k:
decisions 0.875 -> 1.000 on the zoo's held-out chunks (was refused by the collapse gate). The same option keeps
float a LayerNorm written from moments (``E[x^2] - E[x]^2`` to ``1/sqrt``, and the product it normalizes) and a
power read by a tanh (a tanh-approximated GELU's ``x + 0.0447 x^3``). Full-integer INT8 always measures the
calibration ranges again with every tensor kept (TensorFlow 2.21's calibrator gives a tensor that a later op
overwrites in place that op's range too: :func:`._tflite_layers.measured_statistics`) and keeps ``ONE_HOT`` float
(its quantized ``off_value`` reads 0.5). magika (file-type classifier, jax2tf and tf2onnx): exit 5 (LiteRT refused
a ``DIV`` by the zero point) -> top-1 1.000 on the zoo's held-out files, 0.26x size, 0.39x time.

Mixed precision (``--max-drop``) keeps some ops of a full-integer model in float with TensorFlow's
selective quantization (denylisted nodes); ``--report-layers`` and ``edgec debug`` read intermediate
tensors with LiteRT. Both work on op output tensor names, and the onnx2tf worker names the Keras layers
after the ONNX model's layers so that those names carry the source layer (see :mod:`._tflite_layers`).

Layout: onnx2tf makes 3-D/4-D/5-D tensors channels-last (NCHW -> NHWC), except 3-D inputs that reach no
convolution or pooling (sequences ``[N, T, C]``, recurrent states: a streaming model feeds its state output back
as it comes, see :func:`._tflite_onnx.sequence_inputs`). The bundle declares the
channels-last shape with ``"layout": "NHWC", "source_layout": "NCHW"``; golden inputs and outputs
are transposed to it (:meth:`TfliteTarget.bundle_feeds`). Tensors that keep the source layout say
``"layout": "as_source"``. Which outputs were transposed is measured, not guessed: the worker runs
the converted graph and the ONNX model on one sample and picks the permutation that matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import (
    CalibrationError,
    ConfigError,
    EdgecError,
    ExportError,
    MissingDependencyError,
    UnsupportedError,
    raise_if_bug,
)
from edgec.core.types import FORMAT_ONNX, ModelArtifact, TensorSpec
from edgec.frameworks.fidelity import LayerDivergence
from edgec.frameworks.tf_utils import (
    FORMAT_KERAS,
    FORMAT_SAVEDMODEL,
    SERVING,
    native_output_to,
    serving_saved_model,
    tf_module,
)
from edgec.runtime_shims.litert import LiteRtRunner, quantize
from edgec.targets import _tflite_layers, _tflite_mixed
from edgec.targets._tflite_mixed import MixedOutput, RecurrentLayers
from edgec.targets._tflite_onnx import (
    CHANNELS_LAST,
    ONNX2TF_MODULES,
    channels_last,
    has_output_concat,
    onnx_to_saved_model,
    recurrent_nodes,
    unrolled_recurrent_layers,
)
from edgec.targets.base import ExportResult, Feed, LayerTools, PassStep, PrecisionRequest, Target
from edgec.targets.onnx import choose_int8_mode
from edgec.targets.options import TargetOptions, option

MODEL_FILE = "model.tflite"
IO_DTYPES = ("float", "int8")


@dataclass(frozen=True)
class QuantPlan:
    """How the converter quantizes: ``none``, ``float16``, ``dynamic`` or ``full``, and the IO dtype."""

    kind: str
    io_dtype: str = "float"

    @property
    def description(self) -> str:
        return {"none": "none (float32)", "float16": "float16 weights", "dynamic": "dynamic-range int8 weights",
                "full": "full-integer int8"}[self.kind]


def quant_plan(request: PrecisionRequest, io_dtype: str, artifact: ModelArtifact | None = None) -> QuantPlan:
    """The converter settings for a precision request (see the module docstring).

    Raises:
        UnsupportedError: an unknown precision, or int8 IO without full-integer quantization.
        CalibrationError: ``--int8-mode static`` without calibration data.
    """
    if request.precision not in ("fp32", "fp16", "int8"):
        raise UnsupportedError(f"the tflite target has no precision {request.precision!r}")
    if io_dtype not in IO_DTYPES:
        raise ConfigError(f"bad --target-option io_dtype={io_dtype!r}; expected one of {', '.join(IO_DTYPES)}")
    if request.precision == "int8" and request.int8_mode == "static" and request.calibration is None:
        raise CalibrationError("full-integer INT8 for tflite needs calibration data", hint="pass --calib data.npz")
    kind = {"fp32": "none", "fp16": "float16"}.get(request.precision) or _int8_kind(request, io_dtype, artifact)
    if io_dtype == "int8" and kind != "full":
        raise UnsupportedError("int8 model inputs/outputs need full-integer INT8",
                               hint="use --precision int8 with --calib (and not --int8-mode dynamic), or float io")
    if request.exclude and kind != "full":
        raise UnsupportedError(f"keeping layers in float needs full-integer INT8 on the tflite target; "
                               f"{QuantPlan(kind).description} has no per-op exclusion in the TFLite converter",
                               hint="use --precision int8 with --calib (and not --int8-mode dynamic)")
    return QuantPlan(kind, io_dtype)


def _int8_kind(request: PrecisionRequest, io_dtype: str, artifact: ModelArtifact | None) -> str:
    if request.int8_mode == "dynamic" or request.calibration is None:
        return "dynamic"
    loops = recurrent_nodes(artifact.path) if artifact is not None and artifact.format == FORMAT_ONNX else []
    if loops and (request.int8_mode == "static" or io_dtype == "int8" or request.exclude):
        op, name = loops[0]
        raise UnsupportedError(f"full-integer INT8 of {op} {name!r} on the tflite target: the unroll_rnn pass left it "
                               "a WHILE loop, which crashes TensorFlow's quantizer (TF 2.21)",
                               hint="use --int8-mode dynamic, or fp16/fp32; 'edgec build -v' logs why it was not unrolled")
    if loops:
        return "dynamic"  # see the error above
    if request.int8_mode == "static" or io_dtype == "int8":
        return "full"
    if artifact is not None and artifact.format == FORMAT_ONNX and choose_int8_mode(request, artifact) == "dynamic":
        return "dynamic"  # MatMul-dominated (transformers): see the module docstring
    return "full"


class TfliteOptions(TargetOptions):
    """Options of the tflite target (unknown keys rejected)."""

    io_dtype: Literal["float", "int8"] = option(
        "float", "float or int8: model input/output type of full-integer INT8 bundles (int8: a device feeds int8 "
        "with the scale and zero point in the manifest)", flag="--io-dtype", choices=IO_DTYPES)
    recurrent: Literal["float", "int8"] = option(
        "float", "unrolled LSTM/GRU/RNN ops and their state path in full-integer INT8: float (default), int8")
    squares: Literal["float", "int8"] = option(
        "float", "squares summed up to their root (an STFT magnitude, an L2 norm) in full-integer INT8: float (default), int8")


class TfliteTarget(Target, LayerTools):
    """LiteRT bundles."""

    name = "tflite"
    extra = "tflite"
    routes = (FORMAT_SAVEDMODEL, FORMAT_KERAS, FORMAT_ONNX)
    precisions = ("fp32", "fp16", "int8")
    modules = ("tensorflow", "ai_edge_litert")
    route_modules = {FORMAT_ONNX: ONNX2TF_MODULES}
    """onnx2tf's route also needs tf_keras, which no extra installs (see :data:`edgec.core.installed.INSTALL_ALONE`)."""
    packages = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "onnx2tf", "tf-keras", "onnx_graphsurgeon")
    precision_notes = {"fp16": "halves storage; LiteRT's CPU kernels dequantize it to fp32: 1.00x fp32 latency (measured); "
                               "fp16 compute needs a GPU delegate"}
    Options = TfliteOptions
    sparsity_gain = "size after compression"
    color = "#ff7f0e"
    export_version = "6"
    """2: 3-D sequence inputs keep their layout; variables read by the graph are tracked (grouped convolutions).
    3: full-integer INT8 keeps output ``Concat``s of mixed ranges in float (:mod:`._tflite_mixed`).
    4: full-integer INT8 keeps unrolled recurrent ops and their state path in float (the ``recurrent`` option).
    5: full-integer INT8 keeps square-root chains in float (the ``squares`` option).
    6: full-integer INT8 measures its ranges again with every tensor kept, keeps ``ONE_HOT`` float, and its
    square-root chains take variances from moments, their normalization and powers read by a tanh."""
    onnx_rewrites = ("unroll_rnn", "split_reduce_l2", "fuse_gelu", "split_slice", "edge_pad_pools")
    """Exact rewrites onnx2tf needs (see those passes): a recurrent node with its state as an input trips it (and
    becomes a WHILE loop otherwise), ReduceL2 trips it, a bare Erf has no TFLite builtin, a Slice over several
    axes of a channels-last tensor comes out wrong."""

    def check_runtime(self) -> None:
        """LiteRT, or ``tflite_runtime`` where that is what a device has: running a bundle needs no TensorFlow."""
        if not any(_has_module(m) for m in ("ai_edge_litert", "tflite_runtime")):
            raise MissingDependencyError("ai_edge_litert", self.extra, "running tflite bundles")

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        """None, except for full-integer INT8 of an ONNX model: ``expand_activations`` writes ``PRelu``,
        hard-swish and ``HardSigmoid`` with ops XNNPACK runs in INT8 (float bundles keep the ops XNNPACK runs
        in float; rewritten there they cost MTCNN ONet and PP-OCR cls about 15%)."""
        plan = quant_plan(request, self._io_dtype(request), artifact)
        return [("expand_activations", {})] if plan.kind == "full" and artifact.format == FORMAT_ONNX else []

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        # precision_passes checked the user's request; an fp32 export with int8 IO asked is the FP32 reference
        # of a mixed-precision search (--max-drop), whose IO is float
        io_dtype = "float" if request.precision == "fp32" else self._io_dtype(request)
        plan = quant_plan(request, io_dtype, artifact)
        if artifact.format == FORMAT_ONNX:
            saved, perms = onnx_to_saved_model(artifact, request.calibration)
            route = "onnx -> onnx2tf (SavedModel, channels-last) -> TFLiteConverter"
        else:
            saved, perms = serving_saved_model(artifact, work_dir / "serving"), {}
            route = f"{artifact.format} -> TFLiteConverter"
        samples = _representative(request.calibration, perms) if plan.kind == "full" else []
        keep_mixed = plan.kind == "full" and artifact.format == FORMAT_ONNX and has_output_concat(artifact.path)
        recurrent = self._recurrent_layers(artifact, plan, request)
        squares = (plan.kind == "full" and artifact.format == FORMAT_ONNX and _tflite_mixed.has_square_root(artifact.path)
                   and request.options_as(TfliteOptions).squares == "float")
        flatbuffer, mixed, recurrent_ops, square_ops, constant_ops = convert_saved_model(
            saved, plan, samples, route, work_dir, request.exclude, keep_mixed, recurrent, squares)
        (bundle_dir / MODEL_FILE).write_bytes(flatbuffer)
        inputs, outputs, ops = describe_bundle(bundle_dir / MODEL_FILE, artifact, perms)
        details = {"runtime": "ai_edge_litert", "route": route, "signature": SERVING, "quantization": plan.description,
                   "io_dtype": plan.io_dtype, "representative_samples": len(samples), "ops": ops}
        if request.exclude:
            details["quantization_excluded"] = list(request.exclude)
        if mixed:
            details["kept_float_outputs"] = [m.to_json() for m in mixed]
        if plan.kind == "full" and artifact.format == FORMAT_ONNX:  # the unroll_rnn pass runs on the ONNX route only
            details["recurrent"] = request.options_as(TfliteOptions).recurrent
        if recurrent_ops:
            details["recurrent_float"] = list(recurrent.nodes)
            details["recurrent_float_ops"] = len(recurrent_ops)
        if square_ops:
            details["kept_float_squares"] = list(square_ops)
        if constant_ops:
            details["kept_float_constant_outputs"] = list(constant_ops)
        return ExportResult(MODEL_FILE, (MODEL_FILE,), inputs, outputs, details)

    def bundle_feeds(self, feeds: list[Feed], result: ExportResult) -> list[Feed]:
        specs = {s.name: s for s in result.inputs}
        return [{n: _quantize(_to_bundle_layout(a, specs[n]), specs[n]) for n, a in f.items()} for f in feeds]

    def bundle_outputs(self, outputs: list[Feed], result: ExportResult) -> list[Feed]:
        specs = {s.name: s for s in result.outputs}
        return [{n: _to_bundle_layout(a, specs[n]) for n, a in f.items()} for f in outputs]

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
        return _tflite_layers.compare_layers(reference, candidate, feeds)

    def float_group(self, reference: Path, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        """The layer and the producers of the activations it reads (an activation is int8 unless its producer is float)."""
        return _tflite_layers.float_group(reference, layer)

    def float_nodes(self, reference: Path, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        """Every op of the layers, compared or not (a reshape, a fused activation)."""
        return _tflite_layers.float_nodes(reference, layers)

    def _io_dtype(self, request: PrecisionRequest) -> str:
        return request.options_as(TfliteOptions).io_dtype

    def _recurrent_layers(self, artifact: ModelArtifact, plan: QuantPlan, request: PrecisionRequest) -> RecurrentLayers:
        """The unrolled recurrent nodes and their layers that full-integer INT8 keeps float (``recurrent=float``)."""
        if plan.kind != "full" or artifact.format != FORMAT_ONNX or request.options_as(TfliteOptions).recurrent == "int8":
            return RecurrentLayers()
        return unrolled_recurrent_layers(artifact.path)


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder may raise instead of answering None
        return False


# ---- conversion ---------------------------------------------------------------------------------------


class Converted(NamedTuple):
    """A converted flatbuffer and what full-integer INT8 kept float in it (:func:`convert_saved_model`)."""

    flatbuffer: bytes
    mixed: list[MixedOutput]
    recurrent_ops: tuple[str, ...] = ()
    square_ops: tuple[str, ...] = ()
    constant_ops: tuple[str, ...] = ()


def convert_saved_model(saved: Path, plan: QuantPlan, samples: list[Feed], route: str, work_dir: Path,
                        exclude: tuple[str, ...] = (), keep_mixed: bool = False,
                        recurrent: RecurrentLayers | None = None, squares: bool = False) -> Converted:
    """Run ``TFLiteConverter`` on the serving signature with the plan's settings; with ``exclude`` (op output
    tensor names), full-integer INT8 keeps those ops in float (:func:`._tflite_layers.quantize_calibrated`).
    With ``keep_mixed``, full-integer INT8 also keeps float the output ``CONCATENATION``s that join parts of
    very different ranges, and with ``recurrent`` the ops of those unrolled recurrent layers and their state path
    (:mod:`._tflite_mixed`), and with ``squares`` the ops of its square-root chains
    (:func:`._tflite_mixed.square_float_nodes`); full-integer INT8 always calibrates with measured ranges
    (:func:`._tflite_layers.calibrate_only`) and keeps ``ONE_HOT`` float. Returns the model, those outputs, and
    the recurrent, square-root and ``ONE_HOT`` ops kept float.

    Raises:
        ExportError: naming the ops the converter could not handle and the route, with its log.
        ConfigError: a name in ``exclude`` is not an op of the model.
    """
    tf = tf_module()
    log_path = work_dir / "converter.log"
    try:
        with native_output_to(log_path):
            loops_asked = recurrent is not None and bool(recurrent.nodes)
            if plan.kind == "full":  # calibrated with measured ranges (calibrate_only), then quantized
                converter = _converter(tf, saved, plan, samples, True)
                calibrated = _tflite_layers.calibrate_only(converter)
                mixed = _tflite_mixed.mixed_outputs(calibrated, samples) if keep_mixed else []
                loops = _tflite_mixed.recurrent_float_nodes(calibrated, recurrent) if recurrent and loops_asked else ()
                roots = _tflite_mixed.square_float_nodes(calibrated) if squares else ()
                copies = _tflite_mixed.constant_output_nodes(calibrated)
                kept = tuple(dict.fromkeys((*exclude, *(n for m in mixed for n in m.nodes), *loops, *roots, *copies)))
                if loops:
                    calibrated = _tflite_mixed.without_float_stats(calibrated, loops, kept)
                quantized = _tflite_layers.quantize_calibrated(converter, calibrated, kept)
                joined = tuple(n for m in mixed for n in m.nodes)
                return Converted(_tflite_mixed.without_requantize(quantized, joined), mixed, loops, roots, copies)
            converter = _converter(tf, saved, plan, samples, bool(exclude))
            return Converted(bytes(converter.convert()), [])
    except EdgecError:
        raise
    except Exception as exc:  # the converter's errors (any type) on this model; a bug in edgec's steps is raised as one
        raise_if_bug(exc, f"converting to TFLite (route: {route})")
        log = log_path.read_text(errors="replace") + f"\n{type(exc).__name__}: {exc}\n"
        ops = sorted(set(re.findall(r"'((?:tf|tfl|stablehlo|mhlo)\.[A-Za-z0-9_]+)' op", log)))
        what = f"cannot convert op {', '.join(ops)}" if ops else f"failed ({type(exc).__name__}: {_first_line(exc)})"
        raise ExportError(f"the TFLite converter {what} (route: {route}, quantization: {plan.description})",
                          hint="replace the op in the model, or use another precision or target", log=log) from exc


def _converter(tf: Any, saved: Path, plan: QuantPlan, samples: list[Feed], float_ops: bool = False) -> Any:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SERVING])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if plan.kind != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if plan.kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if plan.kind == "full":
        converter.representative_dataset = lambda: iter(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_ops:  # kernels for the ops kept in float
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        if plan.io_dtype == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def _representative(calibration: CalibrationSet | None, perms: dict[str, tuple[int, ...]]) -> list[Feed]:
    if calibration is None:
        return []
    return [{n: np.transpose(a, perms[n]) if n in perms else a for n, a in feed.items()} for feed in calibration.feeds()]


# ---- the bundle's interface ---------------------------------------------------------------------------


def describe_bundle(path: Path, artifact: ModelArtifact, perms: dict[str, tuple[int, ...]]) -> tuple[
        tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, int]]:
    """Tensor specs as a device sees them (shape, dtype, layout, quantization) and the op counts.

    Raises:
        ExportError: the converted signature does not have the source's input/output names.
    """
    runner = LiteRtRunner(str(path))
    with runner:
        found = (set(runner.input_details()), set(runner.output_details()))
        wanted = ({s.name for s in artifact.inputs}, {s.name for s in artifact.outputs})
        if found != wanted:
            raise ExportError(f"the converted model's signature has inputs {sorted(found[0])} and outputs "
                              f"{sorted(found[1])}; expected {sorted(wanted[0])} and {sorted(wanted[1])}")
        inputs = tuple(_bundle_spec(s, runner.input_details()[s.name], perms.get(s.name)) for s in artifact.inputs)
        outputs = tuple(_bundle_spec(s, runner.output_details()[s.name], perms.get(s.name)) for s in artifact.outputs)
        ops = _op_counts(runner)
    return inputs, outputs, ops


def _bundle_spec(source: TensorSpec, detail: dict[str, Any], perm: tuple[int, ...] | None) -> TensorSpec:
    dims = [source.shape[i] for i in perm] if perm else list(source.shape)
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    shape = tuple(d if d >= 0 or i >= len(dims) else dims[i] for i, d in enumerate(signature))
    extra: dict[str, Any] = {"layout": CHANNELS_LAST[len(dims)][1] if perm else "as_source"}
    if perm:
        extra["source_layout"] = CHANNELS_LAST[len(dims)][0]
    scale, zero_point = detail["quantization"]
    if scale:
        extra["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return TensorSpec(source.name, shape, np.dtype(detail["dtype"]).name, extra)


def _op_counts(runner: LiteRtRunner) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        details = runner._interpreter._get_ops_details()  # no public API lists the ops
    except (AttributeError, RuntimeError):
        return counts
    for op in details:
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def _to_bundle_layout(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if "source_layout" not in spec.extra:
        return array
    rank = np.ndim(array)
    return np.ascontiguousarray(np.transpose(array, channels_last(rank)))


def _quantize(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    q = spec.extra.get("quantization")
    return quantize(array, {"dtype": spec.dtype, "quantization": (q["scale"], q["zero_point"])}) if q else array


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:200]
