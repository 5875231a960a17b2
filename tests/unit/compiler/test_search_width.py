"""The ``--max-drop`` search's round width, layers that read nothing quantized, and models measured twice.

YOLOv8n on openvino (budget 0.02): the error-added ranking put the detect head's convs and twenty ``Swish``
activations first; the groups that helped (the stem conv: 0.9734 -> 0.9781) were 30th and below, out of reach
of three groups a round, and every ``Swish`` was a build that changed nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Search
from edgec.compiler.search_probe import Candidate
from edgec.core.errors import AccuracyGateError
from edgec.frameworks.fidelity import LayerDivergence
from tests.support.probes import ScriptedProbe

LAYERS = [f"head{i}" for i in range(10)] + ["stem", "stage1"]


class Ranked(ScriptedProbe):
    """Every layer adds some error (the base probe's growth reaches 0 at the 11th)."""

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        return [LayerDivergence(x, "Conv", x, x, 0.1, 0.9, 0.1 - i / 1000) for i, x in enumerate(self.ranking)]


def _search(probe: ScriptedProbe, max_builds: int) -> Search:
    return Search(probe, Metric("cosine"), None, 0.02, lambda _: None, max_builds=max_builds)  # type: ignore[arg-type]


def test_a_larger_budget_measures_groups_further_down_the_ranking() -> None:
    scores = {frozenset({"stem"}): 0.97, frozenset({"stage1"}): 0.96, frozenset({"stem", "stage1"}): 0.985}
    small = Ranked(scores, LAYERS, default=0.95)
    search = _search(small, 8)
    with pytest.raises(AccuracyGateError, match="could not meet"):
        search.run()  # 8 builds do not reach the 11th group
    assert ("minmax", frozenset({"stem"})) not in small.built
    large = Ranked(scores, LAYERS, default=0.95)
    result = _search(large, 30).run()
    assert sorted(result.float_layers) == ["stage1", "stem"]
    assert result.value == 0.985
    assert large.builds <= 30


def test_width_is_half_the_builds_left_and_never_below_top_k() -> None:
    probe = ScriptedProbe({}, LAYERS)
    assert _search(probe, 8).width() == 4
    assert _search(probe, 4).width() == 3
    assert _search(probe, 40).width() == 20


class UnquantizedProbe(ScriptedProbe):
    """Ranks ``act*`` layers first, as ops that read no quantized value (``quantized=False``)."""

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        return [LayerDivergence(x, "Swish" if x.startswith("act") else "Conv", x, x, 0.1, 0.9, 0.1 - i / 100,
                                quantized=not x.startswith("act")) for i, x in enumerate(self.ranking)]


def test_layers_that_read_nothing_quantized_are_never_built() -> None:
    probe = UnquantizedProbe({frozenset({"conv"}): 0.99}, ["act0", "act1", "act2", "act3", "conv"], default=0.95)
    result = _search(probe, 4).run()
    assert result.float_layers == ["conv"]
    assert all(not any(x.startswith("act") for x in layers) for _, layers in probe.built)


class CountingProbe(Ranked):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.runs = 0

    def run(self, candidate: Candidate) -> list[dict[str, np.ndarray]]:
        self.runs += 1
        return super().run(candidate)


def test_a_model_measured_before_is_not_run_again() -> None:
    same = {frozenset({f"head{i}"}): frozenset() for i in range(10)}  # keeping a head op float changes nothing
    probe = CountingProbe({frozenset({"stem"}): 0.99}, LAYERS, default=0.95, same=same)
    result = _search(probe, 8).run()
    assert result.float_layers == ["stem"]
    assert len(probe.built) > probe.builds  # the same-model builds were made ...
    assert probe.runs == probe.builds  # ... but only distinct models ran
