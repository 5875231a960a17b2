"""Square-root chains of an ONNX graph: squares summed up to their root (an STFT magnitude, an L2 norm), and the
layers that read the root.

The ONNX counterpart of :func:`edgec.targets._openvino_preset.square_float_ops` (OpenVINO ops) and
:func:`edgec.targets._tflite_mixed.square_float_nodes` (TFLite ops), for targets whose INT8 is a Q/DQ ONNX
graph (``tensorrt``). The rules are theirs:

1. A chain starts at a square: ``Pow(x, 2)``, ``Mul(x, x)``, ``ReduceSumSquare``.
2. It goes on through sums, means and moves (:data:`SQUARE_SUMS`) and scaling by a constant (``Mul`` by one,
   ``Div`` by one).
3. It ends at a root: ``Sqrt``, ``Log``, ``Pow`` by an exponent below 1, root included; ``ReduceL2`` is a
   whole chain in one op.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgec.frameworks import onnx_utils

MOVES = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Transpose", "Flatten", "Identity"})
"""Ops that move values without changing them."""
SQUARE_SUMS = frozenset({"Add", "Sum", "ReduceSum", "ReduceMean", *MOVES})
"""Ops that carry squares on to their root unchanged in kind."""
ROOTS = frozenset({"Sqrt", "Log"})
"""Ops that take the root of a sum of squares (with ``Pow`` by an exponent below 1)."""


class _Graph(onnx_utils.GraphIndex):
    """Constants, producers and readers of an ONNX graph's nodes, and its nodes in order."""

    def __init__(self, model: Any) -> None:
        super().__init__(model.graph)
        self.nodes = list(model.graph.node)

    def exponent(self, node: Any) -> float | None:
        """The constant exponent of a ``Pow`` (one value), else None."""
        value = self.consts.get(node.input[1]) if node.op_type == "Pow" and len(node.input) > 1 else None
        return float(np.asarray(value).ravel()[0]) if value is not None and np.asarray(value).size == 1 else None

    def computed(self, node: Any) -> list[str]:
        """``node``'s inputs that are not constants."""
        return [name for name in node.input if name and name not in self.consts]


def square_root_chains(model: Any) -> list[tuple[list[str], str]]:
    """``(chain, root)`` for every root of a sum of squares: the chain's node names in graph order (squares
    first, root last) and the root's output."""
    graph = _Graph(model)
    found = []
    for node in graph.nodes:
        exponent = graph.exponent(node)
        if node.op_type == "ReduceL2":
            found.append(([node.name], node.output[0]))
        elif node.op_type in ROOTS or (exponent is not None and exponent < 1):
            chain = _chain(graph.producer.get(node.input[0]), graph, set())
            if chain:
                found.append(([*chain, node.name], node.output[0]))
    return found


def square_float_nodes(model: Any, readers: Iterable[str]) -> list[str]:
    """The nodes of every square-root chain and the nodes of type ``readers`` that read its root, directly or
    through moves (:data:`MOVES`), in graph order."""
    graph, kinds = _Graph(model), frozenset(readers)
    kept: dict[str, None] = {}
    for chain, root in square_root_chains(model):
        kept.update(dict.fromkeys([*chain, *_root_readers(root, graph, kinds, set())]))
    return [n.name for n in graph.nodes if n.name and n.name in kept]  # nodes_to_exclude needs names


def _chain(node: Any, graph: _Graph, seen: set[str]) -> list[str]:
    """``node`` and the ops before it down to squares, when ``node`` is a square or carries one (else empty)."""
    if node is None or node.name in seen:
        return []
    seen.add(node.name)
    computed = graph.computed(node)
    if graph.exponent(node) == 2 or node.op_type == "ReduceSumSquare" or (
            node.op_type == "Mul" and len(computed) == 2 and computed[0] == computed[1]):
        return [node.name]
    scaling = (node.op_type == "Mul" and len(computed) == 1) or (
        node.op_type == "Div" and len(node.input) == 2 and node.input[1] in graph.consts)
    if node.op_type in MOVES:
        computed = computed[:1]
    elif node.op_type not in SQUARE_SUMS and not scaling:
        return []
    below = [n for name in computed for n in _chain(graph.producer.get(name), graph, seen)]
    return [*below, node.name] if below else []


def _root_readers(value: str, graph: _Graph, kinds: frozenset[str], seen: set[str]) -> list[str]:
    """The nodes of type ``kinds`` reading ``value``, directly or through moves, and those moves."""
    found: list[str] = []
    for reader in graph.consumers.get(value, []):
        if reader.name in seen:
            continue
        seen.add(reader.name)
        if reader.op_type in kinds:
            found.append(reader.name)
        elif reader.op_type in MOVES:
            after = _root_readers(reader.output[0], graph, kinds, seen)
            found += [reader.name, *after] if after else []
    return found
