"""Full-integer INT8 on a ceil-mode max pool (MTCNN, GoogLeNet, SqueezeNet): onnx2tf pads it with the float
minimum, which INT8 calibration took into the padded tensor's range (MTCNN ONet: scale 1.3e36, XNNPACK
refused to prepare the model). The ``edge_pad_pools`` pass pads with edge copies; the bundle runs and keeps
FP32's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.core.bundle import load_manifest  # noqa: E402
from tests.support.tflite import int8_beside_onnxruntime  # noqa: E402


def make_ceil_pool_net(path: Path) -> Path:
    """Conv(3->8, 3x3) -> LeakyRelu -> MaxPool(3, 2, ceil_mode) -> Conv(8->4, 3x3) on 1x3x22x22 (the pool's last
    window hangs over the edge: 20 -> 10 with ceil mode, 9 without)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.2, name="act1"),
             helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, name="pool1"),
             helper.make_node("Conv", ["p1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "ceil_pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 22, 22])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_int8_ceil_mode_pool_runs_on_xnnpack_and_keeps_fp32_outputs(tmp_path: Path) -> None:
    src = make_ceil_pool_net(tmp_path / "pool.onnx")
    bundle, want, got = int8_beside_onnxruntime(src, tmp_path, (1, 3, 22, 22))  # LiteRT runs it with XNNPACK
    passes = {p["name"]: p.get("stats", {}) for p in load_manifest(bundle).passes}
    assert passes["edge_pad_pools"] == {"rewritten": 1}
    got = np.transpose(got, (0, 3, 1, 2))
    assert got.shape == want.shape
    a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99
