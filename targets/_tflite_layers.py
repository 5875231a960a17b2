"""Per-layer tools of the ``tflite`` target: intermediate tensors read with LiteRT, source layer names
carried through onnx2tf, and TensorFlow's selective quantization, which keeps chosen ops in float.

Rules:
1. A node is an op of the FP32 ``.tflite`` model, named by its first output tensor: TFLite's quantizer
   takes these names as "denylisted nodes" (``mlir_quantize(denylisted_nodes=...)``, what
   ``tf.lite.experimental.QuantizationDebugger`` uses). Ops are listed in the interpreter's node order,
   which is execution order; the default XNNPACK delegate is left out so that every op runs in LiteRT's
   own kernels and ``experimental_preserve_all_tensors`` keeps its output.
2. A quantized model keeps the float model's names for op outputs (the converter quantizes in place).
   Tensors the quantizer adds (``tfl.quantize``, ``tfl.dequantize``, ``NAME1`` for an int8 output before
   the final DEQUANTIZE that produces ``NAME``) have no float counterpart and are not compared. Integer
   tensors are dequantized with their per-tensor scale and zero point.
3. Source layers: TensorFlow names an op's output after the ops fused into it, ``MODEL/LAYER/Op;MODEL/LAYER/Op``;
   the Keras layer is the second scope. Keras sources keep their own layer names; for ONNX sources the
   onnx2tf worker renames the Keras layers after the ONNX model's layers (:func:`name_keras_layers`). An op
   whose output carries no scope (a signature output such as ``PartitionedCall:0``) takes the layer of the
   constants only it reads (a constant shared by several ops names none of them).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import ConfigError, UnsupportedError
from edgec.core.types import Feed
from edgec.frameworks import fidelity
from edgec.frameworks.fidelity import LayerDivergence, NodeInfo
from edgec.frameworks.tf_utils import tf_module
from edgec.runtime_shims.litert import _quiet_native_stderr, dequantize, load_interpreter_class, quantize

SHAPE_OPS = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2", "GATHER"})
"""Ops that move values without requantizing them: an int8 activation stays int8 through them."""


# ---- reading a .tflite model --------------------------------------------------------------------------


def _interpreter(model: Path | bytes, preserve: bool = False) -> Any:
    interpreter_class, _ = load_interpreter_class()
    resolver = getattr(sys.modules[interpreter_class.__module__], "OpResolverType", None)
    kwargs: dict[str, Any] = {"experimental_preserve_all_tensors": preserve}
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    source = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    with warnings.catch_warnings(), _quiet_native_stderr():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is intended for debugging purposes only"
        return interpreter_class(**source, **kwargs)


def _tensor(interpreter: Any, index: int) -> dict[str, Any]:
    return dict(interpreter._get_tensor_details(index, 0))


def graph_nodes(interpreter: Any) -> list[NodeInfo]:
    """The model's ops in execution order as :class:`NodeInfo` (rules 1 and 3)."""
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    readers: dict[int, int] = {}
    for op in ops:
        for i in {int(i) for i in op["inputs"] if i >= 0}:
            readers[i] = readers.get(i, 0) + 1
    nodes = []
    for op in ops:
        outputs = [int(i) for i in op["outputs"] if i >= 0]
        if not outputs:
            continue
        inputs = [int(i) for i in op["inputs"] if i >= 0]
        name = _tensor(interpreter, outputs[0])["name"]
        weights = [_tensor(interpreter, i)["name"] for i in inputs  # constants of its own: a shared one names nothing
                   if i not in produced and i not in graph_inputs and readers[i] == 1]
        layer = next((x for x in map(source_layer, [name, *weights]) if x), name)
        nodes.append(NodeInfo(name, op["op_name"], layer, name, tuple(_tensor(interpreter, i)["name"] for i in inputs)))
    return nodes


def source_layer(tensor_name: str) -> str | None:
    """The Keras layer in a TensorFlow tensor name (rule 3): the second scope of the last fused part that has one."""
    for part in reversed(tensor_name.split(";")):
        scopes = part.split("/")
        if len(scopes) >= 3 and scopes[1]:
            return scopes[1]
    return None


def read_nodes(model: Path) -> list[NodeInfo]:
    """The ops of a ``.tflite`` file (rule 1)."""
    return graph_nodes(_interpreter(model))


