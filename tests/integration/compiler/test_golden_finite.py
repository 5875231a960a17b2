"""Golden reference outputs must be finite for parity to mean anything.

A sentence encoder takes a float attention ``mask`` and divides by its sum (then a square root of it). Synthetic
golden inputs drew that float mask from a normal distribution, so the sum was negative or near zero, the FP32
reference was NaN and an fp32 build failed with "cosine 0.000000 to the FP32 reference" (USE multilingual v3
from the zoo). A ``*mask*`` input of any dtype is now ones, and a reference that is NaN or infinite on the
golden inputs is one line naming the output and what to give instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.errors import EXIT_CALIBRATION, EXIT_EXPORT
from tests.support.cli import cli
from tests.support.models import save_graph

TOKENS, WIDTH = 6, 4


def make_masked_mean(path: Path, mask_name: str = "mask") -> Path:
    """``sum(x * mask) / sqrt(sum(mask))`` over the tokens of ``x`` (1, 6, 4) with a float ``mask`` (1, 6, 1)."""
    nodes = [helper.make_node("Mul", ["x", mask_name], ["kept"]),
             helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=0),
             helper.make_node("ReduceSum", [mask_name, "axis"], ["length"], keepdims=0),
             helper.make_node("Sqrt", ["length"], ["root"]),
             helper.make_node("Div", ["total", "root"], ["y"])]
    graph = helper.make_graph(nodes, "masked_mean",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, WIDTH]),
                               helper.make_tensor_value_info(mask_name, TensorProto.FLOAT, [1, TOKENS, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])],
                              [numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return save_graph(graph, path)


def test_a_float_mask_gets_ones_so_an_fp32_build_without_calibration_passes(tmp_path: Path) -> None:
    model = make_masked_mean(tmp_path / "masked.onnx")
    result = build(BuildConfig(source=str(model), out=tmp_path / "out", cache=False))  # was: cosine 0.000000 (NaN)
    manifest = result.manifest.model_dump()
    assert manifest["parity"]["outputs"]["y"]["cosine"] > 0.9999
    golden = np.load(result.bundle_dir / manifest["golden"])
    masks = [golden[k] for k in golden.files if k.endswith("mask")]
    assert masks and all(np.all(m == 1.0) for m in masks)


def test_a_reference_that_is_nan_on_synthetic_inputs_is_one_line_naming_the_output(tmp_path: Path) -> None:
    model = make_masked_mean(tmp_path / "weights.onnx", mask_name="weights")  # not a mask: drawn normal, sums < 0
    code, _, err = cli("build", str(model), "--out", str(tmp_path / "out"), "--no-cache")
    assert code == EXIT_EXPORT and "NaN in output 'y'" in err and "--calib" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_reference_that_is_nan_on_a_calibration_sample_names_the_sample(tmp_path: Path) -> None:
    model = make_masked_mean(tmp_path / "masked.onnx")
    calib = tmp_path / "calib.npz"
    masks = np.ones((4, 1, TOKENS, 1), np.float32)
    masks[0] = -1.0  # sum -6: sqrt of a negative
    np.savez(calib, x=np.ones((4, 1, TOKENS, WIDTH), np.float32), mask=masks)
    code, _, err = cli("build", str(model), "--calib", str(calib), "--out", str(tmp_path / "out"), "--no-cache")
    assert code == EXIT_CALIBRATION and "calibration sample 0" in err
    assert len(err.strip().splitlines()) == 1
