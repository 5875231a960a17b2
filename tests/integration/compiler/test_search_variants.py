"""``--max-drop`` tries the target's whole-model variants (onnx: its ``quantize_ops`` lists) before keeping layers
in float (issue 19).

The model: a conv's ReLU'd first channel is scaled 300x by a ``Mul`` (a gate; the ReLU keeps the clean-up
passes from folding it into the conv's weights) and feeds a ``Sigmoid``. onnx's default
list (and onnxruntime's) quantizes the Sigmoid, so its input gets one per-tensor range that the 300x channel
stretches: the other channels fall into a step or two and the Sigmoid reads them as 0.5. ``quantize_ops=compute``
leaves the ReLU, the Mul and the Sigmoid float: the next conv reads the Sigmoid's output, in [0, 1], in INT8 with a fine
step, so every layer stays quantized and the model meets the budget. No calibration method helps (the outlier
is a whole channel, not a tail).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.errors import AccuracyGateError
from tests.support.models import save_graph

CHANNELS = 8
SIDE = 8


def make_sigmoid_gate(folder: Path) -> dict[str, Path]:
    """Conv - Relu - Mul (channel 0 by 300) - Sigmoid - Conv - Relu - Flatten - Gemm on 3x8x8, and 64 calibration samples."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((CHANNELS, 3, 3, 3)) / np.sqrt(27) * 2).astype(np.float32)
    gate = np.ones((1, CHANNELS, 1, 1), np.float32)
    gate[0, 0] = 300.0
    w2 = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) / np.sqrt(CHANNELS * 9) * 4).astype(np.float32)
    w2[:, 0] = 0.0  # the saturated channel carries nothing
    fc = (rng.standard_normal((CHANNELS * SIDE * SIDE, 10)) / 8).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "conv1.weight"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "conv1.bias"),
             numpy_helper.from_array(w2, "conv2.weight"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "conv2.bias"),
             numpy_helper.from_array(fc, "fc.weight"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
             numpy_helper.from_array(gate, "gate")]
    nodes = [helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Mul", ["r1", "gate"], ["m1"], name="gate1"),
             helper.make_node("Sigmoid", ["m1"], ["s1"], name="sigmoid1"),
             helper.make_node("Conv", ["s1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "sigmoid_gate",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    calib = folder / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 3, SIDE, SIDE)).astype(np.float32))
    return {"model": save_graph(graph, folder / "sigmoid_gate.onnx"), "calib": calib}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_sigmoid_gate(tmp_path_factory.mktemp("gate"))


def _build(gate: dict[str, Path], out: Path, **kw):
    return build(BuildConfig(source=str(gate["model"]), precision="int8", calib=gate["calib"], out=out, max_drop=0.02,
                             metric="cosine", allow_degraded=True, **kw))


def test_the_compute_op_list_meets_the_budget_with_every_layer_quantized(gate, tmp_path: Path) -> None:
    outcome = _build(gate, tmp_path)
    mp = outcome.manifest.model_extra["mixed_precision"]
    tried = mp["variant"]["tried"]
    assert mp["variant"]["chosen"] == "quantize_ops=compute" and mp["float_layers"] == [] and mp["float_nodes"] == []
    assert 1 - tried["quantize_ops=default"] > 0.02 >= 1 - tried["quantize_ops=compute"]
    assert 1 - tried["quantize_ops=onnxruntime"] > 0.02 and all(1 - v > 0.02 for v in mp["calibration"]["tried"].values())
    # the methods on the build's op list first, then the other lists with the method chosen; then it stops
    assert [(s["calibration"], s["variant"]) for s in mp["steps"]] == [
        ("minmax", "quantize_ops=default"), ("percentile", "quantize_ops=default"),
        ("minmax", "quantize_ops=onnxruntime"), ("minmax", "quantize_ops=compute")]
    assert mp["builds"] == 4
    assert outcome.manifest.passes[-1]["options"]["op_types"] == ["Conv", "ConvTranspose", "Gemm", "MatMul"]
    model = onnx.load(str(outcome.bundle_dir / "model.onnx"))
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert "m1" not in quantized and "s1" in quantized  # the Sigmoid reads float; conv2 reads its output in INT8
    assert {n.input[0].split(".")[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]} \
        == {"conv1", "conv2", "fc"}  # every layer INT8


def test_an_op_list_the_user_chose_is_kept(gate, tmp_path: Path) -> None:
    with pytest.raises(AccuracyGateError) as caught:
        _build(gate, tmp_path, target_options=(("quantize_ops", "default"),), max_float_layers=0)
    assert "built with" not in caught.value.message and "0 layers in float" in caught.value.message
