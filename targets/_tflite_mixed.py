"""Model outputs of a ``.tflite`` model that join parts of very different ranges, which one per-tensor INT8
scale cannot hold: the tflite counterpart of :mod:`edgec.compiler.passes._mixed_outputs` (the onnx target's).

A YOLO-style detector ends in ``Concat(boxes, class probabilities)``: boxes span 0-320, probabilities 0-1.
Full-integer INT8 gives the ``CONCATENATION`` (and so the whole output) one scale, ~1.26, so every probability
becomes 0 or 1.26 (YOLOv8n: the class part's cosine to FP32 is 0.0). Rules, on the calibrated float model
(the converter's calibrate-only output, whose op names the quantizer's denylist takes):

1. From each signature output, walk back through ops that only move values (:data:`MOVES`) to the op that
   produced them. Only a ``CONCATENATION`` of more than one computed tensor is judged.
2. Run the calibrated model on the representative samples and take each computed input's range
   (``max - min`` over all samples).
3. When the widest range is more than :data:`RATIO` times the narrowest (and the narrowest is not 0), the
   ``CONCATENATION``, the ops of rule 1 and the moves that feed it stay float: each part keeps the scale of
   the op that produced it and is dequantized before the join (a move left int8 takes the join's scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.core.types import Feed
from edgec.frameworks.fidelity import NodeInfo
from edgec.targets._tflite_layers import _interpreter, _readable, _run, _signature, _tensor, graph_nodes

MOVES = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
"""Ops that move values without changing them (rule 1)."""
RATIO = 10.0
"""Range ratio above which an output ``CONCATENATION`` stays float (rule 3; the onnx target's default)."""


@dataclass(frozen=True)
class MixedOutput:
    """An output whose ``CONCATENATION`` joins parts of different ranges.

    Args:
        output: the signature output's name.
        nodes: the ``CONCATENATION``, the moves that feed it and those between it and the output (op output
            tensor names).
        ranges: the range of each computed input over the samples.
    """

    output: str
    nodes: tuple[str, ...]
    ranges: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "nodes": list(self.nodes), "input_ranges": [float(f"{r:.6g}") for r in self.ranges]}


def output_concats(interpreter: Any) -> list[tuple[str, NodeInfo, list[str]]]:
    """Rule 1: ``(output, CONCATENATION node, [its name and the moves after it])`` for each signature output."""
    nodes = graph_nodes(interpreter)
    producer = {n.output: n for n in nodes}
    runner = _signature(interpreter)
    outputs = runner.get_output_details() if runner is not None else {
        d["name"]: d for d in interpreter.get_output_details()}
    found = []
    for name, detail in outputs.items():
        path: list[str] = []
        node = producer.get(_tensor(interpreter, int(detail["index"]))["name"])
        while node is not None and node.op in MOVES and node.inputs:
            path.append(node.name)
            node = producer.get(node.inputs[0])
        if node is not None and node.op == "CONCATENATION":
            found.append((name, node, [*_moves_before(node, producer), node.name, *path]))
    return found


def _moves_before(concat: NodeInfo, producer: dict[str, NodeInfo]) -> list[str]:
    """The moves that feed the ``CONCATENATION`` (onnx2tf's transposes and reshapes): left int8, they would take
    the join's scale (measured: the probabilities stayed 0 or 1.25)."""
    names = []
    for tensor in concat.inputs:
        node = producer.get(tensor)
        while node is not None and node.op in MOVES and node.inputs:
            names.append(node.name)
            node = producer.get(node.inputs[0])
    return names


def mixed_outputs(calibrated: bytes, samples: list[Feed], ratio: float = RATIO) -> list[MixedOutput]:
    """The outputs that rule 3 keeps float, with what was measured (rule 2 runs only when rule 1 finds one)."""
    interpreter = _interpreter(calibrated, preserve=True)
    concats = output_concats(interpreter)
    produced = {n.output for n in graph_nodes(interpreter)}
    computed = {t for _, node, _ in concats for t in node.inputs if t in produced}
    if not samples or not any(len([t for t in node.inputs if t in computed]) > 1 for _, node, _ in concats):
        return []
    ranges = _ranges(interpreter, computed, samples)
    mixed = []
    for output, node, names in concats:
        parts = tuple(ranges[t] for t in node.inputs if t in ranges)
        if len(parts) > 1 and min(parts) > 0 and max(parts) > ratio * min(parts):
            mixed.append(MixedOutput(output, tuple(names), parts))
    return mixed


def _ranges(interpreter: Any, tensors: set[str], samples: list[Feed]) -> dict[str, float]:
    readable = _readable(interpreter, tensors)
    low = {d["name"]: np.inf for d in readable.values()}
    high = {d["name"]: -np.inf for d in readable.values()}
    for feed in samples:
        for name, value in _run(interpreter, feed, readable, {}).items():
            low[name], high[name] = min(low[name], float(np.min(value))), max(high[name], float(np.max(value)))
    return {t: high[t] - low[t] for t in low}
