"""Write ``PRelu``, hard-swish and ``HardSigmoid`` with the ops XNNPACK runs in full-integer INT8.

Why: LiteRT's XNNPACK delegate (ai-edge-litert 2.3) takes no int8 ``PRELU``, ``HARD_SWISH`` or ``RELU_0_TO_1``
(what onnx2tf and TensorFlow's converter make of ``PRelu``, of ``x * Clip(x + 3, 0, 6) / 6`` and of
``HardSigmoid``; no float ``RELU_0_TO_1`` either), nor an int8 ``RELU``, ``MAXIMUM`` or ``MINIMUM`` standing
alone; it takes int8 ``ADD`` and ``MUL`` (with a fused ``RELU``/``RELU6``) and ``LEAKY_RELU``. Each op it leaves
splits the graph, and LiteRT's own int8 kernels run between the parts. Measured (1 thread, before -> after):
MTCNN ONet int8 0.563 -> 0.164 ms (FP32 0.304 -> 0.344), PP-OCR cls int8 2.07 -> 0.67 ms (FP32 0.557 -> 0.647).
The tflite target runs this pass for full-integer INT8 of an ONNX model (``TfliteTarget.precision_passes``);
its FP32 and dynamic-range bundles keep the original ops, which XNNPACK runs in float (rewritten, they cost
MTCNN ONet's and PP-OCR cls's FP32 about 15%).

Math:
- ``PRelu(x, s) = x`` for ``x >= 0``, ``s * x`` otherwise. With ``n = Relu(-1 * x)``, it is
  ``(x + n) + (-s) * n``, exactly in float: for ``x >= 0``, ``n = 0`` and ``x + 0 + 0 = x``; for ``x < 0``,
  ``n = -x`` (negation is exact), ``x + n = 0`` exactly and ``(-s) * (-x) = s * x`` (the same rounded product),
  so ``0 + s * x = s * x``. (``x = -inf`` gives NaN instead of ``-s * inf``.) The converter fuses the ``Relu``
  into its ``Mul``. A one-element slope is ``LeakyRelu(alpha=s)``, by definition the same function.
- hard-swish ``x * Clip(x + 3, 0, 6) / 6`` becomes ``Clip(x + 3, 0, 6) * (x / 6)``: the same function in another
  rounding order (a few float32 ulps). The converter fuses ``(x * r) / 6`` and ``x * (r / 6)`` into ``HARD_SWISH``,
  not this. The operand order matters to TensorFlow 2.21's full-integer quantizer: with ``(x / 6) * r`` it gave
  ``x / 6`` a range ~3x too wide, and PP-OCRv4 det's int8 fidelity fell from 0.921 to 0.880 (0.919 in this order).
  ONNX ``HardSwish`` (``x * max(0, min(1, x / 6 + 0.5))``) gets the same ops.
- ``HardSigmoid(x) = Clip(a * x + b, 0, 1) = Clip(6a * x + 6b, 0, 6) / 6`` (``Clip(0, 6)`` is the ``RELU6`` the
  converter fuses into the ``Add``); the constants ``6a`` and ``6b`` are rounded once (a few ulps).

Rules:
1. Default ONNX domain; the input's element type, when ONNX shape inference knows it, is float (the new
   constants take it).
2. ``PRelu``: the slope is a constant (initializer or ``Constant`` node); when the input's rank is known, the
   slope gets leading 1s up to it (the same unidirectional broadcast; onnx2tf 1.28 fails on a ``[C, 1, 1]``
   slope or factor of a channels-last tensor, ``[1, C, 1, 1]`` converts).
3. hard-swish pattern, with ``r = Clip(Add(x, 3), 0, 6)``: ``Mul(x, r) / 6`` or ``x * (r / 6)`` (a division by
   6 or a ``Mul`` by 1/6; operands in either order; Clip bounds as inputs or, before opset 11, attributes;
   constants within 1e-6 relative; the product or the quotient read by the last node alone, not a graph
   output). The ``Add`` and ``Clip`` stay; the two other nodes become ``Div(x, 6)`` and ``Mul(r, x / 6)``
   writing the original output, named as the last node.
4. ``HardSigmoid`` and ``HardSwish`` nodes: replaced as above; the last new node writes the original output and
   keeps the node's name. ``Clip`` takes its bounds as inputs from opset 11, as attributes before.
5. ``x * HardSigmoid(x, alpha=1/6, beta=1/2)`` (hard-swish as tf2onnx and torch before opset 14 write it; the
   ``HardSigmoid`` read by that ``Mul`` alone) is a hard-swish: written as in rule 4 in place of the ``Mul``
   (expanded as a ``HardSigmoid``, it is the ``x * (r / 6)`` the converter fuses into ``HARD_SWISH``).

A node that breaks a rule stays as it is; slopes and constants nothing reads any more are dropped. A model that
lists value shapes (``value_info``, as ``simplify`` leaves it) gets them for the new values too: without them,
onnx2tf converted PP-OCRv4 rec wrongly (relative error 0.98 on its output). The stats
count the rewrites per kind and, per broken rule, the ``PRelu``/``HardSigmoid``/``HardSwish`` nodes it stopped
(``not_expanded``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils

WHY = {1: "1: input not float", 2: "2: PRelu slope not a constant"}
KINDS = ("prelu", "leaky_relu", "hard_swish", "hard_sigmoid")


class _Graph(onnx_utils.GraphIndex):
    """The model being rewritten: its opset, constants, producers, consumers, value types and ranks, names in use."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "onnx", "expanding activations")
        graph = model.graph
        super().__init__(graph)
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)
        inferred = onnx.shape_inference.infer_shapes(model).graph
        infos = [*inferred.input, *inferred.value_info, *inferred.output]
        self.types = {v.name: v.type.tensor_type.elem_type for v in infos if v.type.tensor_type.elem_type}
        self.ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in infos if v.type.tensor_type.HasField("shape")}
        self.taken = {n for node in graph.node for n in (*node.input, *node.output)} | set(self.consts)
        self.initializers: list[Any] = []

    def dtype(self, name: str) -> Any | None:
        """Rule 1: the numpy float type of ``name`` (float32 when unknown), or None when it is not float."""
        from onnx import helper

        elem = self.types.get(name)
        dtype = np.dtype(np.float32) if elem is None else np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        return dtype if dtype.kind == "f" else None

    def const(self, base: str, value: Any, dtype: Any) -> str:
        """A new initializer holding ``value`` as ``dtype``; returns its name."""
        from onnx import numpy_helper

        name = onnx_utils.unique_name(base, self.taken)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def value(self, base: str) -> str:
        return onnx_utils.unique_name(base, self.taken)

    def is_scalar(self, name: str, value: float) -> bool:
        const = self.consts.get(name)
        return const is not None and const.size == 1 and abs(float(const.reshape(-1)[0]) - value) <= 1e-6 * abs(value)

    def only_use(self, name: str, node: Any) -> bool:
        """``name`` feeds ``node`` alone and is not a graph output."""
        return name not in self.graph_outputs and [id(n) for n in self.consumers.get(name, [])] == [id(node)]


