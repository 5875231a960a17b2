"""Full-integer INT8 on the tflite target keeps a detector's class sigmoid float, not only the output ``Concat``.

A SiLU detector (YOLOv5/v8) ends in ``Concat(boxes, Sigmoid(class logits))``. TFLite's int8 ``LOGISTIC`` has a
fixed output scale, 1/256 from 0, so every class probability became a multiple of 0.0039 even with the ``Concat``
kept float: YOLOv8n's best anchors on photos without its classes score 0.001-0.03 and kept 0.856 of FP32's
detections. The head here (SiLU trunk, class logits around -5) on the code before: every class probability on the
1/256 grid (none off it); now none on it, median relative error 0.02, the ``LOGISTIC`` float and in
``kept_float_outputs``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make_silu_detector(path: Path) -> Path:
    """``x`` (1, 3, 8, 8) -> Conv -> SiLU (``x * sigmoid(x)``) -> a box head (``320 * sigmoid``, 4 rows) and a
    class head (``sigmoid`` of logits near -5, 2 rows), joined in one output ``y`` (1, 6, 64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "wb"),
             numpy_helper.from_array((0.2 * rng.standard_normal((2, 8, 1, 1))).astype(np.float32), "wc"),
             numpy_helper.from_array(np.full(2, -5.0, np.float32), "bc"),
             numpy_helper.from_array(np.array([1, 4, 64], np.int64), "box_rows"),
             numpy_helper.from_array(np.array([1, 2, 64], np.int64), "class_rows"),
             numpy_helper.from_array(np.array(320.0, np.float32), "size")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Sigmoid", ["c"], ["g"], name="stem_gate"),
             helper.make_node("Mul", ["c", "g"], ["f"], name="stem_silu"),
             helper.make_node("Conv", ["f", "wb"], ["cb"], name="box_conv"),
             helper.make_node("Reshape", ["cb", "box_rows"], ["b"], name="box_flatten"),
             helper.make_node("Sigmoid", ["b"], ["bs"], name="box_sigmoid"),
             helper.make_node("Mul", ["bs", "size"], ["boxes"], name="box_scale"),
             helper.make_node("Conv", ["f", "wc", "bc"], ["cc"], name="class_conv"),
             helper.make_node("Reshape", ["cc", "class_rows"], ["s"], name="class_flatten"),
             helper.make_node("Sigmoid", ["s"], ["scores"], name="class_sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1, name="join")]
    graph = helper.make_graph(nodes, "silu_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_int8_keeps_low_class_probabilities_off_the_logistic_grid(tmp_path: Path) -> None:
    import onnxruntime as ort

    src = make_silu_detector(tmp_path / "head.onnx")
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 1, 3, 8, 8)).astype(np.float32))
    bundle = build(BuildConfig(source=str(src), target="tflite", precision="int8", calib=calib,
                               out=tmp_path / "out", simplify=False)).bundle_dir
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0][:, 4:]
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        got = runner.infer({"x": np.transpose(x, (0, 2, 3, 1))})["y"]
    got = (got if got.shape[1] == 6 else np.transpose(got, (0, 2, 1)))[:, 4:]
    assert want.max() < 0.2  # low probabilities: a 1/256 grid holds them in a few steps
    off_grid = np.abs(got * 256 - np.round(got * 256)) > 1e-3
    assert off_grid.mean() > 0.9  # not multiples of 1/256
    assert float(np.median(np.abs(got - want) / want)) < 0.1
    kept = load_manifest(bundle).target_details["kept_float_outputs"]
    assert [k["output"] for k in kept] == ["y"]
    assert len(kept[0]["nodes"]) == 6  # the join, its moves and the class LOGISTIC (before: 5)
    assert _float_logistics(bundle / "model.tflite") == 1


def _float_logistics(model: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    return sum(1 for op in interpreter._get_ops_details()
               if op["op_name"] == "LOGISTIC" and dtypes[op["outputs"][0]] == np.float32)
