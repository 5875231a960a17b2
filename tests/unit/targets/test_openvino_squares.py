"""Which ops the openvino target's static INT8 keeps float as square-root chains
(:func:`edgec.targets._openvino_preset.square_float_ops`), on small ONNX graphs converted by OpenVINO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import helper

from edgec.targets._openvino_preset import square_float_ops
from tests.support.models import root_then_square, save_square_graph, small_magnitude

ov = pytest.importorskip("openvino")


def converted(tmp_path: Path, nodes: list[Any], consts: dict[str, np.ndarray], shape: tuple[int, ...] = (1, 4, 16)) -> Any:
    """The OpenVINO model of a graph reading ``x`` (float, ``shape``) and writing ``y``."""
    return ov.convert_model(str(save_square_graph(tmp_path / "m.onnx", nodes, consts, shape)))


def test_the_squares_sum_and_root_of_a_magnitude_stay_float(tmp_path: Path) -> None:
    model = converted(tmp_path, *small_magnitude())
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
    model = converted(tmp_path, *root_then_square())
    assert square_float_ops(model, "float") == []