def _clip(g: _Graph, x: str, out: str, base: str, dtype: Any) -> Any:
    """``Clip(x, 0, 6)`` in the model's opset (bounds as inputs from opset 11, attributes before)."""
    from onnx import helper

    if g.opset < 11:
        return helper.make_node("Clip", [x], [out], name=f"{base}__clip", min=0.0, max=6.0)
    return helper.make_node("Clip", [x, g.const(f"{base}__zero", 0.0, dtype), g.const(f"{base}__six", 6.0, dtype)],
                            [out], name=f"{base}__clip")


def _swish_tail(g: _Graph, x: str, relu6: str, out: str, base: str, dtype: Any) -> list[Any]:
    """``Mul(relu6, Div(x, 6))`` writing ``out`` (in that operand order: see the module docstring)."""
    from onnx import helper

    scaled = g.value(f"{base}__edgec_x6")
    return [helper.make_node("Div", [x, g.const(f"{base}__six_div", 6.0, dtype)], [scaled], name=f"{base}__div"),
            helper.make_node("Mul", [relu6, scaled], [out], name=base)]


def _prelu(g: _Graph, node: Any, dtype: Any) -> tuple[str, list[Any]] | int:
    """Rule 2: the nodes for a ``PRelu`` (``LeakyRelu`` for a one-element slope), or the broken rule."""
    from onnx import helper

    slope = g.consts.get(node.input[1])
    if slope is None:
        return 2
    x, out, base = node.input[0], node.output[0], node.name or node.output[0]
    if slope.size == 1:
        return "leaky_relu", [helper.make_node("LeakyRelu", [x], [out], name=base, alpha=float(slope.reshape(-1)[0]))]
    rank = g.ranks.get(x, slope.ndim)
    slope = slope.reshape((1,) * max(rank - slope.ndim, 0) + slope.shape)
    neg, n, pos, q = (g.value(f"{base}__edgec_{tag}") for tag in ("neg", "relu_neg", "relu", "neg_part"))
    return "prelu", [
        helper.make_node("Mul", [x, g.const(f"{base}__minus_one", -1.0, dtype)], [neg], name=f"{base}__neg"),
        helper.make_node("Relu", [neg], [n], name=f"{base}__relu_neg"),
        helper.make_node("Add", [x, n], [pos], name=f"{base}__relu"),
        helper.make_node("Mul", [n, g.const(f"{base}__minus_slope", -slope, dtype)], [q], name=f"{base}__neg_part"),
        helper.make_node("Add", [pos, q], [out], name=base)]


