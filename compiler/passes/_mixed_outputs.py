"""Model outputs that join parts of very different ranges, which one per-tensor INT8 scale cannot hold.

A YOLO-style detector ends in ``Concat(boxes, class probabilities)`` along the channel axis: boxes span 0-320,
probabilities 0-1. onnxruntime's static quantizer gives that ``Concat`` (and so the whole output) one scale,
1.26 for 0-320, so every probability becomes 0 or 1.26 while the output's cosine stays 0.999 (the boxes
dominate it). nncf keeps model outputs in float; this module finds where that matters for onnxruntime.

Rules, for each graph output:
1. Walk back from the output through ops that only move data (:data:`MOVES`: Reshape, Transpose, Flatten,
   Squeeze, Unsqueeze, Identity) to the op that produced the values. Only a ``Concat`` is judged.
2. Run the float model on the calibration set with the ``Concat``'s inputs as extra outputs, and take each
   input's range (``max - min`` over all samples).
3. When the widest range is more than ``ratio`` times the narrowest (and the narrowest is not 0), the
   ``Concat`` and the ops of rule 1 stay float: each part keeps the scale of the op that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import require

MOVES = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""Ops that move values without changing them (rule 1)."""


@dataclass(frozen=True)
class MixedOutput:
    """An output whose ``Concat`` joins parts of different ranges.

    Args:
        output: the graph output's name.
        nodes: the ``Concat`` and the ops between it and the output (their names).
        ranges: the range of each ``Concat`` input over the calibration set.
    """

    output: str
    nodes: tuple[str, ...]
    ranges: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "nodes": list(self.nodes), "input_ranges": [float(f"{r:.6g}") for r in self.ranges]}


def name_nodes(model: Any) -> bool:
    """Give every unnamed node a unique name (``nodes_to_exclude`` needs names); returns whether any changed."""
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name, changed = name, True
            taken.add(name)
    return changed


def output_concats(model: Any) -> list[tuple[str, Any, list[str]]]:
    """Rule 1: ``(output, Concat node, [names of the Concat and the moves after it])`` for each output."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for output in model.graph.output:
        path, node = [], producer.get(output.name)
        while node is not None and node.op_type in MOVES:
            path.append(node.name)
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Concat" and len(node.input) > 1:
            found.append((output.name, node, [node.name, *path]))
    return found


def input_ranges(path: Path, model: Any, tensors: list[str], calibration: CalibrationSet) -> dict[str, float]:
    """Rule 2: ``max - min`` of each tensor over the calibration set, from the float model at ``path``."""
    onnx = require("onnx", "onnx", "finding mixed-range outputs")
    ort = require("onnxruntime", "onnx", "finding mixed-range outputs")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in known)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = {t: np.inf for t in tensors}
    high = {t: -np.inf for t in tensors}
    for feed in calibration.feeds():
        for name, value in zip(tensors, session.run(tensors, feed)):
            low[name], high[name] = min(low[name], float(np.min(value))), max(high[name], float(np.max(value)))
    return {t: high[t] - low[t] for t in tensors}


def mixed_outputs(path: Path, model: Any, calibration: CalibrationSet, ratio: float) -> list[MixedOutput]:
    """The outputs that rule 3 keeps float, with what was measured."""
    concats = output_concats(model)
    if not concats:
        return []
    constants = {i.name for i in model.graph.initializer}
    tensors = sorted({t for _, node, _ in concats for t in node.input if t and t not in constants})
    if not tensors:
        return []
    ranges = input_ranges(path, model, tensors, calibration)
    mixed = []
    for output, node, nodes in concats:
        parts = tuple(ranges[t] for t in node.input if t in ranges)
        if parts and min(parts) > 0 and max(parts) > ratio * min(parts):
            mixed.append(MixedOutput(output, tuple(nodes), parts))
    return mixed
