"""What the openvino target picks for INT8: the nncf preset (``preset`` ``auto``) and the ops kept in float."""

from __future__ import annotations

from typing import Any

from edgec.targets._openvino_layers import recurrent_ops

_SIGNED_ACTIVATIONS = frozenset({"Swish", "Gelu", "Mish", "HSwish", "Elu"})
"""OpenVINO ops whose outputs reach below zero by a bounded tail."""


def auto_preset(model: Any) -> str:
    """``mixed`` (asymmetric activations) when activations with a negative tail (SiLU as ``x * sigmoid(x)`` or
    ``Swish``, GELU, Mish, HSwish, ELU) outnumber ReLU-like ones, else ``auto`` (nncf's choice).

    nncf's default preset quantizes activations symmetrically: a SiLU output (-0.28 to max) then loses a bit
    of its range to negatives it never reaches. YOLOv8n (SiLU everywhere; class scores cosine on their own
    scale, 16 photos): 0.900 with nncf's default, 0.935 with ``mixed`` (measured).
    """
    ops = list(model.get_ordered_ops())
    signed = sum(1 for op in ops if op.get_type_name() in _SIGNED_ACTIVATIONS or _is_silu(op))
    relus = sum(1 for op in ops if op.get_type_name() in ("Relu", "Clamp"))
    return "mixed" if signed > relus else "auto"


def _is_silu(op: Any) -> bool:
    """``Multiply(x, Sigmoid(x))``: SiLU as ONNX exporters before opset 24 write it."""
    if op.get_type_name() != "Multiply":
        return False
    sources = [i.get_source_output() for i in op.inputs()]
    for gate, other in ((sources[0], sources[1]), (sources[1], sources[0])):
        node = gate.get_node()
        if node.get_type_name() == "Sigmoid" and node.input(0).get_source_output() == other:
            return True
    return False


RECURRENT_TYPES = frozenset({"LSTMSequence", "GRUSequence", "RNNSequence", "AUGRUSequence",
                             "LSTMCell", "GRUCell", "RNNCell", "AUGRUCell"})
"""OpenVINO's recurrent ops: the ``recurrent`` option's ``float`` (the default) keeps them out of static INT8."""


def recurrent_float(model: Any, recurrent: str) -> tuple[list[str], list[str], list[str]]:
    """What static INT8 leaves in float unless the ``recurrent`` option is ``int8``: the recurrent op types of
    ``model`` (nncf ``IgnoredScope(types=...)``), and on the ``pt2`` route the recurrent torch modules that
    ``torch.export`` unrolled into plain ops with the names of those ops (``IgnoredScope(names=...)``,
    :func:`edgec.targets._openvino_layers.recurrent_ops`).

    nncf quantizes an ``LSTMSequence``'s weights and all of its inputs, the initial state too: a cell state
    that reaches 20 where it is mostly under 1 keeps a few levels near zero, and the error comes back at
    every step. Measured on the zoo (``benchmarks/zoo_search.py``, unseen data, 1.0 = FP32's answers):
    silero-vad's LSTM variant decision agreement 0.684 -> 0.859 (weights 319 -> 708 kB, latency 1.07x),
    Resemblyzer (3-layer LSTM) embedding cosine 0.741 -> 0.998 (weights 1.5 -> 5.3 MB, latency unchanged
    within noise). The onnx target's static INT8 leaves LSTM nodes in float too (onnxruntime's default).
    """
    if recurrent == "int8":
        return [], [], []
    modules, names = recurrent_ops(model)
    return sorted({op.get_type_name() for op in model.get_ordered_ops()} & RECURRENT_TYPES), modules, names


OUTPUT_MOVERS = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Transpose", "Convert"})
"""Ops that pass a value on to a model output unchanged in meaning (see :func:`output_float_ops`)."""
CONVS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")
"""OpenVINO's convolution op types."""
WEIGHTED = frozenset({*CONVS, "MatMul"})
"""Ops whose INT8 is the speed-up: they stay quantized even where they produce an output (a classifier's head)."""


def output_float_ops(model: Any, outputs: str) -> list[str]:
    """The ops static INT8 leaves in float unless the ``outputs`` option is ``int8``: for each model output, the op
    that produces it, through value movers (:data:`OUTPUT_MOVERS`), with the movers, unless it is a weighted op
    (:data:`WEIGHTED`), a recurrent op (the ``recurrent`` option decides those) or an input/constant. nncf
    quantizes the input of such an op (a ``ReduceMean``, ``Concat``, ``Add``) to the range calibration saw, so
    the model's answer is clipped to it: silero-vad 16k's speech probability, quantized before its final
    ``ReduceMean``, kept 0.69 of FP32's decisions (0.97 with that one op float: the other ops each moved
    nothing). The onnx and tflite targets keep such outputs float too."""
    if outputs == "int8":
        return []
    found: dict[str, None] = {}
    for result in model.get_results():
        node = result.input(0).get_source_output().get_node()
        while node.get_type_name() in OUTPUT_MOVERS and node.get_input_size():
            found[node.get_friendly_name()] = None
            node = node.input(0).get_source_output().get_node()
        if node.get_type_name() not in WEIGHTED | RECURRENT_TYPES | {"Parameter", "Constant"}:  # recurrent: its own option
            found[node.get_friendly_name()] = None
    return list(found)


