"""The ``split_slice`` pass on small graphs: a Slice over several axes becomes one-axis slices that compute the
same values (onnxruntime on both graphs), and what breaks a rule stays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgec.compiler.passes.split_slice import split  # noqa: E402

END = np.iinfo(np.int64).max


def _model(starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    roles = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in roles.items() if v is not None]
    inputs = ["x", "starts", "ends"] + (["axes"] if axes is not None else [""] if steps is not None else [])
    inputs += ["steps"] if steps is not None else []
    node = helper.make_node("Slice", inputs, ["y"], name="cut")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 10, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return model


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ([0, 1], [129, END], [1, 2], [1, 1]),          # onnxsim's merged STFT slices (clamped ends)
    ([8, -1], [1, 0], [1, -1], [-2, -1]),          # negative steps and axes
    ([1, 2, 0], [3, 9, 5], None, None),             # axes and steps omitted
])
def test_multi_axis_slice_becomes_one_axis_slices_with_the_same_values(starts: list[int], ends: list[int],
                                                                       axes: list[int] | None, steps: list[int] | None) -> None:
    model = _model(starts, ends, axes, steps)
    x = np.random.default_rng(0).standard_normal((3, 10, 7)).astype(np.float32)
    want = _run(model, x)
    assert split(model) == 1
    nodes = model.graph.node
    assert [n.op_type for n in nodes] == ["Slice"] * len(starts) and nodes[-1].name == "cut"
    np.testing.assert_array_equal(_run(model, x), want)


def test_one_axis_slice_and_a_slice_with_computed_starts_stay() -> None:
    model = _model([1], [3], [1], None)
    assert split(model) == 0
    computed = _model([0, 1], [2, 3], [0, 1], None)
    computed.graph.initializer.pop(0)  # starts now comes from outside the graph
    assert split(computed) == 0 and len(computed.graph.node) == 1
