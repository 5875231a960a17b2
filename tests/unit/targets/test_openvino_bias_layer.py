"""A biased ONNX ``Conv`` is one layer on openvino: its ``Convolution`` and the bias ``Add`` the frontend splits off.

OpenVINO's ONNX frontend turns ``Conv(x, W, B)`` into ``Convolution`` (``.../Conv/WithoutBiases``) plus an ``Add``
of an unnamed, reshaped bias constant named after the ONNX node. The ``Add`` was a layer of its own, so
``--max-drop`` keeping it in float left the convolution quantized: on YOLOv8n every conv it tried changed
nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgec.targets.openvino import op_layers  # noqa: E402


def _biased_convs(path: Path) -> Path:
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in (
        ("model.0.conv.weight", (4, 3, 3, 3)), ("model.0.conv.bias", (4,)),
        ("model.1.conv.weight", (4, 4, 3, 3)), ("model.1.conv.bias", (4,)))]
    nodes = [
        helper.make_node("Conv", ["x", "model.0.conv.weight", "model.0.conv.bias"], ["c0"], name="/model.0/conv/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"], name="/model.0/act/Relu"),
        helper.make_node("Conv", ["r0", "model.1.conv.weight", "model.1.conv.bias"], ["y"], name="/model.1/conv/Conv", pads=[1] * 4),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_bias_add_joins_its_convolutions_layer(tmp_path: Path) -> None:
    model = ov.convert_model(str(_biased_convs(tmp_path / "m.onnx")))
    layers = op_layers(model)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    adds = [n for n, t in kinds.items() if t == "Add"]
    assert len(adds) == 2
    assert layers["/model.0/conv/Conv"] == layers["/model.0/conv/Conv/WithoutBiases"] == "model.0.conv"
    assert layers["y"] == layers["/model.1/conv/Conv/WithoutBiases"] == "model.1.conv"  # the output's Add
    assert layers["/model.0/act/Relu"] == "/model.0/act/Relu"  # an activation stays its own layer


def test_keeping_the_layer_float_keeps_the_convolution_float(tmp_path: Path) -> None:
    nncf = pytest.importorskip("nncf")
    model = ov.convert_model(str(_biased_convs(tmp_path / "m.onnx")))
    layers = op_layers(model)
    exclude = [n for n, layer in layers.items() if layer == layers["y"]]
    data = nncf.Dataset([np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)])
    quantized = nncf.quantize(model, data, subset_size=4, ignored_scope=nncf.IgnoredScope(names=exclude, validate=False))
    conv = next(op for op in quantized.get_ordered_ops() if op.get_friendly_name() == "/model.1/conv/Conv/WithoutBiases")
    sources = [conv.input(i).get_source_output().get_node().get_type_name() for i in range(2)]
    assert "FakeQuantize" not in sources  # neither its input nor its weights quantized
    first = next(op for op in quantized.get_ordered_ops() if op.get_friendly_name() == "/model.0/conv/Conv/WithoutBiases")
    assert "FakeQuantize" in [first.input(i).get_source_output().get_node().get_type_name() for i in range(2)]


def _quantized(model: object, folder: Path, ignored: list[str]) -> Path:
    nncf = pytest.importorskip("nncf")
    data = nncf.Dataset([np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)])
    scope = {"ignored_scope": nncf.IgnoredScope(names=ignored, validate=False)} if ignored else {}
    quantized = nncf.quantize(model.clone(), data, subset_size=4, **scope)  # type: ignore[attr-defined]
    folder.mkdir()
    ov.save_model(quantized, folder / "model.xml")
    return folder


def test_model_digest_tells_apart_what_runs_not_names_or_the_request(tmp_path: Path) -> None:
    """An activation nncf quantizes at its consumer's input, kept "in float", is the same model: the files differ
    only in the names nncf gives the ops it adds and in its config (the ignored scope); the search must see one
    model there (else each such candidate is a build counted against --max-builds), and two where a conv is
    float."""
    from edgec.core.types import sha256_file
    from edgec.targets.openvino import OpenVinoTarget

    model = ov.convert_model(str(_biased_convs(tmp_path / "m.onnx")))
    files = ["model.xml", "model.bin"]
    naive = _quantized(model, tmp_path / "naive", [])
    relu = _quantized(model, tmp_path / "relu", ["/model.0/act/Relu"])
    conv = _quantized(model, tmp_path / "conv", ["/model.1/conv/Conv/WithoutBiases", "y"])
    assert sha256_file(naive / "model.xml") != sha256_file(relu / "model.xml")  # what a plain file digest saw
    target = OpenVinoTarget()
    assert target.model_digest(naive, files) == target.model_digest(relu, files)
    assert target.model_digest(naive, files) != target.model_digest(conv, files)


def test_compare_layers_marks_ops_that_read_nothing_quantized(tmp_path: Path) -> None:
    """The Relu after a conv reads the bias Add's float output (nncf quantizes it at the next conv's input):
    keeping it in float changes nothing, so the search must not spend a build on it."""
    from edgec.targets.openvino import OpenVinoTarget

    model = ov.convert_model(str(_biased_convs(tmp_path / "m.onnx")))
    (tmp_path / "fp32").mkdir()
    ov.save_model(model, tmp_path / "fp32" / "model.xml")
    naive = _quantized(model, tmp_path / "naive", [])
    feeds = [{"x": np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32)}]
    ranked = {d.node: d for d in OpenVinoTarget().compare_layers(tmp_path / "fp32" / "model.xml", naive / "model.xml", feeds)}
    assert ranked["/model.0/act/Relu"].quantized is False
    assert ranked["/model.1/conv/Conv/WithoutBiases"].quantized is True  # its input and weights are int8
    assert ranked["/model.0/conv/Conv/WithoutBiases"].quantized is True  # int8 weights
