"""Fuse GELU written out as ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` into one ONNX ``Gelu`` node (opset 20).

Why: onnx2tf maps ``Gelu`` to ``tf.nn.gelu`` (the TFLite builtin ``GELU``), while a bare ``Erf`` becomes
``tf.Erf``, for which TFLite has no builtin kernel. onnx2tf fuses the pattern itself only in the order
``(0.5 * x) * (1 + erf)``, which ``torch.onnx.export`` does not emit. The tflite target's ONNX route asks
for this pass (``TfliteTarget.onnx_rewrites``); MiniLM-L6 has 6 such GELUs.

Math (why it is exact): GELU(x) = x * Phi(x), with Phi the standard normal CDF,
Phi(x) = (1 + erf(x / sqrt(2))) / 2. ONNX ``Gelu`` (opset 20, ``approximate="none"``, the default) is
defined as ``0.5 * x * (1 + erf(x / sqrt(2)))``: the same function, so only the float rounding order may
differ (below 1e-6 relative on the test graph).

Rules, for each ``Erf`` node of the default ONNX domain:
1. Its input is ``x / sqrt(2)`` (``Div`` by the constant sqrt(2)) or ``x * (1 / sqrt(2))`` (``Mul``, the
   constant on either side).
2. Every value between ``x`` and the result (the scaled input, the Erf, the Add, the first Mul) has exactly
   one consumer, the next node of the pattern, and is not a graph output.
3. The Erf's output is added to the constant 1 (either side).
4. That sum is multiplied by ``x`` and by the constant 0.5, one ``Mul`` after the other, in either order.
5. Constants are one-element tensors (initializers or ``Constant`` nodes) within 1e-4 relative of their
   value (the float32 roundings of sqrt(2) and 1/sqrt(2) that exporters write pass; a hand-typed 1.414 does not).
6. The matched nodes become one ``Gelu`` node named ``<Erf name>__gelu`` writing the last Mul's output; the
   default-domain opset is raised to 20 when lower.
7. The model with the raised opset must still pass ``onnx.checker`` (ops whose inputs or attributes changed
   between its opset and 20, e.g. ``ReduceMean``'s ``axes`` attribute before 18, would break): otherwise
   nothing is fused and the input is passed on unchanged.

A candidate that breaks a rule stays as it is; the stats count, per broken rule, the candidates it stopped
(``not_fused``), and the log says why, so that a missed fusion is visible in the manifest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import brief, require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils

GELU_OPSET = 20
SQRT2 = 2 ** 0.5
WHY = {
    1: "1: Erf input is not x/sqrt(2) or x*(1/sqrt(2))",
    2: "2: an intermediate value has other consumers or is a graph output",
    3: "3: Erf output is not added to 1",
    4: "4: the sum is not multiplied by x and 0.5",
    7: "7: raising the opset to 20 makes the model invalid",
}


class _Index(onnx_utils.GraphIndex):
    """One ONNX graph indexed by value, with the scalar and next-node checks of the rules."""

    def is_scalar(self, name: str, value: float) -> bool:
        """Rule 5: ``name`` is a one-element constant within 1e-4 relative of ``value``."""
        const = self.consts.get(name)
        return const is not None and const.size == 1 and abs(float(const.reshape(-1)[0]) - value) <= 1e-4 * value

    def next_node(self, node: Any, op_type: str, rule: int) -> Any | int:
        """The single consumer of ``node``'s output; 2 when there are others (or it is a graph output),
        ``rule`` when that consumer is not a default-domain ``op_type``."""
        found = self.consumers.get(node.output[0], [])
        if node.output[0] in self.graph_outputs or len(found) != 1:
            return 2
        return found[0] if found[0].op_type == op_type and found[0].domain in DEFAULT_DOMAINS else rule


def _other_input(node: Any, name: str) -> str:
    return str(node.input[1] if node.input[0] == name else node.input[0])


def _scaled_input(index: _Index, erf: Any) -> tuple[Any, str] | int:
    """Rule 1: the scaling node and ``x``, or the number of the broken rule."""
    scale = index.producer.get(erf.input[0])
    if scale is None or len(scale.input) != 2:
        return 1
    if scale.op_type == "Div" and index.is_scalar(scale.input[1], SQRT2):
        x = scale.input[0]
    elif scale.op_type == "Mul" and any(index.is_scalar(i, 1 / SQRT2) for i in scale.input):
        x = scale.input[0] if index.is_scalar(scale.input[1], 1 / SQRT2) else scale.input[1]
    else:
        return 1
    return (scale, str(x)) if index.next_node(scale, "Erf", 1) is erf else 2


def match(index: _Index, erf: Any) -> tuple[list[Any], str] | int:
    """The pattern around ``erf`` (scale, Erf, Add, Mul, Mul) and ``x``, or the number of the first broken rule."""
    found = _scaled_input(index, erf)
    if isinstance(found, int):
        return found
    scale, x = found
    add = index.next_node(erf, "Add", 3)
    if isinstance(add, int) or not index.is_scalar(_other_input(add, erf.output[0]), 1.0):
        return add if isinstance(add, int) else 3
    mul1 = index.next_node(add, "Mul", 4)
    if isinstance(mul1, int):
        return mul1
    mul2 = index.next_node(mul1, "Mul", 4)
    if isinstance(mul2, int):
        return mul2
    factors = [_other_input(mul1, add.output[0]), _other_input(mul2, mul1.output[0])]
    half = factors[1] if factors[0] == x else factors[0]
    if x not in factors or not index.is_scalar(half, 0.5):
        return 4
    return [scale, erf, add, mul1, mul2], x


def fuse(model: Any) -> tuple[int, Counter[str]]:
    """Fuse every matching pattern in place (rules 1-6); returns the count and, per broken rule, the misses."""
    from onnx import helper

    graph, index = model.graph, _Index(model.graph)
    replaced: dict[int, Any] = {}
    missed: Counter[str] = Counter()
    for erf in [n for n in graph.node if n.op_type == "Erf" and n.domain in DEFAULT_DOMAINS]:
        found = match(index, erf)
        if isinstance(found, int):
            missed[WHY[found]] += 1
            continue
        nodes, x = found
        replaced.update({id(n): None for n in nodes[:-1]})
        replaced[id(nodes[-1])] = helper.make_node("Gelu", [x], list(nodes[-1].output), name=f"{erf.name}__gelu")
    if replaced:
        kept = [replaced.get(id(n), n) for n in graph.node]
        del graph.node[:]
        graph.node.extend([n for n in kept if n is not None])
        _raise_opset(model)
    return sum(1 for n in replaced.values() if n is not None), missed


def _raise_opset(model: Any) -> None:
    """Rule 6: ``Gelu`` needs opset 20 in the default domain."""
    default = [o for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    for opset in default:
        opset.version = max(opset.version, GELU_OPSET)
    if not default:
        model.opset_import.add(domain="", version=GELU_OPSET)


class FuseGelu(Pass):
    """Written-out exact GELU -> one ``Gelu`` node (see the module docstring for the rules)."""

    name = "fuse_gelu"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        onnx = require("onnx", "onnx", "fusing GELU")
        model = onnx_utils.load_model(artifact.path)
        fused, missed = fuse(model)
        if fused:
            try:
                onnx.checker.check_model(model)
            except onnx.checker.ValidationError as exc:
                missed[WHY[7]] += fused
                ctx.log(f"fuse_gelu: nothing fused: {WHY[7]}: {brief(exc, 200)}")
                fused = 0
        for why, count in sorted(missed.items()):
            ctx.log(f"fuse_gelu: {count} Erf node(s) not fused, rule {why}")
        stats = {"fused": fused, "not_fused": dict(sorted(missed.items()))}
        if not fused:
            return PassResult(unchanged(artifact, ctx), False, stats)
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)

