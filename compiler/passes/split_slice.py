"""Split an ONNX ``Slice`` over several axes into a chain of one-axis ``Slice`` nodes.

Why: onnx2tf 1.28 mis-converts a ``Slice`` over several axes of a tensor it made channels-last (a
``[N, C, W]`` Conv1d output): the result has the wrong shape, and the next op fails inside onnx2tf, e.g.
``Add`` with ``UnboundLocalError: cannot access local variable 'dummy_tensor'``. onnxsim writes such slices when
it merges two one-axis slices: Silero VAD's STFT front end (``Conv`` -> ``Slice`` channels -> ``Slice`` time
for the real and the imaginary part) becomes two two-axis slices. One-axis slices convert. The tflite target's
ONNX route asks for this pass (``TfliteTarget.onnx_rewrites``).

Math (why it is exact): by the ONNX spec each axis of ``Slice`` selects ``starts[i]:ends[i]:steps[i]`` along
``axes[i]`` independently of the others (axes are unique), so the output element at index ``j`` is the input
element whose index along each sliced axis is ``starts[i] + j[axis] * steps[i]`` (after clamping) and unchanged
along the others. Slicing one axis at a time applies the same index map axis by axis, and clamping of one axis
depends only on that axis's length, which earlier one-axis slices do not change.

Rules, for each ``Slice`` node:
1. Only the default ONNX domain and the input form (opset >= 10; older opsets have attributes).
2. ``starts``, ``ends``, ``axes`` and ``steps`` (the last two when given) are initializers; the node slices
   more than one axis (``axes`` omitted: ``0 .. len(starts) - 1``).
3. Each axis gets a ``Slice`` with its own one-element initializers; the last writes the node's output and keeps
   its name (layer names in converted graphs still carry it), the others write ``<output>__edgec_axis<k>``.

A node that breaks a rule stays as it is; the stats count the split nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


def _constants(node: Any, values: dict[str, np.ndarray]) -> tuple[np.ndarray, ...] | None:
    """Rules 1-2: ``(starts, ends, axes, steps)`` of a node to split, or None."""
    if node.op_type != "Slice" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 3 or node.attribute:
        return None
    names = [*node.input[1:5], *[""] * (5 - len(node.input))]
    if any(n and n not in values for n in names):
        return None
    starts, ends = values[names[0]].ravel(), values[names[1]].ravel()
    axes = values[names[2]].ravel() if names[2] else np.arange(starts.size, dtype=np.int64)
    steps = values[names[3]].ravel() if names[3] else np.ones(starts.size, np.int64)
    return (starts, ends, axes, steps) if starts.size > 1 and len({starts.size, ends.size, axes.size, steps.size}) == 1 else None


def split(model: Any) -> int:
    """Split every ``Slice`` that follows the rules, in place; returns how many were split."""
    from onnx import helper, numpy_helper

    graph = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    taken = {name for n in graph.node for name in (*n.input, *n.output)} | set(values)
    nodes, count = [], 0
    for node in graph.node:
        parts = _constants(node, values)
        if parts is None:
            nodes.append(node)
            continue
        current = node.input[0]
        for k in range(parts[0].size):
            inputs = [current]
            for role, array in zip(("starts", "ends", "axes", "steps"), parts, strict=True):
                name = onnx_utils.unique_name(f"{node.name or node.output[0]}__edgec_{role}{k}", taken)
                graph.initializer.append(numpy_helper.from_array(array[k:k + 1].astype(array.dtype), name))
                inputs.append(name)
            last = k == parts[0].size - 1
            output = node.output[0] if last else onnx_utils.unique_name(f"{node.output[0]}__edgec_axis{k}", taken)
            nodes.append(helper.make_node("Slice", inputs, [output], name=node.name if last else f"{node.name}__axis{k}"))
            current = output
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


class SplitSlice(Pass):
    """A ``Slice`` over several axes -> one-axis ``Slice`` nodes (see the module docstring for the rules)."""

    name = "split_slice"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        model = onnx_utils.load_model(artifact.path)
        count = split(model)
        stats = {"split": count}
        if not count:
            return PassResult(unchanged(artifact, ctx), False, stats)
        ctx.log(f"split_slice: {count} Slice node(s) over several axes split into one-axis slices")
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)
