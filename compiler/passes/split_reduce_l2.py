"""Split ONNX ``ReduceL2(x)`` into ``Sqrt(ReduceSumSquare(x))``.

Why: onnx2tf 1.28 passes a single axis to ``tf.norm`` as a numpy integer, which TensorFlow rejects with
numpy 2 ("'axis' must be None, an integer, or a tuple of 2 unique integers"). MiniLM's final L2
normalisation hits it. The tflite target's ONNX route asks for this pass (``TfliteTarget.onnx_rewrites``).

Math (why it is exact): the ONNX spec defines ``ReduceL2(x) = sqrt(sum(x ** 2))`` over the reduced axes, and
``ReduceSumSquare(x) = sum(x ** 2)`` over the same axes: the two nodes compute the same expression in the
same order. Both ops changed their signatures together (opsets 1, 11, 13, 18: ``axes`` an attribute, then an
input from 18, with ``keepdims`` and ``noop_with_empty_axes``), so the same inputs and attributes carry over in
every opset. With ``noop_with_empty_axes`` and no axes, ReduceL2 gives ``|x|`` and the split gives
``sqrt(x * x)``, which float rounding also makes ``|x|`` (outside overflow).

Rules, for each ``ReduceL2`` node:
1. Only the default ONNX domain: a ``ReduceL2`` elsewhere is a custom op.
2. Integer inputs (when their type is known) are left: ``Sqrt`` takes floats only.
3. ``ReduceSumSquare`` takes the node's inputs and attributes and writes ``<output>__edgec_sum_square``
   (made unique if the graph already uses that name), named ``<node>__sum_square``; ``Sqrt`` writes the
   original output and keeps the node's name, so layer names in converted graphs still carry it.

A node that breaks a rule stays as it is; the stats count, per broken rule, the nodes it stopped
(``not_split``), and the log says why.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils

WHY = {1: "1: not the default ONNX domain (a custom op)", 2: "2: integer input (Sqrt takes floats only)"}


def _elem_types(model: Any) -> dict[str, int]:
    """Element type per value name, as far as ONNX shape inference knows it."""
    onnx = require("onnx", "onnx", "splitting ReduceL2")
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({i.name: i.data_type for i in graph.initializer})
    return {name: t for name, t in types.items() if t}


def _why_not(node: Any, types: dict[str, int]) -> int | None:
    """The number of the broken rule, or None when ``node`` is split."""
    from onnx import TensorProto

    if node.domain not in DEFAULT_DOMAINS:
        return 1
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    elem = types.get(node.input[0])
    return 2 if elem is not None and elem not in floats else None


def split(model: Any) -> tuple[int, Counter[str]]:
    """Split every ReduceL2 that follows the rules, in place; returns the count and, per broken rule, the misses."""
    from onnx import helper

    graph = model.graph
    missed: Counter[str] = Counter()
    if not any(n.op_type == "ReduceL2" for n in graph.node):
        return 0, missed
    types = _elem_types(model)
    taken = {name for n in graph.node for name in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        why = _why_not(node, types) if node.op_type == "ReduceL2" else None
        if node.op_type != "ReduceL2" or why is not None:
            if why is not None:
                missed[WHY[why]] += 1
            nodes.append(node)
            continue
        squared = onnx_utils.unique_name(f"{node.output[0]}__edgec_sum_square", taken)
        reduce = helper.make_node("ReduceSumSquare", list(node.input), [squared], name=f"{node.name}__sum_square")
        reduce.attribute.extend(node.attribute)
        nodes += [reduce, helper.make_node("Sqrt", [squared], list(node.output), name=node.name)]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count, missed


class SplitReduceL2(Pass):
    """``ReduceL2`` -> ``Sqrt(ReduceSumSquare)`` (see the module docstring for the rules)."""

    name = "split_reduce_l2"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        model = onnx_utils.load_model(artifact.path)
        count, missed = split(model)
        for why, n in sorted(missed.items()):
            ctx.log(f"split_reduce_l2: {n} ReduceL2 node(s) not split, rule {why}")
        stats = {"split": count, "not_split": dict(sorted(missed.items()))}
        if not count:
            return PassResult(unchanged(artifact, ctx), False, stats)
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)
