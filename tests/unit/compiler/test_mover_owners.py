"""A value mover's growth names the ops it feeds (issue 19): the quantizer before a ``Squeeze`` belongs to the op
that reads the ``Squeeze`` (silero-vad 16k on openvino: the speech probability quantized before
``Squeeze`` -> ``ReduceMean``; the search skipped the ``Squeeze`` and never tried the ``ReduceMean``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Search, owners
from edgec.frameworks import fidelity
from edgec.frameworks.fidelity import LayerDivergence, NodeInfo
from tests.support.probes import ScriptedProbe

NODES = [NodeInfo("conv", "Conv", "conv", "c", ("x",)), NodeInfo("prob", "Sigmoid", "prob", "p", ("c",)),
         NodeInfo("sq", "Squeeze", "sq", "s", ("p",)), NodeInfo("t", "Transpose", "t", "st", ("s",)),
         NodeInfo("mean", "ReduceMean", "mean", "y", ("st",)), NodeInfo("gate", "Equal", "gate", "g", ("p",))]


def test_the_ranking_lists_who_reads_each_node() -> None:
    errors = {"c": (0.01, 1.0), "p": (0.01, 1.0), "s": (0.4, 0.9), "st": (0.4, 0.9), "y": (0.4, 0.9), "g": (0.0, 1.0)}
    ranked = {d.node: d for d in fidelity.rank_errors(NODES, errors)}
    assert ranked["prob"].readers == ("sq", "gate") and ranked["sq"].readers == ("t",) and ranked["mean"].readers == ()
    assert ranked["sq"].growth == pytest.approx(0.39)
    assert "readers" not in ranked["sq"].to_json()  # reports keep their fields


def test_a_mover_names_the_layers_it_feeds_through_other_movers_and_control_names_none() -> None:
    ranked = fidelity.rank_errors(NODES, {k: (0.4, 0.9) for k in ("s", "st", "y")} | {"c": (0.01, 1.0), "p": (0.01, 1.0), "g": (0.0, 1.0)})
    by_node = {d.node: d for d in ranked}
    assert owners(by_node["sq"], by_node) == ["mean"]
    assert owners(by_node["conv"], by_node) == ["conv"]
    assert owners(by_node["gate"], by_node) == []
    inside = LayerDivergence("t2", "Transpose", "lstm", "t2", 0.5, 0.8, 0.5, ("x",))
    assert owners(inside, {}) == ["lstm"]  # a mover inside another op's layer names that layer, as before


class _MoverProbe(ScriptedProbe):
    """A model whose output quantizer sits before a Squeeze: the ranking blames the Squeeze."""

    def rank(self, candidate, indices):  # type: ignore[no-untyped-def]
        return [LayerDivergence("sq", "Squeeze", "sq", "s", 0.4, 0.9, 0.39, ("mean",)),
                LayerDivergence("conv1", "Conv", "conv1", "c1", 0.05, 0.99, 0.04, ("conv2",)),
                LayerDivergence("conv2", "Conv", "conv2", "c2", 0.06, 0.99, 0.01, ("sq",)),
                LayerDivergence("mean", "ReduceMean", "mean", "y", 0.4, 0.9, 0.0)]


def test_the_search_keeps_the_op_a_mover_feeds_in_float() -> None:
    probe = _MoverProbe({frozenset(): 0.69, frozenset({"mean"}): 0.999}, [], default=0.69)
    result = Search(probe, Metric("cosine"), None, 0.01, lambda _: None).run()  # type: ignore[arg-type]
    assert result.float_layers == ["mean"] and np.isclose(result.value, 0.999)
    assert [s["float_layers"] for s in result.steps] == [[], ["mean"]]
