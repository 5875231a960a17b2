"""The calibration step of the ``--max-drop`` search (issue 19), on a scripted probe: scores per (method, float
layers), so the search's choices are checked without building models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import METHOD_ORDER, Search
from edgec.core import errors
from tests.support.probes import ScriptedProbe


def _run(probe: ScriptedProbe, methods: tuple[str, ...] = ("minmax", "percentile", "entropy"), **kw):
    return Search(probe, Metric("cosine"), None, 0.02, lambda _: None, methods=methods, **kw).run()  # type: ignore[arg-type]


def test_a_method_that_meets_the_budget_ends_the_search_with_every_layer_quantized() -> None:
    probe = ScriptedProbe({("minmax", frozenset()): 0.90, ("percentile", frozenset()): 0.99}, ["a", "b"])
    result = _run(probe)
    assert result.method == "percentile" and result.float_layers == [] and result.calibrations == {"minmax": 0.9, "percentile": 0.99}
    assert probe.built == [("minmax", frozenset()), ("percentile", frozenset())]


def test_the_layer_search_runs_on_top_of_the_best_method() -> None:
    scores = {("minmax", frozenset()): 0.90, ("percentile", frozenset()): 0.93, ("entropy", frozenset()): 0.95,
              ("entropy", frozenset({"a"})): 0.99, ("minmax", frozenset({"a"})): 0.995}
    result = _run(probe := ScriptedProbe(scores, ["a", "b"]))
    assert result.method == "entropy" and result.float_layers == ["a"] and result.value == pytest.approx(0.99)
    assert ("minmax", frozenset({"a"})) not in probe.built  # later candidates are calibrated with the winner


def test_a_second_method_is_not_built_when_the_first_changed_nothing() -> None:
    scores = {("minmax", frozenset()): 0.90, ("percentile", frozenset()): 0.9001, ("minmax", frozenset({"a"})): 0.99}
    result = _run(probe := ScriptedProbe(scores, ["a", "b"]))
    assert result.method is None and result.float_layers == ["a"]  # the build's own method: a noise-sized gain does not switch
    assert [m for m, layers in probe.built if not layers] == ["minmax", "percentile"]


def test_method_builds_count_against_max_builds_and_the_failure_names_the_method() -> None:
    scores = {("minmax", frozenset()): 0.90, ("percentile", frozenset()): 0.95}
    with pytest.raises(errors.AccuracyGateError, match=r"with 0 layers in float \(none\), calibrated with percentile; "
                                                       r"--max-builds 2 reached after 2 builds"):
        _run(ScriptedProbe(scores, ["a"]), max_builds=2)


def test_without_methods_the_search_never_tries_another_calibration() -> None:
    scores = {("minmax", frozenset()): 0.90, ("minmax", frozenset({"a"})): 0.99}
    result = _run(probe := ScriptedProbe(scores, ["a"]), methods=())
    assert result.calibrations == {} and {m for m, _ in probe.built} == {"minmax"}


def test_targets_offer_only_the_methods_that_change_their_models(tmp_path: Path) -> None:
    from edgec.calibration.dataset import CalibrationSet
    from edgec.compiler.pipeline import get_target
    from edgec.core.types import ModelArtifact, TensorSpec
    from edgec.targets.base import PrecisionRequest
    from tests.support.models import make_conv_onnx

    spec = TensorSpec("x", ("batch", 3, 8, 8), "float32")
    calib = CalibrationSet.from_arrays({"x": np.zeros((4, 3, 8, 8), np.float32)}, (spec,))
    art = ModelArtifact(make_conv_onnx(tmp_path / "m.onnx"), "onnx", (spec,), (TensorSpec("logits", ("batch", 10), "float32"),), "0")
    static = PrecisionRequest("int8", "auto", calib)
    assert get_target("onnx").searched_methods(static, art) == ("minmax", "percentile")  # entropy == minmax in onnxruntime
    assert get_target("openvino").searched_methods(static, art) == ("minmax", "entropy", "percentile")
    assert get_target("tflite").searched_methods(static, art) == ()  # its converter has one way to calibrate
    assert get_target("onnx").searched_methods(PrecisionRequest("int8", "dynamic", calib), art) == ()
    assert get_target("openvino").searched_methods(PrecisionRequest("int8", "auto", None), art) == ()
    assert set(METHOD_ORDER) == {"minmax", "entropy", "percentile"}
