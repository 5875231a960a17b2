"""Square-root chains of ONNX graphs and the layers that read their root (:mod:`edgec.targets._onnx_squares`),
what the tensorrt target's INT8 keeps float unless ``squares=int8``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgec.targets._onnx_squares import square_float_nodes, square_root_chains
from tests.support.models import root_then_square, save_square_graph, small_magnitude

QUANTIZED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def model_of(tmp_path: Path, nodes: list[Any], consts: dict[str, np.ndarray]) -> Any:
    """The saved and reloaded ONNX model of ``nodes`` reading ``x`` (1, 4, 16) and writing ``y``."""
    return onnx.load(str(save_square_graph(tmp_path / "m.onnx", nodes, consts)))


def test_a_magnitude_keeps_its_chain_and_the_conv_reading_its_root(tmp_path: Path) -> None:
    model = model_of(tmp_path, *small_magnitude())
    assert square_root_chains(model) == [(["re_sq", "im_sq", "power", "magnitude"], "mag")]
    assert square_float_nodes(model, QUANTIZED) == ["re_sq", "im_sq", "power", "magnitude", "head"]  # not the STFT conv


def test_a_log_energy_through_a_scaling_and_a_reshape_reaches_its_matmul(tmp_path: Path) -> None:
    """``MatMul(Reshape(Log(ReduceMean(r * r) * 0.5 + eps)), w)``: the ``Mul(r, r)`` square, the mean, the scaling,
    the ``+ eps`` and the ``Log`` form the chain; the ``Reshape`` carries the root on to the ``MatMul``."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Mul", ["r", "r"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["m"], axes=[2], name="mean"),
             helper.make_node("Mul", ["m", "half"], ["h"], name="scale"),
             helper.make_node("Add", ["h", "eps"], ["e"], name="eps_add"),
             helper.make_node("Log", ["e"], ["l"], name="log_energy"),
             helper.make_node("Reshape", ["l", "shape"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["y"], name="dense")]
    consts = {"half": np.array(0.5, np.float32), "eps": np.array(1e-6, np.float32), "shape": np.array([1, 4]),
              "w": np.ones((4, 2), np.float32)}
    kept = square_float_nodes(model_of(tmp_path, nodes, consts), QUANTIZED)
    assert kept == ["square", "mean", "scale", "eps_add", "log_energy", "flatten", "dense"]


def test_a_root_without_squares_and_squares_without_a_root_keep_nothing(tmp_path: Path) -> None:
    """``Conv(Pow(Sqrt(Relu(x)), 2))``: no square below the root, no root above the square."""
    model = model_of(tmp_path, *root_then_square())
    assert square_root_chains(model) == [] and square_float_nodes(model, QUANTIZED) == []


def test_an_l2_norm_in_one_op_is_a_chain_whose_reader_stays_float(tmp_path: Path) -> None:
    nodes = [helper.make_node("ReduceL2", ["x"], ["n"], axes=[1], keepdims=1, name="norm"),
             helper.make_node("Conv", ["n", "w"], ["y"], name="conv")]
    model = model_of(tmp_path, nodes, {"w": np.ones((2, 1, 1), np.float32)})
    assert square_float_nodes(model, QUANTIZED) == ["norm", "conv"]
