"""``--max-drop`` on models built to have the property under test (issue 19): layers named by the op that owns
them, a search that converges, a budget measured on held-out data, and metrics that fit the task.

The search's logic is tested with a scripted probe (scores per set of float layers, a fixed ranking), so
that the cases NNCF's accuracy-aware quantization handles (a pick that hurts, picks that only help
together, nothing that helps) are each one small test; real builds check the rest end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.compiler import fidelity_stage
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.types import TensorSpec
from edgec.frameworks import fidelity
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_fragile

CHANNELS = 8


def _save(nodes: list, inits: list, inputs: list, outputs: list, path: Path) -> Path:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_head(path: Path, head: str) -> Path:
    """A conv, pooling and a dense head: ``sigmoid`` gives one score ``(batch, 1)``; ``ctc`` gives per-time-step
    class scores ``(batch, 16, 6)`` (time along the image's width, as a text recognizer)."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((CHANNELS, 1, 3, 3)) / 3).astype(np.float32)
    inits = [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "conv.bias")]
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    if head == "sigmoid":
        inits.append(numpy_helper.from_array((rng.standard_normal((CHANNELS, 1)) * 2).astype(np.float32), "fc.weight"))
        nodes += [helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
                  helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
                  helper.make_node("MatMul", ["f", "fc.weight"], ["z"], name="fc"),
                  helper.make_node("Sigmoid", ["z"], ["score"], name="sigmoid")]
        out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])
    else:
        inits.append(numpy_helper.from_array((rng.standard_normal((CHANNELS, 6)) * 2).astype(np.float32), "fc.weight"))
        nodes += [helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0, name="pool"),
                  helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1], name="time_major"),
                  helper.make_node("MatMul", ["t", "fc.weight"], ["z"], name="fc"),
                  helper.make_node("Softmax", ["z"], ["probs"], axis=-1, name="softmax")]
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 16, 6])
    return _save(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 16])], [out], path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("max-drop")
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.standard_normal((64, 3, 8, 8)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.standard_normal((20, 3, 8, 8)).astype(np.float32))
    np.savez(folder / "heads.npz", x=rng.standard_normal((32, 1, 8, 16)).astype(np.float32))
    return {"relu6": make_fragile(folder / "relu6.onnx", relu6=True), "sigmoid": make_head(folder / "sigmoid.onnx", "sigmoid"),
            "ctc": make_head(folder / "ctc.onnx", "ctc"), "calib": folder / "calib.npz", "eval": folder / "eval.npz",
            "heads": folder / "heads.npz", "dir": folder}


# ---- 1. layer identity ---------------------------------------------------------------------------------


def test_clips_sharing_one_constant_take_the_layer_of_their_own_conv(assets) -> None:
    names = fidelity.layer_names(onnx.load(str(assets["relu6"])))
    assert {names[f"clip{i}"] for i in range(1, 7)} == {f"conv{i}" for i in range(1, 7)}
    assert names["clip3"] == names["conv3"] == "conv3"
    assert "min_val_cast" not in names.values() and "max_val_cast" not in names.values()


def test_max_drop_on_relu6_keeps_only_the_fragile_convs_and_their_clips_in_float(assets, tmp_path: Path) -> None:
    outcome = build(BuildConfig(source=str(assets["relu6"]), precision="int8", calib=assets["calib"], out=tmp_path,
                                max_drop=0.02, metric="cosine"))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02 >= mp["drop"]
    assert mp["float_layers"] == ["conv3", "conv2"]
    assert set(mp["float_nodes"]) == {"conv2", "clip2", "conv3", "clip3"}  # not every Clip that reads min_val_cast
    assert mp["builds"] == 4  # the all-quantized model with minmax, with percentile and with quantize_ops=compute
    # (onnxruntime's list quantizes the same nodes here: no build), and the first group measured




def test_constant_nodes_are_not_producers_a_float_layer_drags_along(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "conv.weight")
    bound = helper.make_tensor("bound", TensorProto.FLOAT, [], [6.0])
    nodes = [helper.make_node("Constant", [], ["six"], value=bound, name="six_const"),
             helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv"),
             helper.make_node("Clip", ["c", "", "six"], ["y"], name="clip")]
    model = onnx.load(str(_save(nodes, [w], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], tmp_path / "m.onnx")))
    names = fidelity.layer_names(model)
    assert names["clip"] == "conv"
    assert fidelity.input_layers(model, names, "conv") == []




# ---- 2. convergence (a scripted probe) -------------------------------------------------------------------




# ---- 3. where it measures --------------------------------------------------------------------------------


def _indexed(count: int) -> CalibrationSet:
    """Sample i holds the value i everywhere."""
    spec = TensorSpec("x", ("batch", 2), "float32")
    return CalibrationSet.from_arrays({"x": np.repeat(np.arange(count, dtype=np.float32)[:, None], 2, axis=1)}, (spec,))


def _values(data) -> list[int]:
    arrays = data.arrays["x"] if isinstance(data, CalibrationSet) else np.stack([f["x"] for f in data])
    return [int(v) for v in arrays.reshape(len(arrays), -1)[:, 0]]


