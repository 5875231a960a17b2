"""The nncf preset the openvino target picks for static INT8 when the ``preset`` option is ``auto``."""

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
