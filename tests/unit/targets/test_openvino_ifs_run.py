"""``If`` conditions that the input sizes decide where ONNX shape inference cannot follow, computed by running
the model (:func:`edgec.targets._openvino_ifs.fold_ifs_by_running`, rule 4)."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.targets._openvino_ifs import fold_ifs, fold_ifs_by_running, shape_conditions
from tests.support.squeeze_if import squeeze_if_model

onnx = pytest.importorskip("onnx", reason="pip install 'edgec[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def _run(model: object, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    return session.run(None, {"x": x})[0]


def test_a_size_decided_condition_shape_inference_cannot_follow_is_folded_by_running() -> None:
    model = squeeze_if_model()
    x = np.random.default_rng(1).standard_normal((1, 24)).astype(np.float32)
    expected = _run(model, x)
    assert fold_ifs(model, {"x": [1, 24]}) == 0  # ONNX shape inference gives the padded length up
    assert shape_conditions(model.graph) == ["c"]
    assert fold_ifs_by_running(model, {"x": (1, 24)}) == 1
    assert "If" not in [n.op_type for n in model.graph.node]
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-6)


def test_a_condition_on_values_is_never_folded() -> None:
    model = squeeze_if_model(batch_condition=True)
    assert shape_conditions(model.graph) == []
    assert fold_ifs_by_running(model, {"x": (1, 24)}) == 0
    assert "If" in [n.op_type for n in model.graph.node]


def test_a_shape_read_after_a_value_shaped_op_is_not_a_shape_condition() -> None:
    from onnx import helper, numpy_helper

    model = squeeze_if_model()
    graph = model.graph  # type: ignore[attr-defined]
    pad = next(n for n in graph.node if n.op_type == "Pad")
    graph.node.insert(0, helper.make_node("NonZero", ["x"], ["nz"]))
    graph.node.insert(1, helper.make_node("Shape", ["nz"], ["nzs"]))
    graph.node.insert(2, helper.make_node("Concat", ["nzs", "nzs"], ["nz4"], axis=0))
    graph.node.insert(3, helper.make_node("Mul", ["nz4", "zero4"], ["pads_from_data"]))
    graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.int64), "zero4"))
    pad.input[1] = "pads_from_data"  # pads now follow the data's count of non-zeros
    assert shape_conditions(graph) == []


def test_without_a_size_for_every_input_nothing_is_run() -> None:
    model = squeeze_if_model()
    assert fold_ifs_by_running(model, {}) == 0


def test_branch_initializers_named_like_the_graphs_fold_only_when_they_hold_the_same_tensor() -> None:
    from onnx import numpy_helper

    same = squeeze_if_model()
    branch = next(a.g for a in next(n for n in same.graph.node if n.op_type == "If").attribute if a.name == "else_branch")  # type: ignore[attr-defined]
    branch.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "axis2"))
    assert fold_ifs_by_running(same, {"x": (1, 24)}) == 1  # the Identity branch is taken at this size

    other = squeeze_if_model()
    branch = next(a.g for a in next(n for n in other.graph.node if n.op_type == "If").attribute if a.name == "else_branch")  # type: ignore[attr-defined]
    branch.initializer.append(numpy_helper.from_array(np.array([7], np.int64), "axis2"))
    assert fold_ifs_by_running(other, {"x": (1, 24)}) == 0
