"""openvino INT8 of an embedding model like USE multilingual v3: a uint8 table dequantised per row (a scale and an
offset vector read by ``Gather``), then MatMuls and no convolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")

ROWS, DIM, TOKENS = 12_000, 32, 8
"""nncf compresses a vector of 10,000 elements or more with an OpenVINO model (smaller ones with numpy)."""


def make_embedding_onnx(path: Path) -> Path:
    """``ids`` (1, 8) int64 -> table[ids] * scale[ids] + offset[ids] -> MatMul, Relu, MatMul -> ``y`` (1, 8, 16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (ROWS, DIM), dtype=np.uint8), "table"),
             numpy_helper.from_array(rng.uniform(0.002, 0.01, ROWS).astype(np.float32), "row_scale"),
             numpy_helper.from_array(rng.uniform(-0.6, -0.2, ROWS).astype(np.float32), "row_lo"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(rng.standard_normal((DIM, 64)).astype(np.float32) * 0.2, "w0"),
             numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) * 0.2, "w1")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["q"], axis=0, name="table_rows"),
             helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Gather", ["row_scale", "ids"], ["s"], axis=0, name="scale_rows"),
             helper.make_node("Gather", ["row_lo", "ids"], ["o"], axis=0, name="offset_rows"),
             helper.make_node("Unsqueeze", ["s", "last"], ["s1"], name="s1"),
             helper.make_node("Unsqueeze", ["o", "last"], ["o1"], name="o1"),
             helper.make_node("Mul", ["qf", "s1"], ["scaled"], name="mul"),
             helper.make_node("Add", ["scaled", "o1"], ["emb"], name="add"),
             helper.make_node("MatMul", ["emb", "w0"], ["h"], name="mm0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w1"], ["y"], name="mm1")]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, TOKENS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def embedding(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ov-embedding")
    calib = folder / "calib.npz"
    np.savez(calib, ids=np.random.default_rng(1).integers(0, ROWS, (16, 1, TOKENS), dtype=np.int64))
    return make_embedding_onnx(folder / "emb.onnx"), calib


def _int8(src: Path, calib: Path, out: Path, mode: str) -> Path:
    config = BuildConfig(source=str(src), out=out, target="openvino", precision="int8", int8_mode=mode, calib=calib)
    return build(config).bundle_dir


def _matmul_weight_types(xml: Path) -> set[str]:
    """Element types of the constants that feed each MatMul (through nncf's decompression ops)."""
    found = set()
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() == "MatMul":
            pending = [i.get_source_output().get_node() for i in op.inputs()]
            while pending:
                node = pending.pop()
                if node.get_type_name() == "Constant":
                    found.add(node.get_output_element_type(0).get_type_name())
                elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
                    pending += [i.get_source_output().get_node() for i in node.inputs()]
    return found


def test_dynamic_int8_compresses_matmuls_and_leaves_per_row_vectors_float(embedding: tuple[Path, Path], tmp_path: Path) -> None:
    bundle = _int8(*embedding, tmp_path / "out", "dynamic")  # was exit 5: ReduceMin with f64 axes on the scale vector
    manifest = load_manifest(bundle)
    quant = manifest.target_details["quantization"]
    assert quant["mode"] == "weights" and quant["reason"] == "--int8-mode dynamic"
    assert len(quant["kept_float_vectors"]) == 2 and all("Gather" in n or "rows" in n for n in quant["kept_float_vectors"])
    assert {"u8", "i8"} & _matmul_weight_types(bundle / "model.xml")
    assert manifest.parity["outputs"]["y"]["cosine"] > 0.999
