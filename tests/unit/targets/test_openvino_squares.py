"""Which ops the openvino target's static INT8 keeps float as square-root chains
(:func:`edgec.targets._openvino_preset.square_float_ops`), on small ONNX graphs converted by OpenVINO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.targets._openvino_preset import square_float_ops
from tests.support.models import save_graph, stft_magnitude_nodes

ov = pytest.importorskip("openvino")


def converted(tmp_path: Path, nodes: list[Any], consts: dict[str, np.ndarray], shape: tuple[int, ...] = (1, 4, 16)) -> Any:
    """The OpenVINO model of a graph reading ``x`` (float, ``shape``) and writing ``y``."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return ov.convert_model(str(save_graph(graph, tmp_path / "m.onnx", opset=13)))


def magnitude_nodes() -> tuple[list[Any], dict[str, np.ndarray]]:
    """``Conv(sqrt(re^2 + im^2))`` of an STFT-like convolution (silero-vad's front end)."""
    nodes = stft_magnitude_nodes()
    consts = {"basis": np.ones((8, 4, 3), np.float32), "head": np.ones((2, 4, 1), np.float32),
              "two": np.array([2.0], np.float32), "s0": np.array([0]), "s1": np.array([4]), "s2": np.array([8]),
              "ax": np.array([1])}
    return nodes, consts


def test_the_squares_sum_and_root_of_a_magnitude_stay_float(tmp_path: Path) -> None:
    model = converted(tmp_path, *magnitude_nodes())
    assert sorted(square_float_ops(model, "float")) == ["im_sq", "magnitude", "power", "re_sq"]
    assert square_float_ops(model, "int8") == []


def test_a_log_of_mean_squares_through_a_scaling_stays_float(tmp_path: Path) -> None:
    """``Log(ReduceMean(x * x) * 0.5 + eps)``: a log energy; the ``Multiply(x, x)`` square, the mean, the scaling
    and the ``+ eps`` join the chain, the ``Relu`` before the square does not (the ``Log`` takes the output's name)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Mul", ["r", "r"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["m"], axes=[2], name="mean"),
             helper.make_node("Mul", ["m", "half"], ["h"], name="scale"),
             helper.make_node("Add", ["h", "eps"], ["e"], name="eps_add"),
             helper.make_node("Log", ["e"], ["y"], name="log_energy")]
    model = converted(tmp_path, nodes, {"half": np.array(0.5, np.float32), "eps": np.array(1e-6, np.float32)})
    assert sorted(square_float_ops(model, "float")) == ["eps_add", "mean", "scale", "square", "y"]  # y: the Log


def test_a_root_without_squares_and_squares_without_a_root_stay_int8(tmp_path: Path) -> None:
    """``Sqrt(Relu(x))`` has no square below it; ``Conv(x^2)`` has no root above it."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Sqrt", ["r"], ["s"], name="root"),
             helper.make_node("Pow", ["s", "two"], ["p"], name="square"),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv")]
    model = converted(tmp_path, nodes, {"two": np.array([2.0], np.float32), "w": np.ones((2, 4, 1), np.float32)})
    assert square_float_ops(model, "float") == []
