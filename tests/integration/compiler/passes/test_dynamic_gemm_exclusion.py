"""Dynamic INT8 keeps an excluded ``Gemm`` float.

onnxruntime's dynamic quantizer rewrites every ``Gemm`` into ``<name>_MatMul`` (+ ``<name>_Add``) before it reads
``nodes_to_exclude``, so a ``Gemm`` excluded by its own name was quantized anyway. torch 2.13 exports
``nn.Linear`` as ``Gemm``: a ``--max-drop`` search on a torch transformer or MLP with dynamic INT8 (the onnx
target's auto choice for MatMul-dominated models) built the all-quantized model for every candidate (USE
multilingual v3: 12 candidates, one model, exit 7).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.passes.base import PassContext
from edgec.compiler.passes.quantize_dynamic import QuantizeDynamic
from edgec.frameworks import onnx_utils
from tests.support.models import save_graph


def make_two_linears(path: Path) -> Path:
    """``Gemm(Relu(Gemm(x)))`` as torch exports two ``nn.Linear`` layers (``transB=1``, biases)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="node_linear", transB=1),
             helper.make_node("Relu", ["h"], ["a"], name="node_relu"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="node_linear_1", transB=1)]
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
             for name, shape in (("w1", (32, 16)), ("b1", (32,)), ("w2", (8, 32)), ("b2", (8,)))]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return save_graph(graph, path)


def _integer_matmuls(path: Path) -> list[str]:
    return [n.name for n in onnx_utils.load_model(path).graph.node if n.op_type == "MatMulInteger"]


def test_a_gemm_excluded_by_its_name_stays_float_and_the_other_is_quantized(tmp_path: Path) -> None:
    artifact = onnx_utils.artifact_from_file(make_two_linears(tmp_path / "mlp.onnx"))
    results = {}
    for name, exclude in (("all", ()), ("first_float", ("node_linear",))):
        work = tmp_path / name
        work.mkdir()
        results[name] = QuantizeDynamic(nodes_to_exclude=exclude).run(artifact, PassContext(work)).artifact.path
    assert len(_integer_matmuls(results["all"])) == 2
    assert _integer_matmuls(results["first_float"]) == ["node_linear_1_MatMul_quant"]
    assert results["all"].read_bytes() != results["first_float"].read_bytes()
