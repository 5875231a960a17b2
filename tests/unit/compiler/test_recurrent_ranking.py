"""Layer ranking of recurrent ops (issue 19), without building models: an op with several outputs (an LSTM's
sequence and final states) is compared on each, and an op that only moves values but belongs to another op's
layer (the ``Transpose`` OpenVINO puts before an LSTM's state input, where nncf's quantizer sits) names that
layer to the ``--max-drop`` search. The builds are in tests/integration/targets/test_openvino_recurrent.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Search
from edgec.frameworks import fidelity
from edgec.frameworks.fidelity import LayerDivergence, NodeInfo
from tests.support.probes import ScriptedProbe

LSTM = [NodeInfo("pre", "MatMul", "pre", "p", ("x",)),
        NodeInfo("lstm", "LSTM", "lstm", "y", ("p", "W", "h0", "c0"), ("y_h", "y_c")),
        NodeInfo("head", "MatMul", "head", "logits", ("y",)),
        NodeInfo("state", "Mul", "state", "s", ("y_c",))]


def test_an_lstm_is_ranked_by_its_worst_output_a_final_state() -> None:
    errors = {"p": (0.1, 0.99), "y": (0.12, 0.99), "y_h": (0.2, 0.98), "y_c": (0.9, 0.5), "logits": (0.13, 0.99),
              "s": (0.9, 0.5)}
    ranked = {d.node: d for d in fidelity.rank_errors(LSTM, errors)}
    assert ranked["lstm"].tensor == "y_c" and ranked["lstm"].growth == pytest.approx(0.8)
    assert ranked["state"].growth == pytest.approx(0.0)  # it reads y_c: the error is the LSTM's, not its own
    assert ranked["head"].growth == pytest.approx(0.01)  # it reads y, not the worse state
    assert fidelity.rank_errors(LSTM, errors)[0].node == "lstm"


def test_an_output_that_was_not_compared_passes_the_upstream_error_on() -> None:
    ranked = {d.node: d for d in fidelity.rank_errors(LSTM, {"p": (0.1, 0.99), "y": (0.3, 0.9), "s": (0.35, 0.9)})}
    assert ranked["lstm"].tensor == "y" and ranked["state"].growth == pytest.approx(0.25)  # y_c unknown: p's error


class _RecurrentProbe(ScriptedProbe):
    """The ranking of an openvino LSTM with quantized states: the state's Transposes carry the error."""

    def rank(self, candidate, indices):  # type: ignore[no-untyped-def]
        return [LayerDivergence("Transpose_c5", "Transpose", "LSTMSequence_c13", "Transpose_c5", 0.85, 0.87, 0.85),
                LayerDivergence("/Squeeze", "Squeeze", "/Squeeze", "/Squeeze", 0.3, 0.9, 0.3),
                LayerDivergence("/inp/MatMul", "MatMul", "inp", "/inp/MatMul", 0.06, 0.99, 0.06),
                LayerDivergence("LSTMSequence_c13", "LSTMSequence", "LSTMSequence_c13", "LSTMSequence_c13:2", 0.2, 0.97, -0.6)]

    def nodes(self, layers, ranked):  # type: ignore[no-untyped-def]
        return tuple(d.node for d in ranked if d.layer in layers)


def test_a_mover_inside_another_layer_names_that_layer_and_a_mover_alone_does_not() -> None:
    probe = _RecurrentProbe({frozenset(): 0.6, frozenset({"Transpose_c5", "LSTMSequence_c13"}): 0.999}, [])
    result = Search(probe, Metric("cosine"), None, 0.005, lambda _: None).run()  # type: ignore[arg-type]
    assert result.float_layers == ["LSTMSequence_c13"]
    assert set(result.exclude) == {"Transpose_c5", "LSTMSequence_c13"}
    assert [s["float_layers"] for s in result.steps] == [[], ["LSTMSequence_c13"]]  # the Squeeze on its own is no candidate
    assert np.isclose(result.value, 0.999)
