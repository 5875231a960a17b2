"""The exact ONNX rewrites the tflite route needs (``split_reduce_l2``, ``fuse_gelu``) on graphs built inline:
what they match, that outputs do not change, why they leave a candidate alone, and where the planner runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.passes.base import PassContext, PassResult, make_pass
from edgec.compiler.planner import float_steps
from edgec.core.types import FORMAT_ONNX
from edgec.frameworks import onnx_utils
from edgec.targets.base import TARGETS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.support.models import CONSTS, TORCH_GELU, make_onnx  # noqa: E402


def run(name: str, src: Path, work: Path) -> tuple[PassResult, list[str]]:
    work.mkdir(parents=True, exist_ok=True)
    logged: list[str] = []
    result = make_pass(name).run(onnx_utils.artifact_from_file(src), PassContext(work, log=logged.append))
    return result, logged


def outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x}))


X = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32) * 3


def test_torch_style_gelu_and_reduce_l2_become_gelu_and_sqrt_of_sum_square_exactly(tmp_path: Path) -> None:
    nodes = [*TORCH_GELU, helper.make_node("ReduceL2", ["g", "axes"], ["n"], keepdims=1, name="l2"),
             helper.make_node("Div", ["g", "n"], ["y"], name="normalize")]
    src = make_onnx(tmp_path / "src.onnx", nodes)
    split, _ = run("split_reduce_l2", src, tmp_path / "a")
    fused, logged = run("fuse_gelu", split.artifact.path, tmp_path / "b")
    assert split.modified and split.stats == {"split": 1, "not_split": {}}
    assert fused.modified and fused.stats == {"fused": 1, "not_fused": {}} and logged == []
    model = onnx.load(str(fused.artifact.path))
    onnx.checker.check_model(model, full_check=True)
    assert [(n.op_type, n.name) for n in model.graph.node] == [
        ("Gelu", "erf__gelu"), ("ReduceSumSquare", "l2__sum_square"), ("Sqrt", "l2"), ("Div", "normalize")]
    assert model.opset_import[0].version == 20  # Gelu is an opset-20 op
    np.testing.assert_allclose(outputs(fused.artifact.path, X)[0], outputs(src, X)[0], rtol=1e-6, atol=1e-7)


def test_gelu_with_inverse_sqrt2_constant_nodes_and_half_first_is_fused(tmp_path: Path) -> None:
    consts = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(CONSTS[k], k), name=f"c_{k}")
              for k in ("inv_sqrt2", "one", "half")]
    nodes = [*consts, helper.make_node("Mul", ["inv_sqrt2", "x"], ["s"], name="scale"),
             helper.make_node("Erf", ["s"], ["e"], name="erf"),
             helper.make_node("Add", ["one", "e"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "x"], ["ax"], name="mul_x"),  # x first, then 0.5
             helper.make_node("Mul", ["half", "ax"], ["y"], name="mul_half")]
    src = make_onnx(tmp_path / "src.onnx", nodes)
    result, _ = run("fuse_gelu", src, tmp_path / "w")
    assert result.stats == {"fused": 1, "not_fused": {}}
    np.testing.assert_allclose(outputs(result.artifact.path, X)[0], outputs(src, X)[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("change", "rule"), [
    ({"div": helper.make_node("Div", ["x", "half"], ["s"], name="div")}, "1: Erf input"),
    ({"add": helper.make_node("Add", ["e", "half"], ["a"], name="add")}, "3: Erf output is not added to 1"),
    ({"add": helper.make_node("Sub", ["e", "one"], ["a"], name="add")}, "3: Erf output is not added to 1"),
    ({"mul_half": helper.make_node("Mul", ["a", "sqrt2"], ["h"], name="mul_half")}, "4: the sum is not multiplied"),
    ({"mul_x": helper.make_node("Mul", ["one", "h"], ["g"], name="mul_x")}, "4: the sum is not multiplied"),
])
def test_gelu_candidate_that_breaks_a_rule_is_left_and_the_rule_is_counted(change: dict[str, Any], rule: str,
                                                                           tmp_path: Path) -> None:
    nodes = [change.get(n.name, n) for n in TORCH_GELU] + [helper.make_node("Identity", ["g"], ["y"], name="out")]
    src = make_onnx(tmp_path / "src.onnx", nodes)
    result, logged = run("fuse_gelu", src, tmp_path / "w")
    assert not result.modified and result.stats["fused"] == 0
    [(why, count)] = result.stats["not_fused"].items()
    assert why.startswith(rule) and count == 1
    assert result.artifact.digest == onnx_utils.artifact_from_file(src).digest
    assert result.artifact.path.read_bytes() == src.read_bytes()
    assert len(logged) == 1 and "1 Erf node(s) not fused" in logged[0] and rule in logged[0]


def test_gelu_whose_intermediate_is_a_graph_output_is_not_fused(tmp_path: Path) -> None:
    nodes = [*TORCH_GELU, helper.make_node("Identity", ["g"], ["y"], name="out")]
    src = make_onnx(tmp_path / "src.onnx", nodes, outputs=("y", "e"))  # the Erf output is read by the user
    result, _ = run("fuse_gelu", src, tmp_path / "w")
    assert not result.modified
    assert list(result.stats["not_fused"]) == ["2: an intermediate value has other consumers or is a graph output"]
    assert [o.name for o in result.artifact.outputs] == ["y", "e"]


def test_gelu_in_an_opset_17_model_that_opset_20_would_break_is_not_fused(tmp_path: Path) -> None:
    nodes = [*TORCH_GELU, helper.make_node("ReduceMean", ["g"], ["y"], axes=[1], name="mean")]  # axes: input from 18
    src = make_onnx(tmp_path / "src.onnx", nodes, opset=17)
    result, logged = run("fuse_gelu", src, tmp_path / "w")
    assert not result.modified and result.stats["fused"] == 0
    assert result.stats["not_fused"] == {"7: raising the opset to 20 makes the model invalid": 1}
    assert "ReduceMean" in logged[0]
    assert result.artifact.path.read_bytes() == src.read_bytes()


def test_reduce_l2_on_integers_or_in_a_custom_domain_is_left(tmp_path: Path) -> None:
    ints = make_onnx(tmp_path / "int.onnx", [helper.make_node("ReduceL2", ["x", "axes"], ["y"], name="l2")],
                     dtype=TensorProto.INT32, out_shape=(2, 1))
    result, logged = run("split_reduce_l2", ints, tmp_path / "a")
    assert not result.modified and result.stats == {"split": 0, "not_split": {"2: integer input (Sqrt takes floats only)": 1}}
    assert "rule 2: integer input" in logged[0]
    model = onnx.load(str(ints))
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    custom = tmp_path / "custom.onnx"
    onnx.save(model, str(custom))
    result, _ = run("split_reduce_l2", custom, tmp_path / "b")
    assert result.stats["not_split"] == {"1: not the default ONNX domain (a custom op)": 1}


def test_reduce_l2_with_noop_on_empty_axes_keeps_its_meaning(tmp_path: Path) -> None:
    src = make_onnx(tmp_path / "src.onnx", [helper.make_node("ReduceL2", ["x"], ["y"], noop_with_empty_axes=1)])
    result, _ = run("split_reduce_l2", src, tmp_path / "w")
    assert result.modified
    np.testing.assert_array_equal(outputs(result.artifact.path, X)[0], outputs(src, X)[0])


def test_planner_runs_the_target_rewrites_last_and_on_the_onnx_route_only(tmp_path: Path) -> None:
    config = BuildConfig(source="m.onnx", target="tflite", out=tmp_path, input_shapes={"x": (1, 6)})
    rewrites = TARGETS.get("tflite").onnx_rewrites
    assert rewrites == ("unroll_rnn", "split_reduce_l2", "fuse_gelu", "split_slice", "edge_pad_pools")
    steps = float_steps(config, FORMAT_ONNX, rewrites)
    assert [name for name, _ in steps] == ["fix_shapes", "simplify", "unroll_rnn", "split_reduce_l2", "fuse_gelu", "split_slice", "edge_pad_pools"]
    assert float_steps(config, "savedmodel", rewrites) == []
    assert TARGETS.get("onnx").onnx_rewrites == ()
