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

from edgec.benchmarks.zoo import ctc_metric
from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.compiler import fidelity_stage
from edgec.compiler.config import BuildConfig
from edgec.compiler.metrics import Metric, reduce_scores
from edgec.compiler.mixed_precision import Candidate, Search
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.types import TensorSpec
from edgec.frameworks import fidelity
from edgec.frameworks.fidelity import ErrorSums, LayerDivergence, NodeInfo
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
    assert mp["builds"] == 3  # the all-quantized model with minmax and with percentile, and the first group measured


def test_constants_and_shape_ops_are_never_layers() -> None:
    nodes = [NodeInfo("w", "Constant", "w", "w_out", ()), NodeInfo("conv", "Conv", "conv", "c", ("x", "w_out")),
             NodeInfo("shape", "Shape", "shape", "s", ("c",)), NodeInfo("cast", "Cast", "cast", "k", ("c",)),
             NodeInfo("relu", "Relu", "conv", "r", ("k",))]
    ranked = fidelity.rank_errors(nodes, {"w_out": (0.5, 0.9), "c": (0.7, 0.8), "s": (0.0, 1.0), "k": (0.7, 0.8), "r": (0.75, 0.8)})
    assert [d.node for d in ranked] == ["conv", "relu"]
    assert ranked[0].growth == pytest.approx(0.7)  # a weight's error is the error its reader adds
    assert ranked[1].growth == pytest.approx(0.05)  # the Cast passes the conv's error on


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


def test_streamed_sums_give_the_errors_of_the_whole_tensors() -> None:
    rng = np.random.default_rng(3)
    ref = [rng.standard_normal(50) for _ in range(4)]
    got = [r + 0.1 * rng.standard_normal(50) for r in ref]
    sums = ErrorSums()
    for r, g in zip(ref, got):
        sums.add("t", r, g)
    a, b = np.concatenate(ref), np.concatenate(got)
    err, cos = sums.errors()["t"]
    assert err == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-12)
    assert cos == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-12)


# ---- 2. convergence (a scripted probe) -------------------------------------------------------------------


