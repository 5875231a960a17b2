"""``--max-drop`` without building models (issue 19): layer identity, streamed error sums, metrics and the
search on a scripted probe. The builds are in tests/integration/compiler/test_max_drop.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.benchmarks.zoo import ctc_metric
from edgec.compiler.metrics import Metric, reduce_scores
from edgec.compiler.mixed_precision import Search
from edgec.core import errors
from edgec.frameworks import fidelity
from edgec.frameworks.fidelity import ErrorSums, NodeInfo
from tests.support.probes import ScriptedProbe


def test_constants_and_shape_ops_are_never_layers() -> None:
    nodes = [NodeInfo("w", "Constant", "w", "w_out", ()), NodeInfo("conv", "Conv", "conv", "c", ("x", "w_out")),
             NodeInfo("shape", "Shape", "shape", "s", ("c",)), NodeInfo("cast", "Cast", "cast", "k", ("c",)),
             NodeInfo("relu", "Relu", "conv", "r", ("k",))]
    ranked = fidelity.rank_errors(nodes, {"w_out": (0.5, 0.9), "c": (0.7, 0.8), "s": (0.0, 1.0), "k": (0.7, 0.8), "r": (0.75, 0.8)})
    assert [d.node for d in ranked] == ["conv", "relu"]
    assert ranked[0].growth == pytest.approx(0.7)  # a weight's error is the error its reader adds
    assert ranked[1].growth == pytest.approx(0.05)  # the Cast passes the conv's error on


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


def test_the_worst_sample_and_a_percentile_show_what_the_mean_hides() -> None:
    reference = [{"y": np.array([1.0, 0.0])} for _ in range(64)]
    outputs = [{"y": np.array([1.0, 0.0])} for _ in range(63)] + [{"y": np.array([0.97, np.sqrt(1 - 0.97**2)])}]
    assert Metric("cosine").score(reference, outputs) > 0.9995
    assert Metric("cosine", "min").score(reference, outputs) == pytest.approx(0.97)
    assert Metric("cosine", "p1").score(reference, outputs) == pytest.approx(0.97)
    assert Metric("cosine", "p5").score(reference, outputs) == pytest.approx(1.0)
    with pytest.raises(errors.ConfigError, match="one score per sample"):
        reduce_scores(np.array(0.5), "min", "fn")


def test_decision_agreement_counts_values_on_the_same_side_of_the_threshold() -> None:
    reference = [{"s": np.array([[0.4], [0.6]])}, {"s": np.array([[0.9], [0.1]])}]
    outputs = [{"s": np.array([[0.55], [0.6]])}, {"s": np.array([[0.8], [0.2]])}]
    assert Metric("decision").score(reference, outputs) == pytest.approx(0.75)
    assert Metric("decision", "min").score(reference, outputs) == pytest.approx(0.5)
    assert Metric("decision", threshold=0.3).score(reference, outputs) == pytest.approx(1.0)


def test_ctc_char_accuracy_decodes_greedily_and_scores_one_minus_cer() -> None:
    def frames(labels: list[int]) -> np.ndarray:
        return np.eye(4)[labels][None]  # (1, T, 4), class 0 the blank

    assert ctc_metric.greedy_decode(frames([1, 1, 0, 1, 2, 2, 0, 0, 3])) == [[1, 1, 2, 3]]
    assert ctc_metric.edit_distance([1, 2, 3], [1, 3]) == 1
    reference = [{"p": frames([1, 0, 2, 0, 3, 3])}, {"p": frames([1, 2])}]
    candidate = [{"p": frames([1, 0, 2, 2, 0, 3])}, {"p": frames([1, 1])}]  # same text; one substitution
    assert ctc_metric.char_accuracy(reference, candidate) == [1.0, 0.5]


def test_candidates_that_build_a_model_already_measured_do_not_use_up_max_builds() -> None:
    # keeping "mul" or "mul2" in float changes nothing (the target leaves them float already): 3 builds still
    # reach "good", ranked fourth, where counting every export would stop at the --max-builds 3 before it
    same = {frozenset({"mul"}): frozenset(), frozenset({"mul2"}): frozenset()}
    scores = {frozenset(): 0.95, frozenset({"good"}): 0.99}
    probe = ScriptedProbe(scores, ["mul", "mul2", "bad", "good"], default=0.94, same=same)
    logs: list[str] = []
    result = Search(probe, Metric("cosine"), None, 0.02, logs.append, max_builds=3).run()  # type: ignore[arg-type]
    assert result.float_layers == ["good"] and result.builds == 3
    assert sum("same model as an earlier candidate" in line for line in logs) == 2