SQUARE_SUMS = frozenset({"Add", "ReduceSum", "ReduceMean", *OUTPUT_MOVERS})
"""Ops that carry squares on to their root unchanged in kind: sums, means and moves (and scaling by a constant)."""


def square_float_ops(model: Any, squares: str) -> list[str]:
    """The ops static INT8 leaves in float unless the ``squares`` option is ``int8``: every chain from squares
    (``Power(x, 2)``, ``Multiply(x, x)``, ``SquaredDifference``) through sums, means, moves and scaling by
    constants (:data:`SQUARE_SUMS`) to a root (``Sqrt``, ``Power`` with an exponent below 1, ``Log``), root
    included: an STFT magnitude ``sqrt(re^2 + im^2)``, an L2 norm, an unfused layer norm's variance.

    A square spans twice its input's range in decibels: 256 levels over a power spectrum leave its quiet bins
    0 or ``sqrt(scale)``, 6% of the loudest magnitude, where the magnitude itself in INT8 keeps 0.4%. nncf
    quantizes the inputs of ``Add`` and of ``Power``/``Sqrt`` (its ``POWER`` class), which the CPU runs in f32
    anyway. silero-vad 16k (``sqrt(re^2 + im^2)`` of its STFT, measured on 16 held-out chunks): decisions 0.875
    -> 1.000, speech probability mean error 0.18 -> 0.017. The onnx target keeps them float too (``Add``/``Mul``
    stay float there, and onnxruntime does not quantize ``Pow`` or ``Sqrt``)."""
    if squares == "int8":
        return []
    found: dict[str, None] = {}
    for op in model.get_ordered_ops():
        if _is_root(op):
            chain = _square_chain(op.input(0).get_source_output().get_node(), set())
            if chain:
                found.update(dict.fromkeys([*chain, op.get_friendly_name()]))
    return list(found)


def _exponent(op: Any) -> float | None:
    """The constant exponent of a ``Power`` op (one value), else None."""
    if op.get_type_name() != "Power":
        return None
    node = op.input(1).get_source_output().get_node()
    if node.get_type_name() != "Constant":
        return None
    values = node.get_data().ravel()
    return float(values[0]) if values.size == 1 else None


def _is_root(op: Any) -> bool:
    exponent = _exponent(op)
    return op.get_type_name() in ("Sqrt", "Log") or (exponent is not None and exponent < 1)


def _is_square(op: Any) -> bool:
    sources = [i.get_source_output() for i in op.inputs()]
    return (_exponent(op) == 2 or op.get_type_name() == "SquaredDifference"
            or (op.get_type_name() == "Multiply" and sources[0] == sources[1]))


def _square_chain(op: Any, seen: set[str]) -> list[str]:
    """``op`` and the ops before it down to squares, when ``op`` is a square or carries one (else empty)."""
    name = op.get_friendly_name()
    if name in seen:
        return []
    seen.add(name)
    if _is_square(op):
        return [name]
    kind = op.get_type_name()
    if kind in OUTPUT_MOVERS:
        inputs = [op.input(0).get_source_output().get_node()] if op.get_input_size() else []
    elif kind in SQUARE_SUMS or _scaling(op):
        inputs = [i.get_source_output().get_node() for i in op.inputs()]
    else:
        return []
    below = [n for node in inputs if node.get_type_name() != "Constant" for n in _square_chain(node, seen)]
    return [*below, name] if below else []


def _scaling(op: Any) -> bool:
    """``Multiply`` by a constant, or ``Divide`` by one."""
    constant = [i.get_source_output().get_node().get_type_name() == "Constant" for i in op.inputs()]
    return (op.get_type_name() == "Multiply" and any(constant)) or (op.get_type_name() == "Divide" and constant[1:] == [True])


VECTOR_READERS = frozenset({"Gather", "MatMul"})
"""Ops that ``nncf.compress_weights`` takes for weighted when a float constant feeds them (a ``Gather`` from one is
nncf's embedding, whatever the constant's rank)."""


def vector_weight_ops(model: Any) -> list[str]:
    """The ops ``nncf.compress_weights`` must leave alone: a :data:`VECTOR_READERS` op reading a float constant
    (through a ``Convert``) of fewer than two dims. nncf compresses such a vector per element (an int8 value, a scale
    and a zero point each: nothing saved); from 10,000 elements on it does so with an OpenVINO model whose
    ``ReduceMin`` over no axes gets float64 axes, which OpenVINO refuses (``axes_et.is_integral_number()``).
    USE multilingual v3 dequantises its uint8 embedding table with a scale and an offset per row, each a
    ``Gather`` from a 128k vector: ``--int8-mode dynamic`` failed (exit 5). A vector holds next to nothing to
    compress (the table itself stays uint8)."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in VECTOR_READERS and any(_float_vector(i.get_source_output().get_node()) for i in op.inputs()):
            found.append(op.get_friendly_name())
    return found


def _float_vector(node: Any) -> bool:
    if node.get_type_name() == "Convert" and node.get_input_size():
        node = node.input(0).get_source_output().get_node()
    shape = node.get_output_partial_shape(0) if node.get_output_size() else None
    return (node.get_type_name() == "Constant" and node.get_output_element_type(0).is_real()
            and shape is not None and shape.rank.is_static and shape.rank.get_length() < 2)