def _hard_sigmoid(g: _Graph, node: Any, dtype: Any) -> list[Any]:
    """Rule 4: ``Clip(6a * x + 6b, 0, 6) / 6`` for a ``HardSigmoid``."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    base, (scaled, shifted, clipped) = node.name or node.output[0], (g.value(f"{node.output[0]}__edgec_{t}")
                                                                      for t in ("scaled", "shifted", "relu6"))
    return [helper.make_node("Mul", [node.input[0], g.const(f"{base}__6a", 6 * alpha, dtype)], [scaled], name=f"{base}__mul"),
            helper.make_node("Add", [scaled, g.const(f"{base}__6b", 6 * beta, dtype)], [shifted], name=f"{base}__add"),
            _clip(g, shifted, clipped, base, dtype),
            helper.make_node("Div", [clipped, g.const(f"{base}__six_div", 6.0, dtype)], [node.output[0]], name=base)]


def _hard_swish(g: _Graph, x: str, out: str, base: str, dtype: Any) -> list[Any]:
    """Rules 4-5: ``(x / 6) * Clip(x + 3, 0, 6)`` writing ``out``."""
    from onnx import helper

    shifted, clipped = g.value(f"{out}__edgec_shifted"), g.value(f"{out}__edgec_relu6")
    return [helper.make_node("Add", [x, g.const(f"{base}__three", 3.0, dtype)], [shifted], name=f"{base}__add"),
            _clip(g, shifted, clipped, base, dtype), *_swish_tail(g, x, clipped, out, base, dtype)]


def _swish_gate(g: _Graph, node: Any) -> bool:
    """Rule 5: ``node`` is ``HardSigmoid(x, 1/6, 1/2)`` read only by a ``Mul`` with ``x``."""
    from onnx import helper

    if node.op_type != "HardSigmoid" or node.domain not in DEFAULT_DOMAINS:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    users = g.consumers.get(node.output[0], [])
    return (abs(float(attrs.get("alpha", 0.2)) - 1 / 6) <= 1e-6 and abs(float(attrs.get("beta", 0.5)) - 0.5) <= 1e-6
            and node.output[0] not in g.graph_outputs and len(users) == 1 and users[0].op_type == "Mul"
            and users[0].domain in DEFAULT_DOMAINS and sorted(users[0].input) == sorted([node.input[0], node.output[0]]))


def _clip_bounds(g: _Graph, clip: Any) -> bool:
    from onnx import helper

    if len(clip.input) == 1:
        attrs = {a.name: helper.get_attribute_value(a) for a in clip.attribute}
        return attrs.get("min") == 0.0 and attrs.get("max") == 6.0
    return len(clip.input) == 3 and g.is_scalar(clip.input[1], 0.0) and g.is_scalar(clip.input[2], 6.0)


def _sixth_of(g: _Graph, node: Any | None) -> str | None:
    """The operand ``a`` when ``node`` is ``Div(a, 6)`` or ``Mul(a, 1/6)`` (either order), else None."""
    if node is None or node.domain not in DEFAULT_DOMAINS or len(node.input) != 2:
        return None
    if node.op_type == "Div":
        return str(node.input[0]) if g.is_scalar(node.input[1], 6.0) else None
    if node.op_type == "Mul":
        return next((str(a) for a, b in (node.input, node.input[::-1]) if g.is_scalar(b, 1 / 6)), None)
    return None


def _relu6_of(g: _Graph, r: str, x: str) -> bool:
    """``r`` is ``Clip(Add(x, 3), 0, 6)`` (operands of the ``Add`` in either order)."""
    clip = g.producer.get(r)
    if clip is None or clip.op_type != "Clip" or clip.domain not in DEFAULT_DOMAINS or not _clip_bounds(g, clip):
        return False
    add = g.producer.get(clip.input[0])
    return (add is not None and add.op_type == "Add" and add.domain in DEFAULT_DOMAINS
            and any(a == x and g.is_scalar(b, 3.0) for a, b in (add.input, add.input[::-1])))


def _swish_pattern(g: _Graph, last: Any) -> tuple[str, str, Any] | None:
    """Rule 3: ``(x, r, node to drop)`` of a written-out hard-swish ending at ``last``, or None: ``(x * r) / 6``
    (drops the ``Mul``) or ``x * (r / 6)`` (drops the division)."""
    m = _sixth_of(g, last)
    mul = g.producer.get(m) if m is not None else None
    if m is not None and mul is not None and mul.op_type == "Mul" and mul.domain in DEFAULT_DOMAINS and g.only_use(m, last):
        found = next(((x, r) for x, r in (mul.input, mul.input[::-1]) if _relu6_of(g, r, x)), None)
        if found is not None:
            return found[0], found[1], mul
    if last.op_type != "Mul" or last.domain not in DEFAULT_DOMAINS or len(last.input) != 2:
        return None
    for x, scaled in (last.input, last.input[::-1]):
        div = g.producer.get(scaled)
        r = _sixth_of(g, div)
        if r is not None and g.only_use(scaled, last) and _relu6_of(g, r, x):
            return x, r, div
    return None


def _node(g: _Graph, node: Any) -> tuple[str, list[Any], Any | None] | int | None:
    """``(kind, new nodes, node to drop)`` for a node that ends an activation, the broken rule, or None."""
    if node.domain not in DEFAULT_DOMAINS:
        return None
    if node.op_type in ("PRelu", "HardSigmoid", "HardSwish"):
        dtype = g.dtype(node.input[0])
        if dtype is None:
            return 1
        if node.op_type == "PRelu":
            found = _prelu(g, node, dtype)
            return found if isinstance(found, int) else (found[0], found[1], None)
        if node.op_type == "HardSwish":
            return "hard_swish", _hard_swish(g, node.input[0], node.output[0], node.name or node.output[0], dtype), None
        return None if _swish_gate(g, node) else ("hard_sigmoid", _hard_sigmoid(g, node, dtype), None)
    gate = next((g.producer[i] for i in node.input if i in g.producer and _swish_gate(g, g.producer[i])), None)
    if node.op_type == "Mul" and gate is not None and (dtype := g.dtype(gate.input[0])) is not None:
        return "hard_swish", _hard_swish(g, gate.input[0], node.output[0], node.name or node.output[0], dtype), gate
    swish = _swish_pattern(g, node)
    if swish is None or (dtype := g.dtype(swish[0])) is None:
        return None
    return "hard_swish", _swish_tail(g, swish[0], swish[1], node.output[0], node.name or node.output[0], dtype), swish[2]


def expand(model: Any) -> tuple[Counter[str], Counter[str]]:
    """Rewrite every activation that follows the rules, in place; returns the counts per kind and, per broken
    rule, the ``PRelu``/``HardSigmoid``/``HardSwish`` nodes left."""
    g = _Graph(model)
    done: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    replaced: dict[int, list[Any]] = {}
    for node in model.graph.node:
        found = _node(g, node)
        if isinstance(found, int):
            missed[WHY[found]] += 1
        elif found is not None:
            kind, nodes, dropped = found
            replaced[id(node)] = nodes
            if dropped is not None:
                replaced[id(dropped)] = []
            done[kind] += 1
    if replaced:
        old_inputs = {i for n in model.graph.node if id(n) in replaced for i in n.input}
        kept = [new for n in model.graph.node for new in replaced.get(id(n), [n])]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(g.initializers)
        _drop_unused(model.graph, old_inputs)
    return done, missed


def _drop_unused(graph: Any, names: set[str]) -> None:
    """Remove the initializers and ``Constant`` nodes among ``names`` (the replaced nodes' inputs) that nothing
    reads any more (the old slopes and 6s)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = names - used
    kept_inits = [i for i in graph.initializer if i.name not in dead]
    kept_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in dead)]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.node[:]
    graph.node.extend(kept_nodes)


class ExpandActivations(Pass):
    """``PRelu``, hard-swish, ``HardSigmoid`` -> ``Add``/``Mul``/``Relu``/``Clip`` (see the module docstring)."""

    name = "expand_activations"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        model = onnx_utils.load_model(artifact.path)
        done, missed = expand(model)
        for why, n in sorted(missed.items()):
            ctx.log(f"expand_activations: {n} node(s) not expanded, rule {why}")
        stats: dict[str, Any] = {kind: done[kind] for kind in KINDS}
        stats["not_expanded"] = dict(sorted(missed.items()))
        if not done:
            return PassResult(unchanged(artifact, ctx), False, stats)
        ctx.log("expand_activations: " + ", ".join(f"{done[k]} {k}" for k in KINDS if done[k]) + " written with Add/Mul/Clip")
        if len(model.graph.value_info):  # a simplified model: onnx2tf reads the shapes of the new values too
            model = require("onnx", "onnx", "expanding activations").shape_inference.infer_shapes(model)
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)