def test_a_quarter_of_the_calibration_samples_is_held_out_spread_evenly(tmp_path: Path) -> None:
    config = BuildConfig(source="m.onnx", precision="int8", calib=tmp_path / "c.npz", max_drop=0.01, out=tmp_path)
    calibration, held = fidelity_stage.hold_out(_indexed(64), config, lambda _: None)
    assert _values(held) == list(range(0, 64, 4))
    assert _values(calibration) == [i for i in range(64) if i % 4]
    assert calibration.digest == _indexed(64).select([i for i in range(64) if i % 4]).digest


def test_calib_samples_keeps_its_draw_and_holds_out_from_the_unused_samples(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.arange(100, dtype=np.float32)[:, None].repeat(2, axis=1))
    spec = (TensorSpec("x", ("batch", 2), "float32"),)
    config = BuildConfig(source="m.onnx", precision="int8", calib=path, calib_samples=40, max_drop=0.01, out=tmp_path)
    full = load_calibration(path, spec, samples=fidelity_stage.calibration_samples(config))
    calibration, held = fidelity_stage.hold_out(full, config, lambda _: None)
    assert calibration.digest == load_calibration(path, spec, samples=40).digest  # the plain build's subset
    assert len(held) == 60 and not set(_values(held)) & set(_values(calibration))


def test_too_few_calibration_samples_to_hold_out_asks_for_eval(assets, tmp_path: Path) -> None:
    np.savez(tmp_path / "small.npz", x=np.zeros((12, 3, 8, 8), np.float32))
    proc = run_cli("build", str(assets["relu6"]), "--precision", "int8", "--calib", str(tmp_path / "small.npz"),
                   "--max-drop", "0.01", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "--eval")
    assert not (tmp_path / "out").exists()


def test_max_drop_measures_on_eval_data_when_given_and_calibrates_on_everything(assets, tmp_path: Path) -> None:
    outcome = build(BuildConfig(source=str(assets["relu6"]), precision="int8", calib=assets["calib"], eval=assets["eval"],
                                out=tmp_path, max_drop=0.02, metric="cosine", metric_reduce="min"))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert (mp["measured_on"], mp["samples"], mp["reduce"]) == ("eval", 20, "min")
    assert outcome.manifest.calibration["samples"] == 64




def test_a_bad_metric_reduce_is_one_line_before_anything_runs(assets) -> None:
    proc = run_cli("build", str(assets["relu6"]), "--precision", "int8", "--max-drop", "0.01", "--metric-reduce", "p120")
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--metric-reduce")


# ---- 4. metrics that fit the task -----------------------------------------------------------------------


def test_top1_on_a_single_sigmoid_output_is_refused_before_building(assets, tmp_path: Path) -> None:
    proc = run_cli("build", str(assets["sigmoid"]), "--precision", "int8", "--calib", str(assets["heads"]),
                   "--max-drop", "0.01", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--metric decision")
    assert "one column" in proc.stderr and not (tmp_path / "out").exists()




def test_max_drop_with_decision_on_a_sigmoid_model_records_its_threshold(assets, tmp_path: Path) -> None:
    outcome = build(BuildConfig(source=str(assets["sigmoid"]), precision="int8", calib=assets["heads"], out=tmp_path,
                                max_drop=0.2, metric="decision", threshold=0.4))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert (mp["metric"], mp["threshold"], mp["measured_on"], mp["samples"]) == ("decision", 0.4, "held-out calibration", 8)




def test_max_drop_takes_a_metric_function_from_a_module(assets, tmp_path: Path) -> None:
    proc = run_cli("build", str(assets["ctc"]), "--precision", "int8", "--calib", str(assets["heads"]), "--max-drop", "0.05",
                   "--metric", "edgec.benchmarks.zoo.ctc_metric:char_accuracy", "--metric-reduce", "min", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "mixed precision: edgec.benchmarks.zoo.ctc_metric:char_accuracy (min)" in proc.stdout
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["mixed_precision"]["metric"] == "edgec.benchmarks.zoo.ctc_metric:char_accuracy"


def test_a_metric_function_that_cannot_be_imported_is_one_line(assets, tmp_path: Path) -> None:
    proc = run_cli("build", str(assets["ctc"]), "--precision", "int8", "--calib", str(assets["heads"]), "--max-drop", "0.05",
                   "--metric", "no_such_pkg.metrics:cer", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "no_such_pkg")
    assert not (tmp_path / "out").exists()



# ---- 5. memory -----------------------------------------------------------------------------------------


def test_layer_comparison_memory_does_not_grow_with_the_sample_count(tmp_path: Path) -> None:
    """Tensors are compared one sample at a time (before: every sample's tensors of both models, in float64)."""
    import tracemalloc

    from edgec.benchmarks.fidelity_memory import prepare

    reference, candidate, data = prepare(tmp_path, channels=4, depth=3, samples=16)
    x = np.load(data)["x"]
    peaks = {}
    for count in (2, 16):
        tracemalloc.start()
        fidelity.layer_divergence(reference, candidate, [{"x": x[i:i + 1]} for i in range(count)])
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    one_sample_tensors = 6 * 4 * 48 * 320 * 4  # six float32 tensors of 4x48x320 per model
    assert peaks[16] < peaks[2] + one_sample_tensors, peaks
