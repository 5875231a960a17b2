"""Padded and ceil-mode ``MaxPool`` padded with edge copies instead of -inf
(:mod:`edgec.compiler.passes.edge_pad_pools`): the same outputs as onnxruntime, and the cases it leaves alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgec.compiler.passes.edge_pad_pools import output_size, rewrite

onnx = pytest.importorskip("onnx", reason="pip install 'edgec[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def pool(size: tuple[int, int], **attrs: object) -> object:
    from onnx import TensorProto, helper

    outputs = ["y", "i"] if attrs.pop("indices", False) else ["y"]
    node = helper.make_node("MaxPool", ["x"], outputs, name="pool", **attrs)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, *size])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT if o == "y" else TensorProto.INT64, None)
                               for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: object, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 2), (3, 1), (4, 3)])
def test_edge_padding_gives_onnxruntimes_outputs_on_every_size_pad_and_ceil_mode(kernel: int, stride: int) -> None:
    rng = np.random.default_rng(kernel * 10 + stride)
    rewritten = 0
    for n, pads, ceil in itertools.product(range(4, 10), ([0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]), (0, 1)):
        if 2 * max(pads) > kernel:  # onnxruntime and torch refuse pads over half the kernel
            continue
        model = pool((n, n + 1), kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads, ceil_mode=ceil)
        x = -1 - np.abs(rng.standard_normal((1, 2, n, n + 1))).astype(np.float32)  # all negative: a 0 pad would show
        expected = _run(model, x)
        rewritten += rewrite(model)
        got = _run(model, x)
        assert got.shape == expected.shape and np.array_equal(got, expected), (n, pads, ceil)
    assert rewritten > 10


def test_output_size_drops_a_last_window_that_starts_in_the_end_padding() -> None:
    assert output_size(5, 2, 2, 0, 0, ceil=True) == 3 and output_size(5, 2, 2, 0, 0, ceil=False) == 2
    assert output_size(4, 2, 3, 1, 1, ceil=True) == 2  # ceil((4+2-2)/3)+1 = 3, but window 3 would start at 6 >= 4+1


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2]},  # no padding at all
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "dilations": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "indices": True},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
])
def test_pools_without_padding_or_with_dilations_indices_or_auto_pad_are_left_alone(attrs: dict) -> None:
    model = pool((9, 9), **attrs)
    before = model.SerializeToString()  # type: ignore[attr-defined]
    assert rewrite(model) == 0 and model.SerializeToString() == before  # type: ignore[attr-defined]