# ---- per-layer comparison -------------------------------------------------------------------------------


def compare_layers(reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
    """Per-node divergence of the ``candidate`` model from the FP32 ``reference``, largest growth first.

    ``feeds`` are in the candidate bundle's layout; integer feeds (``io_dtype=int8``) are dequantized with
    the candidate's input parameters for the float reference. Both models run one feed at a time and only
    running sums are kept (:class:`~edgec.frameworks.fidelity.ErrorSums`).

    Raises:
        UnsupportedError: the feeds lack an input of a model, or the models share no tensor names.
    """
    ref_interp, cand_interp = _interpreter(reference, preserve=True), _interpreter(candidate, preserve=True)
    nodes = graph_nodes(ref_interp)
    cand_inputs = _inputs(cand_interp)
    ref_read = _readable(ref_interp, {n.output for n in nodes})
    cand_read = _readable(cand_interp, {d["name"] for d in ref_read.values()})
    shared = {d["name"] for d in cand_read.values()}
    sums = fidelity.ErrorSums()
    for feed in feeds:
        ref_values = _run(ref_interp, feed, {i: d for i, d in ref_read.items() if d["name"] in shared}, cand_inputs)
        for name, got in _run(cand_interp, feed, cand_read, cand_inputs).items():
            sums.add(name, ref_values[name], got)
    errors = sums.errors()
    if not errors:
        raise UnsupportedError(f"{candidate.name} shares no tensor names with the reference {reference}",
                               hint="compare bundles built from the same model by the same edgec version")
    return fidelity.rank_errors(nodes, errors)


def _signature(interpreter: Any) -> Any:
    signatures = interpreter.get_signature_list()
    if not signatures:
        return None
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    return interpreter.get_signature_runner(key)


def _inputs(interpreter: Any) -> dict[str, dict[str, Any]]:
    runner = _signature(interpreter)
    if runner is not None:
        return dict(runner.get_input_details())
    return {d["name"]: d for d in interpreter.get_input_details()}


def _as_input(array: np.ndarray, detail: dict[str, Any], source: dict[str, Any] | None) -> np.ndarray:
    """A feed in the input's dtype: float quantized with the input's parameters, integer dequantized with the
    parameters of the model it was made for."""
    want = np.dtype(detail["dtype"])
    array = np.asarray(array)
    if array.dtype.kind in "iu" and want.kind == "f" and source is not None and source["quantization"][0]:
        array = dequantize(array, source)
    return np.ascontiguousarray(quantize(array, detail)).astype(want, copy=False)


def _run(interpreter: Any, feed: Feed, readable: dict[int, dict[str, Any]], feed_details: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """The ``readable`` op outputs (:func:`_readable`) of one run on ``feed``, dequantized.

    Raises:
        UnsupportedError: the feed lacks an input of the model.
    """
    runner = _signature(interpreter)
    inputs = _inputs(interpreter)
    missing = sorted(set(inputs) - set(feed))
    if missing:
        raise UnsupportedError(f"the models to compare have different inputs: {', '.join(missing)} is not fed")
    args = {n: _as_input(feed[n], d, feed_details.get(n)) for n, d in inputs.items()}
    if runner is not None:
        runner(**args)
    else:
        _invoke(interpreter, inputs, args)
    return {detail["name"]: dequantize(np.asarray(interpreter.get_tensor(index)), detail) for index, detail in readable.items()}


def _readable(interpreter: Any, wanted: set[str]) -> dict[int, dict[str, Any]]:
    """Op outputs named in ``wanted`` that hold float values or per-tensor quantized integers, first of each name."""
    found: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    for op in interpreter._get_ops_details():
        for index in (int(i) for i in op["outputs"] if i >= 0):
            detail = _tensor(interpreter, index)
            kind = np.dtype(detail["dtype"]).kind
            per_tensor = len(detail["quantization_parameters"]["scales"]) <= 1
            quantized = kind in "iu" and bool(detail["quantization"][0]) and per_tensor
            if detail["name"] in wanted and detail["name"] not in seen and (kind == "f" or quantized):
                found[index] = detail
                seen.add(detail["name"])
    return found


def _invoke(interpreter: Any, inputs: dict[str, dict[str, Any]], args: Feed) -> None:
    for name, array in args.items():
        index = inputs[name]["index"]
        if tuple(interpreter.get_tensor(index).shape) != array.shape:
            interpreter.resize_tensor_input(index, array.shape, strict=False)
    interpreter.allocate_tensors()
    for name, array in args.items():
        interpreter.set_tensor(inputs[name]["index"], array)
    interpreter.invoke()


# ---- which ops to keep in float -------------------------------------------------------------------------


def float_group(reference: Path, layer: str) -> list[str]:
    """The layer and the layers producing the activations it reads, through ops that only move values
    (:data:`SHAPE_OPS`): an activation stays int8 unless its producer runs in float."""
    nodes = read_nodes(reference)
    producer = {n.output: n for n in nodes}
    found: list[str] = []

    def walk(tensor: str) -> None:
        node = producer.get(tensor)
        if node is None or node.layer == layer:
            return
        if node.layer not in found:
            found.append(node.layer)
        if node.op in SHAPE_OPS and node.inputs:
            walk(node.inputs[0])

    for node in nodes:
        if node.layer == layer:
            for tensor in node.inputs:
                walk(tensor)
    return [layer, *found]


def float_nodes(reference: Path, layers: list[str]) -> tuple[str, ...]:
    """Every op of the layers (a convolution with its fused activation, a reshape before it), named as the
    quantizer's denylist takes them, whether or not its output could be compared."""
    return tuple(n.name for n in read_nodes(reference) if n.layer in layers)


# ---- selective quantization -----------------------------------------------------------------------------


def calibrate_only(converter: Any) -> bytes:
    """The float model with calibration statistics (what :func:`quantize_calibrated` takes): the converter's,
    each op output's range then measured again on the converter's representative dataset
    (:func:`measured_statistics`)."""
    converter._experimental_calibrate_only = True
    calibrated = bytes(converter.convert())
    dataset = converter.representative_dataset  # the converter wraps the callable in a RepresentativeDataset
    samples = getattr(dataset, "input_gen", dataset)
    return measured_statistics(calibrated, list(samples())) if samples is not None else calibrated


def measured_statistics(calibrated: bytes, samples: list[Feed]) -> bytes:
    """``calibrated`` with the min and max of every op output that has statistics measured on ``samples`` with
    all tensors preserved.

    TensorFlow 2.21's calibrator reads a tensor after a later op has reused its buffer in place (an elementwise
    op writing over its input), so the tensor gets the union of both ranges: magika's ``MUL(x, 0.0447)`` of a
    GELU took ``x * x * 0.0447``'s maximum (2929 for 11.4), its int8 scale 11.5 made it all 0 (top-1 0.05);
    the ``RESHAPE`` before its LayerNorm's reciprocal took the reciprocal's 1000 for 0.19, every divisor became
    the zero point and LiteRT refused to run (``div.cc: data[i] != zero_point``). 14 of its 60 ops had such ranges."""
    from tensorflow.lite.tools import flatbuffer_utils

    if not samples:
        return calibrated
    interpreter = _interpreter(calibrated, preserve=True)
    names = {_tensor(interpreter, int(i))["name"] for op in interpreter._get_ops_details() for i in op["outputs"] if i >= 0}
    readable = _readable(interpreter, names)
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for feed in samples:
        for name, value in _run(interpreter, feed, readable, {}).items():
            low[name] = min(low.get(name, np.inf), float(np.min(value)))
            high[name] = max(high.get(name, -np.inf), float(np.max(value)))
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    for tensor in model.subgraphs[0].tensors:
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        stats = tensor.quantization
        if name in low and stats is not None and stats.min is not None and len(stats.min) == 1:
            stats.min, stats.max = np.array([low[name]], np.float32), np.array([high[name]], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize_calibrated(converter: Any, calibrated: bytes, exclude: tuple[str, ...]) -> bytes:
    """Full-integer INT8 of a model from :func:`calibrate_only` with the ops named in ``exclude`` (their output
    tensor names) kept in float.

    What ``QuantizationDebugger.get_nondebug_quantized_model`` does, with the converter's own settings: the
    converter only calibrated (its representative dataset), then ``mlir_quantize`` quantizes the calibrated
    model with the nodes denylisted and the converter's input/output types, and duplicate read-only
    buffers are merged as ``convert()`` does. The converter must allow float builtins
    (``TFLITE_BUILTINS``) beside ``TFLITE_BUILTINS_INT8``.

    Raises:
        ConfigError: a name in ``exclude`` is not an op output of the model.
    """
    tf = tf_module()
    from tensorflow.lite.python import convert as tfl_convert

    known = {n.name for n in graph_nodes(_interpreter(calibrated))}
    unknown = [name for name in exclude if name not in known]
    if unknown:
        raise ConfigError(f"the tflite model has no op output {unknown[0]!r} to keep in float "
                          f"({len(unknown)} of {len(exclude)} names unknown)")
    quantized = tfl_convert.mlir_quantize(
        calibrated,
        disable_per_channel=converter._experimental_disable_per_channel,
        input_data_type=converter.inference_input_type or tf.float32,
        output_data_type=converter.inference_output_type or tf.float32,
        denylisted_nodes=list(exclude),
        disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
    )
    return bytes(tfl_convert.deduplicate_readonly_buffers(quantized))


# ---- source layer names through onnx2tf (runs in the onnx2tf worker) -----------------------------------


@contextlib.contextmanager
def onnx2tf_tensors() -> Iterator[dict[str, Any]]:
    """onnx2tf's table ONNX tensor name -> ``{"tf_node": KerasTensor, ...}``, filled while ``onnx2tf.convert``
    runs: onnx2tf keeps it local and hands it to ``get_tf_model_outputs`` once the graph is built. Empty when
    a future onnx2tf no longer has that function (layers then keep onnx2tf's names)."""
    module = importlib.import_module("onnx2tf.onnx2tf")
    original = getattr(module, "get_tf_model_outputs", None)
    captured: dict[str, Any] = {}
    if original is None:
        yield captured
        return

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.update(kwargs.get("tf_layers_dict") or {})
        return original(*args, **kwargs)

    setattr(module, "get_tf_model_outputs", spy)  # noqa: B010
    try:
        yield captured
    finally:
        setattr(module, "get_tf_model_outputs", original)  # noqa: B010


ONNX2TF_PREFIX = re.compile(r"^/")
"""onnx2tf renames a leading ``/`` of ONNX node and tensor names to ``wa/`` (its ``re.sub('^/', 'wa/', ...)``)."""


def name_keras_layers(onnx_model: Any, tensors: dict[str, Any]) -> int:
    """Rename the Keras layers onnx2tf made for each ONNX node after the node's layer
    (:func:`edgec.frameworks.fidelity.layer_names`: ``conv3`` for a Conv and its Relu, ``features.3`` for a
    PyTorch module), so that TFLite tensor names carry it (rule 3). Returns how many layers were renamed.

    A node's layers are found walking back from its output tensors to the outputs of other nodes and the
    model inputs; nodes claim layers in graph order. Names are reduced to what a TensorFlow name scope takes.
    onnx2tf keys a tensor whose name starts with ``/`` (torch's ``/lstm/LSTM_output_0``, the ``unroll_rnn``
    pass's ``/lstm/LSTM/t0/h``) as ``wa/...`` (:data:`ONNX2TF_PREFIX`).
    """
    layers = fidelity.layer_names(onnx_model)
    outputs = {id(entry["tf_node"]) for entry in tensors.values() if isinstance(entry, dict) and "tf_node" in entry}
    claimed: set[int] = set()
    renamed = 0
    for node in onnx_model.graph.node:
        name = scope_name(layers.get(node.name, node.name))
        for output in node.output:
            entry = tensors.get(output) or tensors.get(ONNX2TF_PREFIX.sub("wa/", output))
            start = entry.get("tf_node") if isinstance(entry, dict) else None
            for layer in _own_layers(start, outputs, claimed) if name else []:
                layer._name = name
                renamed += 1
    return renamed


def _own_layers(start: Any, stops: set[int], claimed: set[int]) -> list[Any]:
    found, stack = [], [start]
    while stack:
        tensor = stack.pop()
        history = getattr(tensor, "_keras_history", None)
        if history is None or (tensor is not start and id(tensor) in stops):
            continue
        layer, node_index = history[0], history[1]
        if id(layer) in claimed or type(layer).__name__ == "InputLayer":
            continue
        claimed.add(id(layer))
        found.append(layer)
        stack.extend(layer._inbound_nodes[node_index].keras_inputs)
    return found


def scope_name(name: str) -> str:
    """``name`` with what a TensorFlow name scope does not take (``/``, ``:``, spaces) replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_-")
