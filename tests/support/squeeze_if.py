"""A graph where OpenVINO needs fixed input sizes and ONNX shape inference cannot decide its ``If``.

``x [1, t]`` is padded by pads computed from constants through ``ConstantOfShape``/``Transpose`` (ONNX shape
inference gives the padded length up, as on silero-vad's STFT framing), unsqueezed to ``[1, 1, t]``, and
squeezed on its last dim as torch exports ``squeeze(2)`` on a dim it cannot prove is 1:
``If(Shape(r)[2] == 1, Squeeze(r, [2]), Identity(r))``, then a ``Conv`` (3 channels, kernel 3). OpenVINO gives
the ``If`` an output of unknown rank while ``t`` is dynamic and refuses the Conv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def squeeze_if_model(batch_condition: bool = False) -> object:
    """The model (an ``onnx.ModelProto``); ``batch_condition``: decide the ``If`` on ``ReduceSum(x) > 0`` (a
    value, not a shape) instead."""
    from onnx import TensorProto, helper, numpy_helper

    then = helper.make_graph([helper.make_node("Squeeze", ["r", "axis2"], ["t_out"])], "then", [],
                             [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["r"], ["e_out"])], "else", [],
                              [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    zeros = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("ConstantOfShape", ["four"], ["z"], value=zeros),
             helper.make_node("Reshape", ["z", "two_two"], ["z2"]),
             helper.make_node("Transpose", ["z2"], ["z2t"], perm=[1, 0]),
             helper.make_node("Reshape", ["z2t", "four"], ["pads"]),
             helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Unsqueeze", ["p", "axis1"], ["r"])]
    if batch_condition:
        nodes += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                  helper.make_node("Greater", ["total", "fzero"], ["c"])]
    else:
        nodes += [helper.make_node("Shape", ["r"], ["s"]), helper.make_node("Gather", ["s", "two"], ["d"], axis=0),
                  helper.make_node("Equal", ["d", "one"], ["c"])]
    rng = np.random.default_rng(0)
    nodes += [helper.make_node("If", ["c"], ["i"], then_branch=then, else_branch=other),
              helper.make_node("Conv", ["i", "w", "b"], ["y"], pads=[1, 1], name="conv")]
    inits = [numpy_helper.from_array(np.array([4], np.int64), "four"),
             numpy_helper.from_array(np.array([2, 2], np.int64), "two_two"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array(2, np.int64), "two"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(0.0, np.float32), "fzero"),
             numpy_helper.from_array(rng.standard_normal((3, 1, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "squeeze_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_squeeze_if(path: Path) -> Path:
    import onnx

    onnx.save(squeeze_if_model(), str(path))
    return path
