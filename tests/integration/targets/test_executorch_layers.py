"""Layer names and float groups of the executorch target's per-layer tools, on a tiny exported graph: modules
named as torch names them, activations called in a parent's forward taking their producer's layer, and what the
quantizer is told to keep in float."""

from __future__ import annotations

from typing import Any

import pytest

from edgec.core import errors
from edgec.targets._executorch_layers import float_group, float_names, graph_nodes
from edgec.targets._executorch_program import keep_float

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4 * 16, 2)

    def forward(self, x: Any) -> Any:
        h = torch.relu(self.stem(x))
        h = self.block(h) + h
        return self.fc(h.flatten(1))


@pytest.fixture(scope="module")
def graph() -> Any:
    return torch.export.export(Net().eval(), (torch.randn(1, 3, 4, 4),)).module()


def test_ops_are_named_by_their_module_and_a_parent_s_activation_by_its_producer(graph: Any) -> None:
    layers = {n.name: n.layer for n in graph_nodes(graph)}
    assert layers["conv2d"] == layers["relu"] == "stem"  # torch.relu in Net.forward reads stem's output
    assert layers["conv2d_1"] == "block.0" and layers["relu_1"] == "block.1"
    assert layers["add"] == "add" and layers["linear"] == "fc"  # an add owned by no module is a layer of its own


def test_float_group_adds_the_producers_of_the_activation_read_through_shape_ops(graph: Any) -> None:
    nodes = graph_nodes(graph)
    assert float_group(nodes, "fc") == ["fc", "add"]  # through flatten, to the add that produced it
    assert float_group(nodes, "block.0") == ["block.0", "stem"]
    assert float_names(graph, nodes, ["fc", "add", "block"]) == ("fc", "add", "block")


def test_keep_float_configures_modules_and_filters_ops_and_refuses_unknown_names(graph: Any) -> None:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    quantizer = XNNPACKQuantizer()
    keep_float(quantizer, graph, ("block.0", "add"))
    assert quantizer.module_name_config == {"block.0": None}
    add = next(n for n in graph.graph.nodes if n.name == "add")
    assert quantizer.filter_fn is not None and not quantizer.filter_fn(add)
    with pytest.raises(errors.ConfigError, match="block.7"):
        keep_float(XNNPACKQuantizer(), graph, ("block.7",))
