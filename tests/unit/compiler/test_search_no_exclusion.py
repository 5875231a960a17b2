"""A build whose target cannot keep layers in float (tflite's dynamic-range INT8, which ``--int8-mode auto`` picks
for an LSTM model such as Resemblyzer) ends the ``--max-drop`` search with exit 7, the best score reached and why
(issue 19): it failed with exit 4 and no score after 739 s of building."""

from __future__ import annotations

import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Search
from edgec.compiler.search_probe import Candidate
from edgec.core.errors import AccuracyGateError, UnsupportedError
from tests.support.probes import ScriptedProbe


class DynamicRangeProbe(ScriptedProbe):
    """Builds the all-quantized model; any exclusion is refused as the tflite target refuses it."""

    def build(self, exclude: tuple[str, ...], method: str | None = None, variant: str | None = None) -> Candidate:
        if exclude:
            raise UnsupportedError("keeping layers in float needs full-integer INT8 on the tflite target")
        return super().build(exclude, method, variant)


def test_a_target_that_keeps_nothing_float_ends_the_search_with_the_best_score() -> None:
    probe = DynamicRangeProbe({frozenset[str](): 0.90}, ["lstm", "proj"])
    with pytest.raises(AccuracyGateError) as caught:
        Search(probe, Metric("cosine"), None, 0.01, lambda _: None).run()  # type: ignore[arg-type]
    message = caught.value.message
    assert "0.9000" in message and "cannot keep layers in float: keeping layers in float needs full-integer" in message
    assert probe.builds == 1
