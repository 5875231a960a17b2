"""Folding the ``If`` nodes that fixed input dims decide (:mod:`edgec.targets._openvino_ifs`)."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.core.types import TensorSpec
from edgec.targets._openvino_ifs import fixed_dims, fold_ifs

onnx = pytest.importorskip("onnx", reason="pip install 'edgec[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def squeeze_if(channels: int | str) -> object:
    """``If(Shape(x)[1] == 1, Squeeze(x, [1]), Identity(x))``: torch's export of ``x.squeeze(1)``."""
    from onnx import TensorProto, helper, numpy_helper

    then = helper.make_graph([helper.make_node("Squeeze", ["x", "axis"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["d"], axis=0),
             helper.make_node("Equal", ["d", "one"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "squeeze_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "t"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(1, np.int64), "one"),
                               numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_squeeze_if_on_a_fixed_dim_becomes_its_branch_while_other_dims_stay_dynamic() -> None:
    model = squeeze_if(1)
    assert fold_ifs(model, {"x": [None, 1, None]}) == 1
    assert "If" not in [n.op_type for n in model.graph.node]
    x = np.arange(10, dtype=np.float32).reshape(2, 1, 5)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, x[:, 0, :])


def test_squeeze_if_on_a_dynamic_dim_is_left_alone() -> None:
    model = squeeze_if("c")
    assert fold_ifs(model, {"x": [None, None, None]}) == 0
    assert "If" in [n.op_type for n in model.graph.node]


def test_fixed_dims_are_the_int_dims_of_the_spec() -> None:
    assert fixed_dims(TensorSpec("x", ("n", 4, None, 576), "float32")) == [None, 4, None, 576]
