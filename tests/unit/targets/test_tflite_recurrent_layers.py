"""Which layers the tflite target's ``recurrent`` option keeps float: those of the nodes the ``unroll_rnn`` pass
wrote for each recurrent node (named ``<node>/...``), and nothing in a model whose own nodes are named like steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edgec.compiler.passes.unroll_rnn import unroll  # noqa: E402
from edgec.targets._tflite_onnx import unrolled_recurrent_layers  # noqa: E402
from tests.support.recurrent import make_recurrent_onnx  # noqa: E402


def test_unrolled_lstm_layers_are_found_by_the_node_the_pass_named_them_after(tmp_path: Path) -> None:
    model = onnx.load(str(make_recurrent_onnx(tmp_path / "lstm.onnx", "LSTM", direction="bidirectional")))
    unroll(model)
    onnx.save(model, str(tmp_path / "unrolled.onnx"))
    found = unrolled_recurrent_layers(tmp_path / "unrolled.onnx")
    assert found.nodes == ("/rec/LSTM",) and found.prefixes == ("rec_LSTM",)
    assert {"rec_LSTM_x_rows", "rec_LSTM_forward_t0_h", "rec_LSTM_reverse_t3_h"} <= found.layers
    assert "rec_LSTM_forward_t0_h" in found and "rec_LSTM_named_otherwise" in found and "decoder_conv" not in found


def test_a_model_whose_own_nodes_look_like_steps_keeps_nothing_float(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/blocks/t0/act"),
             helper.make_node("Reshape", ["a", "shape"], ["y"], name="/blocks/rows")]
    graph = helper.make_graph(nodes, "steps", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
                              [onnx.numpy_helper.from_array(np.array([6], np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    assert unrolled_recurrent_layers(tmp_path / "m.onnx").nodes == ()
