"""When no layer helps alone, the search keeps the module around the best-ranked ones float whole (issue 19):
silero-vad's STFT front end (``/stft/Conv``, ``/stft/Pow``, ``/stft/Pow_c5``, ``/stft/Add``, ``/stft/Sqrt``) met
the budget together on openvino where each alone moved nothing, and the search stopped with exit 7."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import Search, enclosing, module_members
from edgec.core.errors import AccuracyGateError
from edgec.frameworks.fidelity import LayerDivergence
from tests.support.probes import ScriptedProbe

STFT = ["/stft/Pow", "/stft/Add", "/stft/Conv", "/encoder.0/Conv", "/encoder.1/Conv"]


def test_a_scope_is_the_module_path_in_a_node_or_layer_name() -> None:
    assert enclosing("/stft/Pow") == "/stft/" and enclosing("/stft/") == ""
    assert enclosing("/encoder.2/Conv/WithoutBiases") == "/encoder.2/Conv/"
    assert enclosing("/encoder.2/") == "/encoder." and enclosing("/encoder.") == ""
    assert enclosing("convs.2") == "convs." and enclosing("conv") == "" and enclosing("/Relu_c12") == ""


def test_module_members_widen_until_two_layers_are_inside() -> None:
    ranked = [LayerDivergence(n, "Conv", n, n, 0.1, 0.9, 0.1) for n in ["/encoder.0/Conv", "/encoder.1/Conv", "/stft/Pow"]]
    assert module_members(ranked[0], ranked, ()) == ("/encoder.", ["/encoder.0/Conv", "/encoder.1/Conv"])
    assert module_members(ranked[2], ranked, ()) == ("", [])  # the only layer of its module
    assert module_members(ranked[0], ranked, ("/encoder.1/Conv",)) == ("", [])


def test_the_search_keeps_a_module_whole_when_no_layer_helps_alone() -> None:
    whole = frozenset({"/stft/Pow", "/stft/Add", "/stft/Conv"})
    probe = ScriptedProbe({frozenset(): 0.91, whole: 0.999}, STFT, default=0.91)
    logged: list[str] = []
    result = Search(probe, Metric("cosine"), None, 0.01, logged.append).run()  # type: ignore[arg-type]
    assert set(result.float_layers) == whole and np.isclose(result.value, 0.999)
    assert [len(s["float_layers"]) for s in result.steps] == [0, 1, 1, 1, 3]  # three alone, then the module
    assert "no layer helped alone: trying module '/stft/' whole" in logged


def test_the_search_stops_when_no_module_helps_either() -> None:
    probe = ScriptedProbe({frozenset(): 0.91}, STFT, default=0.91)
    with pytest.raises(AccuracyGateError, match="nor their modules"):
        Search(probe, Metric("cosine"), None, 0.01, lambda _: None).run()  # type: ignore[arg-type]
    assert probe.builds == 6  # all quantized, three alone, the /stft/ and /encoder. modules


def test_names_that_carry_the_op_type_instead_of_a_module_have_no_module() -> None:
    ranked = [LayerDivergence(n, "Add", n, n, 0.1, 0.9, 0.1) for n in ["p2o.Add.14", "p2o.Add.15"]]
    assert module_members(ranked[0], ranked, ()) == ("", [])  # paddle2onnx names nodes by type and number
    flat = [LayerDivergence(n, "Conv", f"convs.{i}", n, 0.1, 0.9, 0.1) for i, n in enumerate(["convolution", "convolution_1"])]
    assert module_members(flat[0], flat, ()) == ("convs.", ["convs.0", "convs.1"])  # torch layers through the pt2 route


def test_one_ops_conv_and_bias_are_not_a_module_of_two() -> None:
    names = [("/m.22/cv3.0/conv/Conv", "/m.22/cv3.0/conv/Conv"), ("/m.22/cv3.0/conv/Conv/WithoutBiases", "m.22.cv3.0.conv"),
             ("/m.22/cv3.0/act/Mul", "/m.22/cv3.0/act/Mul")]
    ranked = [LayerDivergence(n, "Conv", layer, n, 0.1, 0.9, 0.1) for n, layer in names]
    scope, members = module_members(ranked[0], ranked, ())
    assert scope == "/m.22/cv3.0/" and set(members) == {"/m.22/cv3.0/conv/Conv", "m.22.cv3.0.conv", "/m.22/cv3.0/act/Mul"}