class ScriptedProbe:
    """Scores per set of float layers, a fixed per-layer ranking; ``cosine`` reads the score back."""

    def __init__(self, scores: dict[frozenset[str], float], ranking: list[str], default: float = 0.9) -> None:
        self.scores, self.ranking, self.default = scores, ranking, default
        self._built: dict[tuple[str, ...], Candidate] = {}
        self.reference_outputs = [{"y": np.array([1.0, 0.0])} for _ in range(4)]

    @property
    def builds(self) -> int:
        return len(self._built)

    def build(self, exclude: tuple[str, ...]) -> Candidate:
        key = tuple(sorted(exclude))
        return self._built.setdefault(key, Candidate(key, Path("/nowhere/model"), None))  # type: ignore[arg-type]

    def run(self, candidate: Candidate) -> list[dict[str, np.ndarray]]:
        value = self.scores.get(frozenset(candidate.exclude), self.default)
        return [{"y": np.array([value, np.sqrt(1 - value**2)])} for _ in range(4)]

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        return [LayerDivergence(x, "Conv", x, x, 0.1, 0.9, 0.1 - i / 100) for i, x in enumerate(self.ranking)]

    def group(self, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        return [layer]

    def nodes(self, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        return tuple(layers)


def _search(probe: ScriptedProbe, max_drop: float = 0.02, **kw) -> Search:
    return Search(probe, Metric("cosine"), None, max_drop, lambda _: None, **kw)  # type: ignore[arg-type]


def test_a_first_ranked_layer_that_hurts_is_measured_and_dropped() -> None:
    probe = ScriptedProbe({frozenset(): 0.95, frozenset({"bad"}): 0.938, frozenset({"good"}): 0.99}, ["bad", "good", "other"])
    result = _search(probe).run()
    assert result.float_layers == ["good"] and result.value == pytest.approx(0.99)
    assert [s["float_layers"] for s in result.steps] == [[], ["bad"], ["good"]]  # stops at the first within budget
    assert result.builds == 3


def test_layers_that_only_help_together_are_combined_one_at_a_time() -> None:
    scores = {frozenset(): 0.95, frozenset({"a"}): 0.96, frozenset({"b"}): 0.97, frozenset({"c"}): 0.94,
              frozenset({"a", "b"}): 0.985}
    result = _search(probe := ScriptedProbe(scores, ["a", "b", "c"])).run()
    assert sorted(result.float_layers) == ["a", "b"] and result.value == pytest.approx(0.985)
    assert result.steps[-1]["float_layers"] == ["b", "a"]  # the best single first, then the other helper
    assert probe.builds == 5


@pytest.mark.parametrize("others", [0.94, 0.95001])  # worse, or better by noise (0.02% of the gap)
def test_the_search_stops_when_no_candidate_helps_and_names_why(others: float) -> None:
    probe = ScriptedProbe({frozenset(): 0.95}, ["a", "b", "c", "d", "e"], default=others)
    with pytest.raises(errors.AccuracyGateError, match=r"best drop 0\.0500 .* with 0 layers in float \(none\); "
                                                       r"no candidate layer helped after 4 builds"):
        _search(probe).run()


def test_the_search_never_ends_worse_than_the_best_it_saw() -> None:
    scores = {frozenset(): 0.95, frozenset({"a"}): 0.97, frozenset({"b"}): 0.96, frozenset({"a", "b"}): 0.90}
    with pytest.raises(errors.AccuracyGateError, match=r"cosine 0\.9700 vs fp32 1\.0000\) with 1 layer in float \(a\)"):
        _search(ScriptedProbe(scores, ["a", "b"], default=0.9)).run()


def test_the_search_builds_at_most_max_builds_candidates() -> None:
    probe = ScriptedProbe({frozenset(): 0.9}, [f"l{i}" for i in range(20)], default=0.91)
    with pytest.raises(errors.AccuracyGateError, match="--max-builds 3 reached after 3 builds"):
        _search(probe, max_builds=3).run()
    assert probe.builds == 3


def test_the_search_keeps_at_most_max_float_layers_in_float() -> None:
    scores = {frozenset(): 0.9, frozenset({"a"}): 0.95, frozenset({"b"}): 0.93, frozenset({"a", "b"}): 0.99}
    with pytest.raises(errors.AccuracyGateError, match=r"1 layer in float \(a\); --max-float-layers 1 reached after 4 builds"):
        _search(ScriptedProbe(scores, ["a", "b", "c"]), max_float_layers=1).run()


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


def test_the_worst_sample_and_a_percentile_show_what_the_mean_hides() -> None:
    reference = [{"y": np.array([1.0, 0.0])} for _ in range(64)]
    outputs = [{"y": np.array([1.0, 0.0])} for _ in range(63)] + [{"y": np.array([0.97, np.sqrt(1 - 0.97**2)])}]
    assert Metric("cosine").score(reference, outputs) > 0.9995
    assert Metric("cosine", "min").score(reference, outputs) == pytest.approx(0.97)
    assert Metric("cosine", "p1").score(reference, outputs) == pytest.approx(0.97)
    assert Metric("cosine", "p5").score(reference, outputs) == pytest.approx(1.0)
    with pytest.raises(errors.ConfigError, match="one score per sample"):
        reduce_scores(np.array(0.5), "min", "fn")


def test_a_bad_metric_reduce_is_one_line_before_anything_runs(assets) -> None:
    proc = run_cli("build", str(assets["relu6"]), "--precision", "int8", "--max-drop", "0.01", "--metric-reduce", "p120")
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--metric-reduce")


# ---- 4. metrics that fit the task -----------------------------------------------------------------------


def test_top1_on_a_single_sigmoid_output_is_refused_before_building(assets, tmp_path: Path) -> None:
    proc = run_cli("build", str(assets["sigmoid"]), "--precision", "int8", "--calib", str(assets["heads"]),
                   "--max-drop", "0.01", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--metric decision")
    assert "one column" in proc.stderr and not (tmp_path / "out").exists()


def test_decision_agreement_counts_values_on_the_same_side_of_the_threshold() -> None:
    reference = [{"s": np.array([[0.4], [0.6]])}, {"s": np.array([[0.9], [0.1]])}]
    outputs = [{"s": np.array([[0.55], [0.6]])}, {"s": np.array([[0.8], [0.2]])}]
    assert Metric("decision").score(reference, outputs) == pytest.approx(0.75)
    assert Metric("decision", "min").score(reference, outputs) == pytest.approx(0.5)
    assert Metric("decision", threshold=0.3).score(reference, outputs) == pytest.approx(1.0)


def test_max_drop_with_decision_on_a_sigmoid_model_records_its_threshold(assets, tmp_path: Path) -> None:
    outcome = build(BuildConfig(source=str(assets["sigmoid"]), precision="int8", calib=assets["heads"], out=tmp_path,
                                max_drop=0.2, metric="decision", threshold=0.4))
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert (mp["metric"], mp["threshold"], mp["measured_on"], mp["samples"]) == ("decision", 0.4, "held-out calibration", 8)


def test_ctc_char_accuracy_decodes_greedily_and_scores_one_minus_cer() -> None:
    def frames(labels: list[int]) -> np.ndarray:
        return np.eye(4)[labels][None]  # (1, T, 4), class 0 the blank

    assert ctc_metric.greedy_decode(frames([1, 1, 0, 1, 2, 2, 0, 0, 3])) == [[1, 1, 2, 3]]
    assert ctc_metric.edit_distance([1, 2, 3], [1, 3]) == 1
    reference = [{"p": frames([1, 0, 2, 0, 3, 3])}, {"p": frames([1, 2])}]
    candidate = [{"p": frames([1, 0, 2, 2, 0, 3])}, {"p": frames([1, 1])}]  # same text; one substitution
    assert ctc_metric.char_accuracy(reference, candidate) == [1.0, 0.5]


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
