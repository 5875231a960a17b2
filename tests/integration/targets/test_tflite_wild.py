"""The tflite target on what real models from the wild carry, each on a small graph made to have it: node
names TensorFlow refuses (paddle2onnx's ``Softmax@0``, the PP-OCR classifier), a detector output that joins
ranges one INT8 scale cannot hold (YOLOv8n) and a Slice over two axes of a Conv1d output (Silero VAD's STFT
after onnxsim). Each failed on the code before its fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402
from tests.support.models import make_detector_head, make_onnx  # noqa: E402
from tests.support.tflite import int8_beside_onnxruntime  # noqa: E402


def test_paddle_style_node_names_convert_and_match_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort
    from onnx import helper

    nodes = [helper.make_node("Mul", ["x", "half"], ["h"], name="Mul@0"),
             helper.make_node("Softmax", ["h"], ["y"], axis=1, name="Softmax@0")]  # as paddle2onnx names them
    src = make_onnx(tmp_path / "paddle.onnx", nodes)
    bundle = build(BuildConfig(source=str(src), target="tflite", out=tmp_path / "out", simplify=False)).bundle_dir
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        got = runner.infer({"x": x})["y"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert load_manifest(bundle).parity["outputs"]["y"]["cosine"] > 0.99999


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_int8_keeps_an_output_concat_of_boxes_and_scores_in_float(tmp_path: Path) -> None:
    src = make_detector_head(tmp_path / "head.onnx")
    bundle, want, got = int8_beside_onnxruntime(src, tmp_path, (1, 3, 8, 8))
    got = got if got.shape == want.shape else np.transpose(got, (0, 2, 1))
    assert _cosine(got[:, 4:], want[:, 4:]) > 0.99  # the class probabilities keep their own scale
    assert np.abs(got[:, 4:] - want[:, 4:]).max() < 0.05
    kept = load_manifest(bundle).target_details["kept_float_outputs"]
    assert [k["output"] for k in kept] == ["y"] and len(kept[0]["input_ranges"]) == 2
    assert max(kept[0]["input_ranges"]) > 100 * min(kept[0]["input_ranges"])


def make_stft_magnitude(path: Path) -> Path:
    """Silero VAD's STFT front end after onnxsim: ``Conv`` (a Fourier basis) on ``x`` (2, 576), then the real and
    the imaginary part each taken by one ``Slice`` over two axes (channels and time), squared and added."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def ints(name: str, values: list[int]) -> Any:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    end = np.iinfo(np.int64).max
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((258, 1, 256)).astype(np.float32) * 0.05,
                                     "basis"),
             ints("pads", [0, 128, 0, 128]), ints("channel_axis", [1]), ints("re_starts", [0, 1]),
             ints("re_ends", [129, end]), ints("im_starts", [129, 1]), ints("im_ends", [end, end]),
             ints("axes", [1, 2]), ints("steps", [1, 1]), numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect", name="pad"),
             helper.make_node("Unsqueeze", ["p", "channel_axis"], ["u"], name="unsqueeze"),
             helper.make_node("Conv", ["u", "basis"], ["f"], kernel_shape=[256], strides=[128], name="stft"),
             helper.make_node("Slice", ["f", "re_starts", "re_ends", "axes", "steps"], ["re"], name="real"),
             helper.make_node("Slice", ["f", "im_starts", "im_ends", "axes", "steps"], ["im"], name="imag"),
             helper.make_node("Pow", ["re", "two"], ["re2"], name="real_squared"),
             helper.make_node("Pow", ["im", "two"], ["im2"], name="imag_squared"),
             helper.make_node("Add", ["re2", "im2"], ["y"], name="power")]
    graph = helper.make_graph(nodes, "stft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 576])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 129, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))  # as onnxsim leaves it
    return path


def test_slice_over_two_axes_of_a_conv1d_output_converts_and_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    src = make_stft_magnitude(tmp_path / "stft.onnx")
    bundle = build(BuildConfig(source=str(src), target="tflite", out=tmp_path / "out", simplify=False)).bundle_dir
    m = load_manifest(bundle)
    assert [p["stats"] for p in m.passes if p["name"] == "split_slice"] == [{"split": 2}]
    x = np.random.default_rng(5).standard_normal((2, 576)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        got = runner.infer({"x": x})["y"]
    got = got if got.shape == want.shape else np.transpose(got, (0, 2, 1))  # the bundle may keep it channels-last
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
