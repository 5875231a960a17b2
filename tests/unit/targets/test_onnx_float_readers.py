"""Which nodes default static INT8 on onnx leaves float because only float ops read their outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.targets.onnx import float_readers_only

onnx = pytest.importorskip("onnx")
QUANTIZED = {"Conv", "Relu", "MaxPool", "Squeeze", "Sigmoid"}


def _graph() -> object:
    """Conv -> relu_pool -> MaxPool -> Conv; then relu_if -> (Shape, Squeeze -> sigmoid_out -> graph output),
    and relu_body, read only inside an If's branches."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    branch = helper.make_graph([helper.make_node("Identity", ["r3"], ["b"], name="inner")], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu_pool"),
             helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[1, 1], name="pool"),
             helper.make_node("Conv", ["p", "w"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu_if"),
             helper.make_node("Shape", ["r2"], ["s"], name="shape"),
             helper.make_node("Relu", ["c2"], ["r3"], name="relu_body"),
             helper.make_node("If", ["cond"], ["i"], then_branch=branch, else_branch=branch, name="if"),
             helper.make_node("Squeeze", ["r2"], ["q"], name="squeeze"),
             helper.make_node("Sigmoid", ["q"], ["y"], name="sigmoid_out")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1]),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("s", "i", "y")]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, [w]))


def test_activations_read_only_by_an_if_body_or_as_an_output_stay_float_those_a_quantized_op_reads_do_not() -> None:
    excluded = float_readers_only(_graph(), QUANTIZED)
    assert "relu_pool" not in excluded  # MaxPool (quantized) reads it: the fused Conv+Relu path stays int8
    assert "relu_if" not in excluded  # the quantized Squeeze also reads it
    assert "sigmoid_out" in excluded  # only the graph output reads it
    assert "relu_body" in excluded  # only the If's branches read it


def test_compute_ops_are_never_listed_even_when_only_float_ops_read_them() -> None:
    assert "conv1" not in float_readers_only(_graph(), QUANTIZED - {"Relu", "MaxPool"})
    assert "relu_if" in float_readers_only(_graph(), QUANTIZED - {"Squeeze"})  # Shape and a float Squeeze read it
