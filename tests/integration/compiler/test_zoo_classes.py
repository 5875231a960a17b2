"""Classes of failure the zoo of real pretrained models (``python -m edgec.benchmarks.zoo_matrix``) found, each
on a tiny graph built here with the property that broke the real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.types import TensorSpec
from edgec.frameworks import onnx_utils
from tests.support.models import save_graph


def _build(src: Path | str, out: Path, **kw: Any) -> Path:
    return build(BuildConfig(source=str(src), out=out, cache=False, **kw)).bundle_dir


def _manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def make_minus_one_dims(path: Path) -> Path:
    """paddle2onnx's interface: batch written as ``dim_value: -1``, H and W both as ``dim_param: "?"``; opset 11."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((4, 2)) * 0.3).astype(np.float32), "fc")
    nodes = [helper.make_node("Constant", [], ["wc"], value=w), helper.make_node("Constant", [], ["fcc"], value=fc),
             helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "fcc"], ["m"]), helper.make_node("Softmax", ["m"], ["prob"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    prob = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [-1, 2])
    model = helper.make_model(helper.make_graph(nodes, "paddle", [x], [prob]), opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def test_a_minus_one_dim_value_is_a_dynamic_dim_of_the_spec(tmp_path: Path) -> None:
    model = onnx.load(str(make_minus_one_dims(tmp_path / "m.onnx")))
    spec = onnx_utils.value_info_spec(model.graph.input[0])
    assert spec.shape[0] is None and spec.shape[1] == 3 and not spec.is_static
    assert spec.accepts_shape((1, 3, 48, 192))


def test_input_fixes_the_dims_of_a_model_that_writes_minus_one_for_dynamic(tmp_path: Path) -> None:
    src = make_minus_one_dims(tmp_path / "cls.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((8, 1, 3, 12, 20)).astype(np.float32))
    bundle = _build(src, tmp_path / "out", precision="int8", calib=calib, input_shapes={"x": (1, 3, 12, 20)})
    m = _manifest(bundle)
    assert TensorSpec.from_json(m["inputs"][0]).accepts_shape((1, 3, 12, 20))
    assert m["passes"][0]["name"] == "upgrade_opset"
    assert m["parity"]["outputs"]["prob"]["cosine"] > 0.99


def make_row_bias_gemms(path: Path) -> Path:
    """Two Gemms whose biases are ``(1, N)`` rows, as tf2onnx writes Dense layers (magika's classifier head)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.4).astype(np.float32), name)
             for name, shape in (("w1", (16, 8)), ("b1", (1, 16)), ("w2", (3, 16)), ("b2", (1, 3)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], inits)
    return save_graph(graph, path)


def test_static_int8_takes_gemm_biases_written_as_rows(tmp_path: Path) -> None:
    src = make_row_bias_gemms(tmp_path / "dense.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 1, 8)).astype(np.float32))
    for target in ("tensorrt", "onnx"):
        bundle = _build(src, tmp_path / target, target=target, precision="int8", int8_mode="static", calib=calib)
        m = _manifest(bundle)
        step = next(p for p in m["passes"] if p["name"] == "quantize_static")
        assert step["stats"]["gemm_biases_flattened"] == 2
        assert m["parity"]["outputs"]["logits"]["cosine"] > 0.99


def test_input_on_an_onnx_source_for_a_target_without_onnx_route_names_the_source_format(tmp_path: Path) -> None:
    src = make_minus_one_dims(tmp_path / "cls.onnx")
    with pytest.raises(errors.UnsupportedError) as caught:
        _build(src, tmp_path / "out", target="coreml", input_shapes={"x": (1, 3, 12, 20)})
    assert "cannot take a onnx model" in str(caught.value) and "--input" not in str(caught.value)


def make_branch_weights(path: Path) -> Path:
    """silero-vad's shape: the whole network inside an ``If`` on ``sr == 16000``, weights as branch Constants."""
    rng = np.random.default_rng(0)

    def branch(name: str) -> Any:
        w = numpy_helper.from_array((rng.standard_normal((64, 16)) * 0.3).astype(np.float32), f"{name}_w")
        nodes = [helper.make_node("Constant", [], [f"{name}_wc"], value=w),
                 helper.make_node("MatMul", ["audio", f"{name}_wc"], [f"{name}_h"]),
                 helper.make_node("Tanh", [f"{name}_h"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 16])])

    k16 = numpy_helper.from_array(np.array(16000, np.int64), "k16")
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["is16"]),
             helper.make_node("If", ["is16"], ["output"], then_branch=branch("then"), else_branch=branch("else"))]
    inputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 64]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    graph = helper.make_graph(nodes, "vad", inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16])], [k16])
    return save_graph(graph, path)


def test_int8_of_a_model_whose_weights_sit_in_if_branches_refuses_a_float_bundle_and_names_the_fold(tmp_path: Path) -> None:
    src = make_branch_weights(tmp_path / "vad.onnx")
    with pytest.raises(errors.UnsupportedError) as caught:
        _build(src, tmp_path / "out", precision="int8", int8_mode="dynamic", input_values={"sr": 16000})
    assert "inside If/Loop/Scan bodies" in str(caught.value) and "--fold-input-values" in (caught.value.hint or "")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    bundle = _build(src, tmp_path / "folded", precision="int8", int8_mode="dynamic", input_values={"sr": 16000},
                    fold_input_values=True)
    model = onnx.load(str(bundle / "model.onnx"))
    assert "If" not in {n.op_type for n in model.graph.node}
    assert any(init.data_type == TensorProto.INT8 for init in model.graph.initializer)
    assert _manifest(bundle)["parity"]["outputs"]["output"]["cosine"] > 0.99
