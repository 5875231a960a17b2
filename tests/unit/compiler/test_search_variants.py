"""The target-variant step of the ``--max-drop`` search (issue 19), on a scripted probe: scores per (method, variant,
float layers), so the search's choices are checked without building models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Candidate, Search
from edgec.core import errors
from tests.support.probes import ScriptedProbe

OWN, ORT, COMPUTE = "quantize_ops=default", "quantize_ops=onnxruntime", "quantize_ops=compute"
VARIANTS = (OWN, ORT, COMPUTE)
Scores = dict[tuple[str, str, frozenset[str]], float]


class VariantProbe(ScriptedProbe):
    """Scores per (method, variant, float layers); ``built`` lists each (method, variant, layers) built, once."""

    def __init__(self, scores: Scores, ranking: list[str]) -> None:
        super().__init__({}, ranking)
        self.variant_scores = scores
        self.built_variants: list[tuple[str, str, frozenset[str]]] = []

    def build(self, exclude: tuple[str, ...], method: str | None = None, variant: str | None = None) -> Candidate:
        key = (method or "minmax", variant or OWN, frozenset(exclude))
        if key not in self.built_variants:
            self.built_variants.append(key)
        return Candidate(tuple(sorted(exclude)), Path("/nowhere/model"), None, method, variant=variant)  # type: ignore[arg-type]

    @property
    def builds(self) -> int:
        return len(self.built_variants)

    def seen(self, candidate: Candidate) -> bool:
        return False

    def run(self, candidate: Candidate) -> list[dict[str, np.ndarray]]:
        key = (candidate.method or "minmax", candidate.variant or OWN, frozenset(candidate.exclude))
        value = self.variant_scores.get(key, self.default)
        return [{"y": np.array([value, np.sqrt(1 - value**2)])} for _ in range(4)]


def _run(probe: VariantProbe, methods: tuple[str, ...] = ("minmax", "percentile"), variants: tuple[str, ...] = VARIANTS, **kw):
    return Search(probe, Metric("cosine"), None, 0.02, lambda _: None, methods=methods, variants=variants, **kw).run()  # type: ignore[arg-type]


def test_a_variant_that_meets_the_budget_beats_layers_in_float() -> None:
    probe = VariantProbe({("minmax", OWN, frozenset()): 0.90, ("percentile", OWN, frozenset()): 0.92,
                          ("percentile", ORT, frozenset()): 0.99, ("percentile", OWN, frozenset({"a"})): 0.999}, ["a"])
    result = _run(probe)
    assert result.variant == ORT and result.method == "percentile" and result.float_layers == []
    assert result.variants == {OWN: 0.92, ORT: 0.99}  # compute is not built: the first within the budget ends it
    assert probe.built_variants == [("minmax", OWN, frozenset()), ("percentile", OWN, frozenset()),
                                    ("percentile", ORT, frozenset())]


def test_a_method_that_meets_the_budget_builds_no_variant() -> None:
    probe = VariantProbe({("minmax", OWN, frozenset()): 0.90, ("percentile", OWN, frozenset()): 0.99}, ["a"])
    result = _run(probe)
    assert result.variant is None and result.method == "percentile" and result.variants == {OWN: 0.99}
    assert probe.builds == 2


def test_a_variant_that_misses_the_budget_is_not_what_the_layer_search_starts_from() -> None:
    scores: Scores = {("minmax", OWN, frozenset()): 0.90, ("minmax", ORT, frozenset()): 0.91, ("minmax", COMPUTE, frozenset()): 0.95,
              ("minmax", COMPUTE, frozenset({"a"})): 0.95, ("minmax", OWN, frozenset({"a"})): 0.99}
    result = _run(probe := VariantProbe(scores, ["a", "b"]), methods=())
    assert result.variant is None and result.float_layers == ["a"] and result.value == pytest.approx(0.99)
    assert result.variants == {OWN: 0.90, ORT: 0.91, COMPUTE: 0.95}
    assert ("minmax", COMPUTE, frozenset({"a"})) not in probe.built_variants  # YOLOv8n: compute's layers gained nothing
    assert [s["variant"] for s in result.steps] == [OWN, ORT, COMPUTE, OWN]


def test_a_failed_search_names_the_best_model_it_saw_even_an_other_variant() -> None:
    scores: Scores = {("minmax", OWN, frozenset()): 0.90, ("minmax", COMPUTE, frozenset()): 0.95}
    with pytest.raises(errors.AccuracyGateError, match=r"0\.9500 .*built with quantize_ops=compute; no candidate layer helped"):
        _run(VariantProbe(scores, ["a"]), methods=())


def test_variant_builds_count_against_max_builds_and_the_failure_names_the_variant() -> None:
    scores: Scores = {("minmax", OWN, frozenset()): 0.90, ("percentile", OWN, frozenset()): 0.90, ("minmax", ORT, frozenset()): 0.95}
    with pytest.raises(errors.AccuracyGateError, match=r"\(none\), built with quantize_ops=onnxruntime; --max-builds 3 reached"):
        _run(VariantProbe(scores, ["a"]), max_builds=3)


def test_onnx_offers_its_op_lists_only_when_the_user_chose_none(tmp_path: Path) -> None:
    from edgec.calibration.dataset import CalibrationSet
    from edgec.compiler.pipeline import get_target
    from edgec.core.types import ModelArtifact, TensorSpec
    from edgec.targets.base import PrecisionRequest, target_options
    from tests.support.models import make_conv_onnx

    spec = TensorSpec("x", ("batch", 3, 8, 8), "float32")
    calib = CalibrationSet.from_arrays({"x": np.zeros((4, 3, 8, 8), np.float32)}, (spec,))
    art = ModelArtifact(make_conv_onnx(tmp_path / "m.onnx"), "onnx", (spec,), (TensorSpec("logits", ("batch", 10), "float32"),), "0")
    onnx = get_target("onnx")
    offered = onnx.searched_variants(PrecisionRequest("int8", "auto", calib, options=target_options("onnx", ())), art)
    assert [label for label, _ in offered] == list(VARIANTS)
    assert [options.quantize_ops for _, options in offered] == ["default", "onnxruntime", "compute"]  # type: ignore[attr-defined]
    assert [label for label, _ in onnx.searched_variants(PrecisionRequest("int8", "auto", calib), art)] == list(VARIANTS)
    explicit = target_options("onnx", [("quantize_ops", "default")])
    assert onnx.searched_variants(PrecisionRequest("int8", "auto", calib, options=explicit), art) == ()
    assert onnx.searched_variants(PrecisionRequest("int8", "dynamic", calib), art) == ()
    assert onnx.searched_variants(PrecisionRequest("int8", "auto", None), art) == ()  # dynamic without data
    assert onnx.searched_variants(PrecisionRequest("fp16", "auto", calib), art) == ()
    assert get_target("openvino").searched_variants(PrecisionRequest("int8", "auto", calib), art) == ()
