"""``--max-drop`` tries the calibration methods before keeping layers in float (issue 19).

Two models: one whose calibration data holds a rare outlier (one pixel of one sample at 300 where the rest is
standard normal), so a min/max range crushes every other value and percentile calibration alone meets the
budget; and the six-conv fragile model, whose outlier is a whole channel (a range method cannot fix it), so
the search still keeps conv3 in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.cli import run_cli
from tests.support.models import fragile_assets

SIDE = 32
SPIKED = 2
"""The sample holding the outlier: calibration uses it; neither the held-out budget samples (every 4th) nor
the golden ones (every 6th of the rest) are it, so fidelity is measured on the data the model will see, and
the outlier only decides the ranges (clipping it there is the trade percentile calibration makes)."""


def make_spiky(folder: Path) -> dict[str, Path]:
    """Three 3x3 convs with ReLU and a classifier on 3x32x32 inputs, and 64 standard-normal calibration samples,
    one of which has a single pixel at 300 (fewer than 1e-5 of the values: what percentile 99.999 clips)."""
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    for i in range(1, 4):
        w = (rng.standard_normal((8, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(np.zeros(8, np.float32), f"conv{i}.bias")]
        nodes += [helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", 8
    fc = (rng.standard_normal((8 * SIDE * SIDE, 10)) / 8).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc.weight"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")]
    nodes += [helper.make_node("Flatten", [prev], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "spiky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "spiky.onnx"))
    x = np.random.default_rng(1).standard_normal((64, 3, SIDE, SIDE)).astype(np.float32)
    x[SPIKED, 0, 13, 17] = 300.0
    np.savez(folder / "calib.npz", x=x)
    return {"model": folder / "spiky.onnx", "calib": folder / "calib.npz"}


@pytest.fixture(scope="module")
def spiky(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_spiky(tmp_path_factory.mktemp("spiky"))


def test_percentile_alone_meets_the_budget_and_no_layer_is_kept_in_float(spiky, tmp_path: Path) -> None:
    outcome = build(BuildConfig(source=str(spiky["model"]), precision="int8", calib=spiky["calib"], out=tmp_path,
                                max_drop=0.02, metric="cosine"))
    mp = outcome.manifest.model_extra["mixed_precision"]
    tried = mp["calibration"]["tried"]
    assert mp["calibration"]["method"] == "percentile" and mp["float_layers"] == [] and mp["float_nodes"] == []
    assert 1 - tried["minmax"] > 0.02 >= 1 - tried["percentile"]  # minmax breaks the budget, percentile meets it
    assert mp["builds"] == 2 and [s["calibration"] for s in mp["steps"]] == ["minmax", "percentile"]
    assert outcome.manifest.calibration is not None and outcome.manifest.calibration["method"] == "percentile"
    assert outcome.manifest.passes[-1]["options"]["method"] == "percentile"  # the bundle's record says how it was made
    model = onnx.load(str(outcome.bundle_dir / "model.onnx"))
    quantized = {n.input[0].split(".")[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]}
    assert quantized == {"conv1", "conv2", "conv3", "fc"}  # every layer INT8


def test_the_cli_names_the_method_that_won_and_keeps_stdout_clean(spiky, tmp_path: Path) -> None:
    proc = run_cli("build", str(spiky["model"]), "--precision", "int8", "--calib", str(spiky["calib"]), "--max-drop", "0.02",
                   "--metric", "cosine", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Number of tensors" not in proc.stdout + proc.stderr  # onnxruntime's histogram chatter is captured
    proc = run_cli("build", str(spiky["model"]), "--precision", "int8", "--calib", str(spiky["calib"]), "--max-drop", "0.02",
                   "--metric", "cosine", "--out", str(tmp_path / "text"))
    assert proc.returncode == 0, proc.stderr
    assert "calibration percentile (all layers quantized: minmax 0." in proc.stdout


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_the_fragile_model_still_keeps_conv3_in_float_after_trying_calibration(target: str, tmp_path: Path) -> None:
    assets = fragile_assets(tmp_path)
    outcome = build(BuildConfig(source=str(assets["model"]), precision="int8", calib=assets["calib"], out=tmp_path / "out",
                                target=target, max_drop=0.02, metric="top1", allow_degraded=True))
    mp = outcome.manifest.model_extra["mixed_precision"]
    tried = mp["calibration"]["tried"]
    assert set(tried) >= {"minmax", "percentile"} and all(1 - v > 0.02 for v in tried.values())  # no method alone
    assert "conv3" in mp["float_layers"] and mp["drop"] <= 0.02
    assert mp["calibration"]["method"] == max(tried, key=lambda m: (tried[m], m == "minmax"))  # the best whole model
    assert mp["builds"] <= 5
