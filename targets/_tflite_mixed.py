"""Model outputs of a ``.tflite`` model that join parts of very different ranges, which one per-tensor INT8
scale cannot hold: the tflite counterpart of :mod:`edgec.compiler.passes._mixed_outputs` (the onnx target's).

A YOLO-style detector ends in ``Concat(boxes, class probabilities)``: boxes span 0-320, probabilities 0-1.
Full-integer INT8 gives the ``CONCATENATION`` (and so the whole output) one scale, ~1.26, so every probability
becomes 0 or 1.26 (YOLOv8n: the class part's cosine to FP32 is 0.0). Rules, on the calibrated float model
(the converter's calibrate-only output, whose op names the quantizer's denylist takes):

1. From each signature output, walk back through ops that only move values (:data:`MOVES`) to the op that
   produced them. Only a ``CONCATENATION`` of more than one computed tensor is judged.
2. Run the calibrated model on the representative samples and take each computed input's range
   (``max - min`` over all samples).
3. When the widest range is more than :data:`RATIO` times the narrowest (and the narrowest is not 0), the
   ``CONCATENATION``, the ops of rule 1 and the moves that feed it stay float: each part keeps the scale of
   the op that produced it and is dequantized before the join (a move left int8 takes the join's scale).
4. A ``LOGISTIC`` that feeds the kept ``CONCATENATION`` (through moves) stays float as well, and
   :func:`without_requantize` drops the ``QUANTIZE``/``DEQUANTIZE`` pair that the quantizer still puts after it.
   Its int8 output is fixed at scale 1/256 from 0 whatever was calibrated, so a class probability can only be a
   multiple of 0.0039. YOLOv8n 320 (nudenet, 18 classes) on the zoo's held-out photos, whose 20 best anchors score
   0.001-0.03: detection agreement 0.856 with the class sigmoid int8, 1.0 with FP32 class scores and int8 boxes, and
   0.922 with a float sigmoid of the int8 logits; every op kept float by ``--max-drop`` still went through that grid.

Recurrent state (:func:`recurrent_float_nodes`, the tflite target's ``recurrent`` option, ``float`` by default):
the ops of the unrolled ``LSTM``/``GRU``/``RNN`` nodes (found by the Keras layer names the onnx2tf worker gives
them, :class:`RecurrentLayers`) stay float, with the state path: the moves from a model input to those ops
(silero-vad's ``Gather`` of ``state``) and the moves and joins from them to a model output (its ``Concat`` of
``h`` and ``c`` into ``stateN``). Quantized, every step's ``h`` and ``c`` take one per-tensor scale each and the
error comes back at every call (a streaming LSTM whose ``c`` reaches ~20, the integration test: 0.77 drift
over 8 calls quantized, 2e-6 float). :func:`without_float_stats` works around a quantizer quirk on that path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.core.types import Feed
from edgec.frameworks.fidelity import NodeInfo
from edgec.targets._tflite_layers import _interpreter, _readable, _run, _signature, _tensor, graph_nodes

MOVES = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
"""Ops that move values without changing them (rule 1)."""
STATE_MOVES = MOVES | {"GATHER", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "UNPACK", "PACK", "CONCATENATION"}
"""Ops that carry a recurrent state between a model input or output and the recurrent ops (take parts, join them)."""
SQUASH_OUTPUTS = frozenset({"LOGISTIC"})
"""Ops whose int8 output has a fixed scale, 1/256 from 0: one that feeds a kept ``CONCATENATION`` stays float too
(rule 4)."""
RATIO = 10.0
"""Range ratio above which an output ``CONCATENATION`` stays float (rule 3; the onnx target's default)."""


@dataclass(frozen=True)
class RecurrentLayers:
    """The Keras layers of the recurrent nodes that the ``unroll_rnn`` pass unrolled.

    Args:
        nodes: the recurrent nodes, by their name in the source model.
        layers: the layer names of the nodes the pass wrote for them.
        prefixes: each node's name as a layer name: the pass names every node it writes ``<node>/...``, so a layer
            named ``<prefix>_...`` is one of them even where the worker named it otherwise than ``layers`` says.
    """

    nodes: tuple[str, ...] = ()
    layers: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, str) and (layer in self.layers or any(layer.startswith(f"{p}_") for p in self.prefixes))


