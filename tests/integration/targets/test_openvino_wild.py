"""The openvino target on graph classes of real models from the wild (issue 18): torch's shape-checking
``If`` nodes (silero-vad) and SiLU networks quantized by nncf (YOLOv8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.models import make_calib

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def make_rank_if_onnx(path: Path) -> Path:
    """``If(rank(x) == 2, Transpose(x, [1, 0]), Identity(x))`` before a Conv, as torch exports a rank check:
    the rank is 3 at every size, so the Transpose branch never runs, but OpenVINO converts it and refuses it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    then = helper.make_graph([helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["r"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Size", ["s"], ["n"]), helper.make_node("Equal", ["n", "two"], ["c"]),
             helper.make_node("If", ["c"], ["i"], then_branch=then, else_branch=other),
             helper.make_node("Conv", ["i", "w", "b"], ["y"], pads=[1, 1], name="conv")]
    graph = helper.make_graph(
        nodes, "rank_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 6])],
        [numpy_helper.from_array(np.array(2, np.int64), "two"),
         numpy_helper.from_array(rng.standard_normal((3, 4, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def make_silu_onnx(path: Path) -> Path:
    """Two convolutions, each followed by SiLU as ``x * Sigmoid(x)`` (YOLOv8's activation as exported)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.4, "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2")]
    nodes = []
    for i, (src, w) in enumerate((("x", "w1"), ("a0", "w2"))):
        nodes += [helper.make_node("Conv", [src, w], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Sigmoid", [f"c{i}"], [f"s{i}"], name=f"sigmoid{i}"),
                  helper.make_node("Mul", [f"c{i}", f"s{i}"], [f"a{i}"], name=f"silu{i}")]
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("a1", TensorProto.FLOAT, ["batch", 8, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_if_decided_by_rank_is_folded_and_bundles_match_onnxruntime(tmp_path: Path) -> None:
    src = make_rank_if_onnx(tmp_path / "rank_if.onnx")
    calib = make_calib(tmp_path / "calib.npz", shape=(4, 6))
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((2, 4, 6)).astype(np.float32)
    expected = reference.run(None, {"x": x})[0]
    for precision, atol in (("fp32", 1e-4), ("int8", 0.1 * float(np.abs(expected).max()))):
        bundle = build(BuildConfig(source=str(src), out=tmp_path / precision, target="openvino", precision=precision,
                                   calib=calib)).bundle_dir
        assert _manifest(bundle)["target_details"]["folded_ifs"] == 1
        compiled = ov.Core().compile_model(str(bundle / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled({"x": x})[0]
        assert got.shape == expected.shape == (2, 3, 6)
        np.testing.assert_allclose(got, expected, atol=atol)


def test_openvino_alone_refuses_the_rank_if_graph(tmp_path: Path) -> None:
    """The class itself: OpenVINO alone refuses the graph (what the fold is for)."""
    src = make_rank_if_onnx(tmp_path / "rank_if.onnx")
    with pytest.raises(Exception, match="Transpose"):
        ov.convert_model(str(src))


def test_silu_network_gets_asymmetric_activation_quantizers(tmp_path: Path) -> None:
    src = make_silu_onnx(tmp_path / "silu.onnx")
    calib = make_calib(tmp_path / "calib.npz")
    bundle = build(BuildConfig(source=str(src), out=tmp_path / "out", target="openvino", precision="int8",
                               calib=calib)).bundle_dir
    assert _manifest(bundle)["target_details"]["quantization"]["preset"] == "mixed"
    model = ov.Core().read_model(str(bundle / "model.xml"))
    asymmetric = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input(0).get_source_output().get_node().get_type_name() == "Constant":
            continue
        low, high = (float(np.min(op.input(i).get_source_output().get_node().get_data())) for i in (1, 2))
        asymmetric += abs(low + high) > 0.05 * abs(high)  # a SiLU output: from -0.28 up, not symmetric about 0
    assert asymmetric >= 1


def make_fused_output_onnx(path: Path) -> Path:
    """``Unsqueeze(ReduceMean(keepdims=0))`` at the output (silero-vad's last ops): the CPU plugin fuses them
    and the compiled output takes the ReduceMean's tensor name too, which ``get_any_name()`` may return."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("ReduceMean", ["s"], ["m"], axes=[2], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "axis"], ["y"])]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1])],
                              [numpy_helper.from_array(np.array([2], np.int64), "axis")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_runner_names_outputs_as_the_model_when_compiling_merges_names(tmp_path: Path) -> None:
    from edgec.runtime_shims.openvino import OpenVinoRunner

    src = make_fused_output_onnx(tmp_path / "fused.onnx")
    bundle = build(BuildConfig(source=str(src), out=tmp_path / "out", target="openvino")).bundle_dir
    x = np.random.default_rng(3).standard_normal((1, 4, 3)).astype(np.float32)
    with OpenVinoRunner(str(bundle / "model.xml")) as runner:
        got = runner.infer({"x": x})
    assert list(got) == ["y"]
    np.testing.assert_allclose(got["y"], (1 / (1 + np.exp(-x))).mean(axis=2, keepdims=True), rtol=1e-5)
