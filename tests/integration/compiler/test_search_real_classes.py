"""``--max-drop`` failure classes first seen on the zoo's real models (issue 19), each on a tiny inline graph.

- **A budget met exactly.** A task metric that is a share of counts (YOLOv8's detection agreement: 19 of 20
  anchors) gives 0.95; ``1 - 0.95`` is ``0.050000000000000044`` in floats, so ``--max-drop 0.05`` was
  "missed" by rounding and the search built on until it gave up (exit 7, "best drop 0.0500").
- **``--eval`` with a setting.** Silero VAD takes a 0-d ``sr`` input; the zoo's data holds it and the build
  sets it with ``--input-value sr=16000`` (and folds it into the graph). Calibration reads such data, but
  ``--eval`` refused it (exit 6, "unknown 'sr'") or, unfolded, asked for an ``sr`` array the user had given
  as a value.
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

SCORE = 0.95


def make_net(folder: Path, with_rate: bool = False) -> Path:
    """Two 16x16 MatMul+Relu layers on ``x`` (batch, 16); with ``with_rate`` a 0-d int64 ``sr`` input scales
    the output by ``sr / 16000`` (a sample-rate setting, as Silero VAD takes)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), f"fc{i}.weight") for i in (1, 2)]
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "fc2.weight"], ["h2"], name="fc2")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])]
    if with_rate:
        inits.append(numpy_helper.from_array(np.array(16000.0, np.float32), "rate"))
        nodes += [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
                  helper.make_node("Div", ["srf", "rate"], ["scale"], name="div"),
                  helper.make_node("Mul", ["h2", "scale"], ["y"], name="scale_out")]
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    else:
        nodes.append(helper.make_node("Identity", ["h2"], ["y"], name="out"))
    graph = helper.make_graph(nodes, "net", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / ("rate.onnx" if with_rate else "net.onnx")
    onnx.save(model, str(path))
    return path


def write_data(folder: Path, with_rate: bool = False) -> tuple[Path, Path]:
    """32 calibration and 8 evaluation samples of ``x`` (plus ``sr`` = 16000 per sample, as the zoo writes it)."""
    paths = []
    for name, count, seed in (("calib", 32, 0), ("eval", 8, 1)):
        arrays = {"x": np.random.default_rng(seed).standard_normal((count, 1, 16)).astype(np.float32)}
        if with_rate:
            arrays["sr"] = np.full(count, 16000, np.int64)
        np.savez(folder / f"{name}.npz", **arrays)
        paths.append(folder / f"{name}.npz")
    return paths[0], paths[1]


def test_a_drop_equal_to_the_budget_up_to_float_rounding_meets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a task metric that scores any reduced-precision output 0.95 per sample (19 of 20 detections kept)
    (tmp_path / "share_metric.py").write_text(
        "import numpy as np\n"
        "def score(reference, candidate):\n"
        f"    return [1.0 if all(np.array_equal(r[k], c[k]) for k in r) else {SCORE} for r, c in zip(reference, candidate)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calib, held = write_data(tmp_path)
    assert 1.0 - SCORE > 0.05  # the rounding this is about
    outcome = build(BuildConfig(source=str(make_net(tmp_path)), precision="int8", calib=calib, eval=held, out=tmp_path / "out",
                                max_drop=0.05, metric="share_metric:score"))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["value"] == SCORE and mp["float_layers"] == [] and mp["builds"] == 1  # the all-INT8 model, first build


@pytest.mark.parametrize("fold", [True, False])
def test_eval_data_holding_a_setting_given_with_input_value_is_read_as_calibration_reads_it(tmp_path: Path, fold: bool) -> None:
    calib, held = write_data(tmp_path, with_rate=True)
    if not fold:  # unfolded: the data need not hold the setting
        np.savez(held, x=np.load(held)["x"])
    outcome = build(BuildConfig(source=str(make_net(tmp_path, with_rate=True)), precision="int8", calib=calib, eval=held,
                                out=tmp_path / "out", max_drop=0.05, metric="cosine", input_values={"sr": 16000},
                                fold_input_values=fold))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["measured_on"] == "eval" and mp["samples"] == 8
    assert mp["drop"] <= 0.05 and mp["value"] > 0.9


def make_branchy(folder: Path) -> Path:
    """``x -> fc1 -> fc2 -> If(sum(x) > -1e9)``, whose branches read fc2's output from the outer scope (as
    Silero VAD's decoder does): the ``If`` has no float input of its own, so the ranking puts all of fc2's
    error on it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), f"fc{i}.weight") for i in (1, 2)]
    inits.append(numpy_helper.from_array(np.array(-1e9, np.float32), "floor"))
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])]
    then = helper.make_graph([helper.make_node("Relu", ["h2"], ["y"], name="then_relu")], "then", [], out)
    other = helper.make_graph([helper.make_node("Neg", ["h2"], ["y"], name="else_neg")], "else", [], out)
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "fc2.weight"], ["h2"], name="fc2"),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
             helper.make_node("Greater", ["total", "floor"], ["cond"], name="positive"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="branch")]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])], out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "branchy.onnx"))
    return folder / "branchy.onnx"


def test_control_flow_and_value_moving_ops_are_never_kept_in_float_on_their_own(tmp_path: Path) -> None:
    calib, held = write_data(tmp_path)
    proc = run_cli("build", str(make_branchy(tmp_path)), "--precision", "int8", "--calib", str(calib), "--eval", str(held),
                   "--max-drop", "0.000001", "--metric", "cosine", "--max-builds", "3", "--out", str(tmp_path / "out"), "-v")
    tried = [line.split("keeping ", 1)[1].split(" in float")[0] for line in proc.stderr.splitlines() if "keeping " in line]
    assert tried, proc.stderr  # the search measured candidates
    assert not [t for t in tried if "branch" in t or "positive" in t], tried  # never the If or its Greater


def test_an_integer_initializer_of_one_op_does_not_name_its_layer() -> None:
    # Silero VAD: a Slice whose int64 starts [0, 1] only it reads was named "..._starts", a layer of its own
    from edgec.frameworks.fidelity import layer_names

    inits = [numpy_helper.from_array(np.array([0, 1], np.int64), "slice_4_starts"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "slice_4_ends"),
             numpy_helper.from_array(np.ones((4, 4), np.float32), "proj.weight")]
    nodes = [helper.make_node("Slice", ["x", "slice_4_starts", "slice_4_ends"], ["s"], name="/stft/Slice_4"),
             helper.make_node("MatMul", ["s", "proj.weight"], ["y"], name="/proj/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    assert layer_names(helper.make_model(graph)) == {"/stft/Slice_4": "/stft/Slice_4", "/proj/MatMul": "proj"}