@dataclass(frozen=True)
class MixedOutput:
    """An output whose ``CONCATENATION`` joins parts of different ranges.

    Args:
        output: the signature output's name.
        nodes: the ``CONCATENATION``, the moves that feed it and those between it and the output (op output
            tensor names).
        ranges: the range of each computed input over the samples.
    """

    output: str
    nodes: tuple[str, ...]
    ranges: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "nodes": list(self.nodes), "input_ranges": [float(f"{r:.6g}") for r in self.ranges]}


def output_concats(interpreter: Any) -> list[tuple[str, NodeInfo, list[str]]]:
    """Rule 1: ``(output, CONCATENATION node, [its name and the moves after it])`` for each signature output."""
    nodes = graph_nodes(interpreter)
    producer = {n.output: n for n in nodes}
    runner = _signature(interpreter)
    outputs = runner.get_output_details() if runner is not None else {
        d["name"]: d for d in interpreter.get_output_details()}
    found = []
    for name, detail in outputs.items():
        path: list[str] = []
        node = producer.get(_tensor(interpreter, int(detail["index"]))["name"])
        while node is not None and node.op in MOVES and node.inputs:
            path.append(node.name)
            node = producer.get(node.inputs[0])
        if node is not None and node.op == "CONCATENATION":
            found.append((name, node, [*_moves_before(node, producer), node.name, *path]))
    return found


def _moves_before(concat: NodeInfo, producer: dict[str, NodeInfo]) -> list[str]:
    """The moves that feed the ``CONCATENATION`` (onnx2tf's transposes and reshapes): left int8, they would take
    the join's scale (measured: the probabilities stayed 0 or 1.25)."""
    names = []
    for tensor in concat.inputs:
        node = producer.get(tensor)
        while node is not None and node.op in MOVES and node.inputs:
            names.append(node.name)
            node = producer.get(node.inputs[0])
        if node is not None and node.op in SQUASH_OUTPUTS:
            names.append(node.name)
    return names


def mixed_outputs(calibrated: bytes, samples: list[Feed], ratio: float = RATIO) -> list[MixedOutput]:
    """The outputs that rule 3 keeps float, with what was measured (rule 2 runs only when rule 1 finds one)."""
    interpreter = _interpreter(calibrated, preserve=True)
    concats = output_concats(interpreter)
    produced = {n.output for n in graph_nodes(interpreter)}
    computed = {t for _, node, _ in concats for t in node.inputs if t in produced}
    if not samples or not any(len([t for t in node.inputs if t in computed]) > 1 for _, node, _ in concats):
        return []
    ranges = _ranges(interpreter, computed, samples)
    mixed = []
    for output, node, names in concats:
        parts = tuple(ranges[t] for t in node.inputs if t in ranges)
        if len(parts) > 1 and min(parts) > 0 and max(parts) > ratio * min(parts):
            mixed.append(MixedOutput(output, tuple(names), parts))
    return mixed


def _ranges(interpreter: Any, tensors: set[str], samples: list[Feed]) -> dict[str, float]:
    readable = _readable(interpreter, tensors)
    low = {d["name"]: np.inf for d in readable.values()}
    high = {d["name"]: -np.inf for d in readable.values()}
    for feed in samples:
        for name, value in _run(interpreter, feed, readable, {}).items():
            low[name], high[name] = min(low[name], float(np.min(value))), max(high[name], float(np.max(value)))
    return {t: high[t] - low[t] for t in low}


