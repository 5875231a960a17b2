"""``DynamicQuantizeLSTM`` in a graph with an ``If`` that reads the LSTM's output from outside its branch (silero-vad
16k after folding its sample rate): onnxruntime's quantizer orders nodes by their explicit inputs only, so it
put the ``If`` before the LSTM and its model failed ONNX's checker (exit 5 on the onnx target's INT8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgec.compiler.passes._recurrent_int8 import dynamic_lstm
from edgec.frameworks import onnx_utils
from tests.support.recurrent import make_recurrent_onnx


def lstm_then_if(path: Path) -> Path:
    """``make_recurrent_onnx``'s LSTM, its ``y_h`` read by an ``If`` on a bool input through the branches only."""
    model = onnx.load(str(make_recurrent_onnx(path, "LSTM")))
    then = helper.make_graph([helper.make_node("Identity", ["y_h"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 2, 5])])
    other = helper.make_graph([helper.make_node("Neg", ["y_h"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 2, 5])])
    model.graph.node.append(helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=other, name="/pick/If"))
    model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 5]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_quantized_lstm_read_by_an_if_body_keeps_the_graph_sorted(tmp_path: Path) -> None:
    source = lstm_then_if(tmp_path / "m.onnx")
    assert dynamic_lstm(source, tmp_path / "q.onnx", ()) == ["/rec/LSTM"]
    model = onnx_utils.load_model(tmp_path / "q.onnx")  # ONNX's checker: nodes in order
    assert [n.op_type for n in model.graph.node] == ["DynamicQuantizeLSTM", "If"]
    import onnxruntime as ort

    feed = {"x": np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32),
            "h0": np.zeros((1, 2, 5), np.float32), "c0": np.zeros((1, 2, 5), np.float32), "flag": np.array(True)}
    ref = ort.InferenceSession(str(source)).run(["z"], feed)[0]
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(["z"], feed)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
