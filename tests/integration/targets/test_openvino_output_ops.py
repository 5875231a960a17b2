"""openvino static INT8 keeps the op producing a model output float (issue 18): nncf quantized the input of
silero-vad 16k's final ``ReduceMean`` to the range calibration saw, clipping the speech probability (0.69 of
FP32's decisions; 0.97 with that op float)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.models import save_graph

pytest.importorskip("nncf")


def make_probability_mean(path: Path) -> Path:
    """``ReduceMean(Squeeze(Sigmoid(Conv(x))))`` over 16 frames: a probability averaged at the output, and a
    ``MatMul`` head beside it whose output stays INT8."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["p"], name="prob"),
             helper.make_node("Squeeze", ["p", "axes"], ["s"], name="squeeze"),
             helper.make_node("ReduceMean", ["s"], ["y"], axes=[1], keepdims=0, name="mean"),
             helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fc"], ["z"], name="head")]
    graph = helper.make_graph(
        nodes, "probability_mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(rng.standard_normal((1, 4, 1)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "fc")])
    return save_graph(graph, path, opset=13)


def fake_quantized_inputs(model_xml: Path) -> set[str]:
    """Friendly names of the ops reading a FakeQuantize output (through Squeeze and Reshape; an op that
    produces a model output takes the output's name: ``y`` is the ReduceMean, ``z`` the MatMul)."""
    import openvino as ov

    readers = set()
    for op in ov.Core().read_model(str(model_xml)).get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            pending = [t.get_node() for t in op.output(0).get_target_inputs()]
            while pending:
                node = pending.pop()
                readers.add(node.get_friendly_name())
                if node.get_type_name() in ("Squeeze", "Reshape"):
                    pending += [t.get_node() for t in node.output(0).get_target_inputs()]
    return readers


@pytest.mark.parametrize("outputs", ["float", "int8"])
def test_the_op_producing_an_output_stays_float_unless_asked(tmp_path: Path, outputs: str) -> None:
    src = make_probability_mean(tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(1).standard_normal((16, 1, 4, 16)).astype(np.float32))
    result = build(BuildConfig(source=str(src), target="openvino", precision="int8", calib=tmp_path / "c.npz",
                               out=tmp_path / "out", target_options=(("outputs", outputs),)))
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    kept = manifest["target_details"]["quantization"]["kept_float_outputs"]
    readers = fake_quantized_inputs(result.bundle_dir / "model.xml")
    assert "z" in readers  # the MatMul head stays INT8 either way
    if outputs == "float":
        assert kept == ["y"] and "y" not in readers
    else:
        assert kept == [] and "y" in readers