def recurrent_float_nodes(calibrated: bytes, layers: RecurrentLayers) -> tuple[str, ...]:
    """The ops of the recurrent ``layers`` and the state path to and from the model's inputs and outputs, in
    execution order (see the module docstring), named as the quantizer's denylist takes them."""
    interpreter = _interpreter(calibrated)
    nodes = graph_nodes(interpreter)
    kept = {n.name for n in nodes if n.layer in layers}
    if not kept:
        return ()
    readers: dict[str, list[NodeInfo]] = {}
    for node in nodes:
        for tensor in node.inputs:
            readers.setdefault(tensor, []).append(node)
    inputs = [_tensor(interpreter, int(d["index"]))["name"] for d in interpreter.get_input_details()]
    path = {n.name for t in inputs for r in readers.get(t, []) for n in _moves_into(r, kept, readers)}
    producer = {n.output: n for n in nodes}
    for detail in interpreter.get_output_details():
        path |= _moves_from(producer.get(_tensor(interpreter, int(detail["index"]))["name"]), kept, producer)
    return tuple(n.name for n in nodes if n.name in kept | path)


def _moves_into(node: NodeInfo, kept: set[str], readers: dict[str, list[NodeInfo]]) -> list[NodeInfo]:
    """The moves from ``node`` on (``node`` read a model input) that reach a kept op."""
    if node.name in kept or node.op not in STATE_MOVES:
        return []
    after = [m for r in readers.get(node.output, []) for m in _moves_into(r, kept, readers)]
    reaches = after or any(r.name in kept for r in readers.get(node.output, []))
    return [node, *after] if reaches else []


def _moves_from(node: NodeInfo | None, kept: set[str], producer: dict[str, NodeInfo]) -> set[str]:
    """The moves and joins before a model output (``node`` produced it) when one of them reads a kept op."""
    found: set[str] = set()
    reads_kept, stack = False, [node]
    while stack:
        current = stack.pop()
        if current is None or current.name in found:
            continue
        if current.name in kept or current.op not in STATE_MOVES:
            reads_kept |= current.name in kept
            continue
        found.add(current.name)
        stack.extend(producer.get(t) for t in current.inputs)
    return found if reads_kept else set()


