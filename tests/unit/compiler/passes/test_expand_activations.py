"""``PRelu``, hard-swish and ``HardSigmoid`` written with Add/Mul/Relu/Clip
(:mod:`edgec.compiler.passes.expand_activations`): onnxruntime's outputs (PRelu bit for bit), and what it leaves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgec.compiler.passes.expand_activations import expand

onnx = pytest.importorskip("onnx", reason="pip install 'edgec[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def graph_model(nodes: list[Any], inits: dict[str, np.ndarray], shape: list[int], opset: int = 17,
                outputs: tuple[str, ...] = ("y",), inputs: tuple[str, ...] = ("x",)) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, shape) for i in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(model: Any, **feeds: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)  # type: ignore[no-any-return]


def ops(model: Any) -> list[str]:
    return [n.op_type for n in model.graph.node]


def probe(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Normal values with zeros, signed zeros, tiny and large values mixed in."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 4
    flat = x.reshape(-1)
    flat[:6] = [0.0, -0.0, 1e-30, -1e-30, 3e4, -3e4]
    return x


@pytest.mark.parametrize("slope_shape", [(1, 6, 1, 1), (6, 1, 1), (1, 1, 1, 5), (5,)])
def test_per_channel_prelu_becomes_add_mul_relu_with_identical_outputs(slope_shape: tuple[int, ...]) -> None:
    from onnx import helper

    slope = np.random.default_rng(1).uniform(-0.5, 1.5, slope_shape).astype(np.float32)
    model = graph_model([helper.make_node("PRelu", ["x", "s"], ["y"], name="act")], {"s": slope}, [2, 6, 4, 5])
    x = probe((2, 6, 4, 5))
    expected = run(model, x=x)[0]
    done, missed = expand(model)
    assert done == {"prelu": 1} and not missed
    assert "PRelu" not in ops(model) and sorted(ops(model)) == ["Add", "Add", "Mul", "Mul", "Relu"]
    assert [i.name for i in model.graph.initializer if i.name == "s"] == []  # the old slope is dropped
    onnx.checker.check_model(model)
    assert np.array_equal(run(model, x=x)[0], expected)


def test_one_element_prelu_slope_becomes_leaky_relu() -> None:
    from onnx import helper

    model = graph_model([helper.make_node("PRelu", ["x", "s"], ["y"])], {"s": np.array([0.25])}, [3, 8])
    x = probe((3, 8), seed=2)
    expected = run(model, x=x)[0]
    assert expand(model)[0] == {"leaky_relu": 1}
    assert ops(model) == ["LeakyRelu"] and np.array_equal(run(model, x=x)[0], expected)


def hard_swish_nodes(x: str = "x", out: str = "y", form: str = "div") -> tuple[list[Any], dict[str, np.ndarray]]:
    """A written-out hard-swish: paddle2onnx's ``x * Clip(x + 3, 0, 6) / 6`` (``div``), with ``* (1/6)``
    (``sixth``), or ``x * (Clip(x + 3, 0, 6) / 6)`` (``gate``)."""
    from onnx import helper

    tail = {"div": [helper.make_node("Mul", [x, "r"], ["m"]), helper.make_node("Div", ["m", "six"], [out], name="hswish")],
            "sixth": [helper.make_node("Mul", ["r", x], ["m"]), helper.make_node("Mul", ["sixth", "m"], [out], name="hswish")],
            "gate": [helper.make_node("Div", ["r", "six"], ["m"]), helper.make_node("Mul", ["m", x], [out], name="hswish")]}
    nodes = [helper.make_node("Add", ["three", x], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]), *tail[form]]
    consts = {"three": np.array(3.0), "zero": np.array(0.0), "six": np.array(6.0), "sixth": np.array(1 / 6)}
    return nodes, consts


@pytest.mark.parametrize("form", ["div", "sixth", "gate"])
def test_written_out_hard_swish_divides_x_first_within_float_rounding(form: str) -> None:
    nodes, consts = hard_swish_nodes(form=form)
    model = graph_model(nodes, consts, [2, 4, 6, 6])
    x = probe((2, 4, 6, 6), seed=3)
    expected = run(model, x=x)[0]
    assert expand(model)[0] == {"hard_swish": 1}
    assert ops(model) == ["Add", "Clip", "Div", "Mul"]
    # Clip output first: TensorFlow's int8 quantizer mis-ranges x / 6 as the first operand (PP-OCRv4 det 0.880)
    assert model.graph.node[-1].input[0] == "r" and model.graph.node[-1].name == "hswish"
    np.testing.assert_allclose(run(model, x=x)[0], expected, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize(("op", "attrs"), [("HardSwish", {}), ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.25, "beta": 0.4})])
def test_hard_swish_and_hard_sigmoid_ops_give_onnxruntimes_outputs(op: str, attrs: dict[str, Any]) -> None:
    from onnx import helper

    model = graph_model([helper.make_node(op, ["x"], ["y"], name="act", **attrs)], {}, [2, 3, 5, 7])
    x = probe((2, 3, 5, 7), seed=4)
    expected = run(model, x=x)[0]
    assert expand(model)[0] == {"hard_swish" if op == "HardSwish" else "hard_sigmoid": 1}
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    assert op not in ops(model) and model.graph.node[-1].name == "act"
    assert op == "HardSigmoid" or model.graph.node[-1].input[0] == clip.output[0]
    onnx.checker.check_model(model)
    np.testing.assert_allclose(run(model, x=x)[0], expected, rtol=1e-6, atol=1e-7)


def test_hard_sigmoid_before_opset_11_gets_clip_attributes() -> None:
    from onnx import helper

    model = graph_model([helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.2, beta=0.5)], {}, [4, 9], opset=10)
    x = probe((4, 9), seed=5)
    expected = run(model, x=x)[0]
    assert expand(model)[0] == {"hard_sigmoid": 1}
    np.testing.assert_allclose(run(model, x=x)[0], expected, rtol=1e-6, atol=1e-7)


def test_prelu_with_a_computed_slope_and_a_hard_swish_product_read_elsewhere_are_left_alone() -> None:
    from onnx import helper

    nodes, consts = hard_swish_nodes()
    nodes += [helper.make_node("PRelu", ["x", "t"], ["p"])]
    model = graph_model(nodes, consts, [2, 3], outputs=("y", "m", "p"), inputs=("x", "t"))
    before = model.SerializeToString()
    done, missed = expand(model)
    assert not done and missed == {"2: PRelu slope not a constant": 1}
    assert model.SerializeToString() == before


def test_x_times_its_own_swish_hard_sigmoid_is_rewritten_as_a_hard_swish() -> None:
    from onnx import helper

    nodes = [helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5, name="gate"),
             helper.make_node("Mul", ["x", "g"], ["y"], name="hswish")]
    model = graph_model(nodes, {}, [2, 3, 5, 7])
    x = probe((2, 3, 5, 7), seed=6)
    expected = run(model, x=x)[0]
    assert expand(model)[0] == {"hard_swish": 1}
    assert ops(model) == ["Add", "Clip", "Div", "Mul"]
    np.testing.assert_allclose(run(model, x=x)[0], expected, rtol=1e-6, atol=1e-7)


def test_a_model_listing_value_shapes_gets_the_shapes_of_the_new_values(tmp_path: Any) -> None:
    """onnx2tf reads ``value_info``; a simplified model lists every value, and PP-OCRv4 rec converted wrongly
    when the new ones were missing."""
    from onnx import TensorProto, helper

    from edgec.compiler.passes.base import PassContext, make_pass
    from edgec.frameworks import onnx_utils

    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("HardSigmoid", ["h"], ["y"], name="act")]
    model = graph_model(nodes, {}, [1, 4, 3, 3])
    model.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4, 3, 3]))
    onnx.save(model, str(tmp_path / "in.onnx"))
    result = make_pass("expand_activations").run(onnx_utils.artifact_from_file(tmp_path / "in.onnx"),
                                                 PassContext(work_dir=tmp_path))
    out = onnx.load(str(result.artifact.path))
    listed = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in out.graph.value_info}
    assert result.modified and result.stats["hard_sigmoid"] == 1
    assert all(listed.get(o) == [1, 4, 3, 3] for n in out.graph.node for o in n.output if o != "y")
