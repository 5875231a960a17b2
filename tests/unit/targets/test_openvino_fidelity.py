"""Per-layer comparison and mixed precision on the openvino target, on the fragile six-conv model of
``make_fragile`` (``tests/support/models.py``) (conv3 reads an activation whose channel 0 is 300x the others, so
static INT8's per-tensor range for it crushes the other channels). nncf's ignored scope keeps ops in float.

The checks that build nothing; the builds are in tests/integration/targets/test_openvino_fidelity.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")


def test_ops_reading_a_shared_constant_are_named_by_their_own_op(tmp_path: Path) -> None:
    """A constant that several ops read (ReLU6's bounds, a shared shift) names none of them (issue 19)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.targets.openvino import canonical_names, op_layers

    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [numpy_helper.from_array(np.full((1, 4, 1, 1), 0.5, np.float32), "shared_shift")], [], "x", 3
    for i in (1, 2, 3):
        inits.append(numpy_helper.from_array(rng.standard_normal((4, cin, 3, 3)).astype(np.float32), f"conv{i}.weight"))
        nodes += [helper.make_node("Conv", [prev, f"conv{i}.weight"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [f"r{i}", "shared_shift"], [f"a{i}"], name=f"shift{i}")]
        prev, cin = f"a{i}", 4
    graph = helper.make_graph(nodes, "shift", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "shift.onnx"))
    converted = ov.convert_model(str(tmp_path / "shift.onnx"))
    canonical_names(converted)
    layers = op_layers(converted)
    adds = {op.get_friendly_name() for op in converted.get_ordered_ops() if op.get_type_name() == "Add"}
    assert len({layers[name] for name in adds}) == 3 and "shared_shift" not in {layers[name] for name in adds}
    assert {layers[f"conv{i}"] for i in (1, 2, 3)} == {"conv1", "conv2", "conv3"}
