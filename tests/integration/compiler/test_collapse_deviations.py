"""The collapse gate on outputs far from zero on average (issue 18): a probability whose ups and downs INT8
lost keeps a cosine near 1 with FP32, so the gate also judges the deviations from FP32's mean (silero-vad's
INT8 on OpenVINO: cosine 0.98, centred cosine 0.52, decisions 0.56, written with exit 0 before)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler import parity
from edgec.core import errors
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import save_graph


def make_offset_probability(path: Path) -> Path:
    """``p = Sigmoid(x @ w + 2)``: a speech-like probability mostly high, whose dips carry the information."""
    w = np.linspace(0.4, 1.0, 16, dtype=np.float32).reshape(16, 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Add", ["s", "bias"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["p"])], "offset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([2.0], np.float32), "bias")])
    return save_graph(graph, path)


def outlier_calibration(path: Path) -> Path:
    """Features of about +-0.3 and one sample of 400: minmax ranges of +-400 round every other sample to 0."""
    x = np.random.default_rng(0).normal(0, 0.3, (16, 1, 16)).astype(np.float32)
    x[3] = 400.0
    np.savez(path, x=x)
    return path


def test_a_probability_that_lost_its_deviations_is_collapsed_though_its_cosine_is_high(tmp_path: Path) -> None:
    src, calib, out = make_offset_probability(tmp_path / "m.onnx"), outlier_calibration(tmp_path / "c.npz"), tmp_path / "out"
    args = ("build", str(src), "--precision", "int8", "--int8-mode", "static", "--calib", str(calib), "--out", str(out))
    proc = run_cli(*args)
    assert_one_line_error(proc, errors.EXIT_ACCURACY, "int8 bundle has collapsed", "output 'p' has cosine 0.9",
                          "its deviations from FP32's mean have cosine", "--max-drop", "--allow-degraded")
    assert not (out / "m-onnx-int8").exists()
    proc = run_cli(*args, "--allow-degraded", "--json")
    assert proc.returncode == 0, proc.stderr
    measured = json.loads((out / "m-onnx-int8" / "manifest.json").read_text())["parity"]["outputs"]["p"]
    assert measured["cosine"] >= parity.COLLAPSE_MIN_COSINE > measured["centred_cosine"]


def test_deviations_are_not_judged_where_the_output_barely_varies() -> None:
    ref = np.full((8, 4), 5.0) + np.random.default_rng(0).normal(0, 1e-4, (8, 4))
    got = ref + np.random.default_rng(1).normal(0, 1e-3, ref.shape)  # noise 10x the spread, 0.02% of the scale
    m = parity.compare_output(ref, got)
    assert m["centred_cosine"] < 0.5 and parity.collapsed({"y": m}, real_inputs=True) == []


def test_parity_recorded_before_the_centred_cosine_is_judged_as_before() -> None:
    assert parity.collapsed({"y": {"cosine": 0.98, "max_abs": 0.5, "mean_abs": 0.3, "ref_max_abs": 1.0}}, True) == []