def without_float_stats(calibrated: bytes, ops: tuple[str, ...], kept: tuple[str, ...]) -> bytes:
    """The calibrated model without the statistics of the tensors that ``ops`` produce and only kept ops read.

    TensorFlow 2.21's quantizer quantizes and requantizes such a tensor (``QUANTIZE``, ``QUANTIZE``, ``DEQUANTIZE``)
    between two denylisted ops where the tensor is also read by a ``CONCATENATION`` (an unrolled LSTM's last ``h``,
    read by its output sequence and by the state output): the state took the join's scale, h's part of a
    streaming model's state output cosine 0.9988 where everything else was exact. Without statistics it stays
    float; a tensor that an int8 op reads keeps them (that op needs its scale)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in graph.tensors]
    stay, float_ops = set(ops), set(kept)
    readers: dict[int, list[str]] = {}
    for op in graph.operators:
        for index in (int(i) for i in op.inputs if i >= 0):
            readers.setdefault(index, []).append(names[int(op.outputs[0])] if len(op.outputs) else "")
    for op in graph.operators:
        if not len(op.outputs) or names[int(op.outputs[0])] not in stay:
            continue
        for index in (int(i) for i in op.outputs):
            if all(r in float_ops for r in readers.get(index, [])):
                graph.tensors[index].quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def without_requantize(quantized: bytes, ops: tuple[str, ...]) -> bytes:
    """``quantized`` without the ``QUANTIZE`` and the ``DEQUANTIZE``s after it that turn the float output of one of
    ``ops`` (op output tensor names) back into float: its readers read it directly (rule 4).

    TensorFlow 2.21's quantizer keeps such a pair after a denylisted ``LOGISTIC`` (its int8 output spec is fixed),
    so the op ran in float and its output still took the 1/256 grid. A pair is dropped only where the float
    output is read by the ``QUANTIZE`` alone and the ``QUANTIZE`` only by ``DEQUANTIZE``s."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized))
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in graph.tensors]
    code = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    readers: dict[int, list[int]] = {}
    for index, op in enumerate(graph.operators):
        for tensor in (int(i) for i in op.inputs if i >= 0):
            readers.setdefault(tensor, []).append(index)
    renamed: dict[int, int] = {}
    dropped: set[int] = set()
    for op in graph.operators:
        if not len(op.outputs) or names[int(op.outputs[0])] not in ops:
            continue
        source = int(op.outputs[0])
        after = readers.get(source, [])
        if len(after) != 1 or code[graph.operators[after[0]].opcodeIndex] != schema.BuiltinOperator.QUANTIZE:
            continue
        quantize = int(graph.operators[after[0]].outputs[0])
        back = readers.get(quantize, [])
        if back and all(code[graph.operators[i].opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE for i in back):
            renamed.update({int(graph.operators[i].outputs[0]): source for i in back})
            dropped |= {after[0], *back}
    if not dropped:
        return quantized
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in dropped]
    for op in graph.operators:
        op.inputs = np.array([renamed.get(int(i), int(i)) for i in op.inputs], np.int32)
    graph.outputs = np.array([renamed.get(int(i), int(i)) for i in graph.outputs], np.int32)
    for signature in model.signatureDefs or []:
        for tensor in signature.outputs or []:
            tensor.tensorIndex = renamed.get(tensor.tensorIndex, tensor.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


SQUARES = frozenset({"SQUARE", "SQUARED_DIFFERENCE"})
"""Ops that square (with ``MUL(x, x)`` and ``POW(x, 2)``), where a square-root chain starts (:func:`square_float_nodes`)."""
SQUARE_SUMS = MOVES | {"ADD", "SUB", "SUM", "MEAN", "MAXIMUM", "RELU"}
"""Ops that carry squares on to their root (with scaling: ``MUL`` by a constant, ``DIV`` by one): ``SUB`` joins a
variance from moments, ``E[x^2] - E[x]^2``, which ``MAXIMUM``/``RELU`` keeps at or above 0."""
ROOTS = frozenset({"SQRT", "RSQRT", "LOG"})
"""Ops that take the root of a sum of squares (with ``POW`` by an exponent below 1)."""
SQUASHES = frozenset({"TANH", "LOGISTIC"})
"""Bounded ops that end a chain of powers like a root: a tanh-approximated GELU's ``tanh(k * (x + 0.0447 x^3))``."""
NORM_ROOTS = frozenset({"SQRT", "RSQRT"})
"""Roots a normalization divides by (:func:`_normalization`)."""
ONNX_ROOTS = frozenset({"Sqrt", "Log", "Pow", "ReduceL2", "ReduceLogSumExp", "Tanh", "Sigmoid"})
"""ONNX ops that can become a root or a squash in TFLite (:func:`has_square_root`)."""
CONSTANT_OUTPUT_OPS = frozenset({"ONE_HOT"})
"""Ops whose int8 kernel copies constant inputs into the output (:func:`constant_output_nodes`)."""


def has_square_root(path: Any) -> bool:
    """Whether the ONNX model has an op that may end a square-root chain: only then does full-integer INT8 first
    calibrate and look for those chains (:func:`square_float_nodes`)."""
    import onnx

    return any(node.op_type in ONNX_ROOTS for node in onnx.load(str(path), load_external_data=False).graph.node)


def square_float_nodes(calibrated: bytes) -> tuple[str, ...]:
    """The ops of every chain from squares (``SQUARE``, ``MUL(x, x)``, ``POW(x, 2)``, ``SQUARED_DIFFERENCE``)
    through sums, means, moves and scaling by constants (:data:`SQUARE_SUMS`) to a root (``SQRT``, ``RSQRT``,
    ``LOG``, ``POW`` by an exponent below 1), root included, in execution order: they stay float unless the
    ``squares`` option is ``int8``.

    A square spans twice its input's range in decibels: one INT8 scale over a power spectrum leaves its quiet
    bins 0 or ``sqrt(scale)``, 6% of the loudest magnitude. silero-vad 16k (``sqrt(re^2 + im^2)`` of its STFT,
    16 held-out chunks): decisions 0.875 -> 1.000, speech probability mean error 0.19 -> 0.03 (its encoder's last
    activation, read only by the float LSTM, kept float alone: 0.875). The onnx and openvino targets keep them float too.

    The same chains, wider (magika, a LayerNorm from moments and a tanh-approximated GELU):
    1. A square may be any power of one tensor (``x * (x * (0.0447 * x))``), with the factors that make it; a
       square of a mean (``E[x]^2``) takes the mean (``SUM`` or ``MEAN`` and its scaling) with it.
    2. ``SUB`` and ``MAXIMUM`` carry squares: ``max(E[x^2] - E[x]^2, 0)``. In INT8 both moments take scales of
       their own range, their difference cancels to 0 and the reciprocal's divisor is the zero point.
    3. A ``SQRT``/``RSQRT`` root goes on to the normalization (:func:`_normalization`).
    4. ``TANH`` and ``LOGISTIC`` end a chain of powers as a root does: GELU's ``x + 0.0447 x^3`` on magika's
       conv output (-185 to 256) spans 1e6, and one INT8 scale over it zeroes the tanh of every small value.
    magika (held-out files, top-1 vs FP32): kept float with its ``ONE_HOT`` (:func:`constant_output_nodes`),
    64 files 1.000; without rule 4, 0.906; without rules 1-3, LiteRT refuses to run it."""
    interpreter = _interpreter(calibrated)
    nodes = graph_nodes(interpreter)
    producer = {n.output: n for n in nodes}
    readers: dict[str, list[NodeInfo]] = {}
    for node in nodes:
        for tensor in node.inputs:
            readers.setdefault(tensor, []).append(node)
    values = _constants(interpreter, {t for n in nodes for t in n.inputs} - set(producer))
    kept: set[str] = set()
    for node in nodes:
        exponent = _exponent(node, values)
        if node.op in ROOTS | SQUASHES or (exponent is not None and exponent < 1):
            chain = _square_chain(producer.get(node.inputs[0]), producer, values, set())
            if chain:
                after = _normalization(node, readers, producer, values) if node.op in NORM_ROOTS else []
                kept |= {*chain, node.name, *after}
    return tuple(n.name for n in nodes if n.name in kept)


def constant_output_nodes(calibrated: bytes) -> tuple[str, ...]:
    """The ops of :data:`CONSTANT_OUTPUT_OPS`, which full-integer INT8 always keeps float.

    TensorFlow 2.21's quantizer gives a ``ONE_HOT``'s ``off_value`` a scale of its own (zero point 0) where the
    kernel copies it into an output of zero point -128: every 'off' reads 0.5 instead of 0 (magika's byte
    embedding, cosine 0.12 to FP32)."""
    return tuple(n.name for n in graph_nodes(_interpreter(calibrated)) if n.op in CONSTANT_OUTPUT_OPS)


def _constants(interpreter: Any, tensors: set[str]) -> dict[str, np.ndarray]:
    """The values of the named tensors that hold data (constants), by name; graph inputs are left out."""
    interpreter.allocate_tensors()
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["name"] in tensors and int(detail["index"]) not in inputs:
            try:
                found[detail["name"]] = np.asarray(interpreter.get_tensor(int(detail["index"])))
            except ValueError:  # a tensor without data
                continue
    return found


def _exponent(node: NodeInfo, values: dict[str, np.ndarray]) -> float | None:
    """The constant exponent of a ``POW`` (one value), else None."""
    exponent = values.get(node.inputs[1]) if node.op == "POW" and len(node.inputs) > 1 else None
    return float(exponent.ravel()[0]) if exponent is not None and exponent.size == 1 else None


def _square_chain(node: NodeInfo | None, producer: dict[str, NodeInfo], values: dict[str, np.ndarray],
                  seen: set[str]) -> list[str]:
    """``node`` and the ops before it down to squares, when ``node`` is a square or carries one (else empty)."""
    if node is None or node.name in seen:
        return []
    seen.add(node.name)
    if node.op in SQUARES or _exponent(node, values) == 2:
        return [node.name]
    computed = [t for t in node.inputs if t not in values]
    if node.op == "MUL" and len(computed) == 2 and _power(node.output, producer, values)[1] >= 2:
        base = _power(node.output, producer, values)[0]
        mean = producer.get(base)
        means = [mean.name] if mean is not None and mean.op in {"SUM", "MEAN"} else []
        return [*means, *_power_ops(node.output, base, producer, values)]
    divided = node.op == "DIV" and len(node.inputs) == 2 and node.inputs[1] in values
    scaling = divided or (node.op == "MUL" and len(computed) == 1)
    if node.op in MOVES:
        computed = computed[:1]
    elif node.op not in SQUARE_SUMS and not scaling:
        return []
    below = [n for t in computed for n in _square_chain(producer.get(t), producer, values, seen)]
    return [*below, node.name] if below else []


def _power(tensor: str, producer: dict[str, NodeInfo], values: dict[str, np.ndarray], depth: int = 0) -> tuple[str, int]:
    """``(base, degree)`` of a tensor that is ``c * base ** degree`` through ``MUL``s (by constants, or of two
    powers of one base) and the scaling after a ``SUM``/``MEAN`` (``E[x]``'s base is the sum); else ``(tensor, 1)``."""
    node = producer.get(tensor)
    computed = [t for t in node.inputs if t not in values] if node is not None else []
    if node is None or node.op != "MUL" or depth > 16 or not computed:
        return tensor, 1
    if len(computed) == 1:
        return _power(computed[0], producer, values, depth + 1)
    (base, degree), (other, more) = (_power(t, producer, values, depth + 1) for t in computed[:2])
    return (base, degree + more) if base == other else (tensor, 1)


def _power_ops(tensor: str, base: str, producer: dict[str, NodeInfo], values: dict[str, np.ndarray]) -> list[str]:
    """The ``MUL``s that make ``tensor`` from ``base`` (:func:`_power`), in execution order."""
    node = producer.get(tensor)
    if node is None or tensor == base or node.op != "MUL":
        return []
    below = [n for t in dict.fromkeys(node.inputs) if t not in values for n in _power_ops(t, base, producer, values)]
    return [*dict.fromkeys(below), node.name]


def _normalization(root: NodeInfo, readers: dict[str, list[NodeInfo]], producer: dict[str, NodeInfo],
                   values: dict[str, np.ndarray]) -> list[str]:
    """The ops that take a ``SQRT``/``RSQRT`` on to the normalization that divides by it: moves, a reciprocal
    (``DIV`` of a constant), scaling by constants, then the first ``MUL``/``DIV`` with a computed tensor and the
    ``SUB`` (``x - E[x]``) it reads; nothing when no such product follows. Left int8, the reciprocal of a small
    variance (a LayerNorm's ``1/sqrt(var)``, 5 to 1000 over magika's calibration files) takes one scale over 200x."""
    found: list[str] = []
    for reader in readers.get(root.output, []):
        computed = [t for t in reader.inputs if t not in values]
        if reader.op in MOVES or (reader.op == "DIV" and reader.inputs[0] in values) or (
                reader.op == "MUL" and len(computed) == 1):
            after = _normalization(reader, readers, producer, values)
            found += [reader.name, *after] if after else []  # only on the way to a normalization
        elif reader.op in {"MUL", "DIV"}:
            found.append(reader.name)
            centred = [producer.get(t) for t in computed if t != root.output]
            found += [n.name for n in centred if n is not None and n.op == "SUB"]
    return found
