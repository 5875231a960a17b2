"""Layers of an OpenVINO model whose ops carry the prefix of an inlined ``If`` branch (silero-vad 16k: every op
named ``If_0_then_branch__Inline_0__/...``, so the whole model was one layer and ``--max-drop`` "kept one layer
in float" by keeping all of it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.models import save_graph

PREFIX = "If_0_then_branch__Inline_0__"


def make_inlined(path: Path) -> Path:
    """``Sigmoid(Relu(x @ w) * 2)``, each node named as an inlined branch's node."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name=f"{PREFIX}/fc/MatMul"),
             helper.make_node("Relu", ["m"], ["r"], name=f"{PREFIX}/act/Relu"),
             helper.make_node("Mul", ["r", "two"], ["s"], name=f"{PREFIX}/scale/Mul"),
             helper.make_node("Sigmoid", ["s"], ["y"], name=f"{PREFIX}/head/Sigmoid")]
    graph = helper.make_graph(nodes, "inlined", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.ones((4, 4), np.float32), "w"),
                               numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return save_graph(graph, path)


def test_ops_of_an_inlined_branch_are_layers_of_their_own(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from edgec.targets.openvino import op_layers

    layers = op_layers(ov.convert_model(str(make_inlined(tmp_path / "m.onnx"))))
    ops = [f"{PREFIX}/fc/MatMul", f"{PREFIX}/act/Relu", f"{PREFIX}/scale/Mul"]
    assert [layers[op] for op in ops] == ops  # not all PREFIX
    assert PREFIX not in layers.values()


def test_integer_constants_name_no_layer(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from edgec.targets.openvino import op_layers

    nodes = [helper.make_node("Slice", ["x", "/stft/Slice_output_0_starts", "ends", "axes"], ["s"], name="/stft/Slice"),
             helper.make_node("Relu", ["s"], ["y"], name="/stft/Relu")]
    graph = helper.make_graph(nodes, "slices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array([0, 2], np.int64), "/stft/Slice_output_0_starts"),
                               numpy_helper.from_array(np.array([1, 6], np.int64), "ends"),
                               numpy_helper.from_array(np.array([0, 1], np.int64), "axes")])
    layers = op_layers(ov.convert_model(str(save_graph(graph, tmp_path / "s.onnx"))))
    assert layers["/stft/Slice"] == "/stft/Slice"  # not named by its integer starts
