"""Exact rewrites of a ``torch.export`` program before coremltools converts it (the coreml target's pt2 route).

coremltools' torch frontend refuses some graphs in the form ``torch.export`` writes them, although Core ML
computes them. Each rewrite here keeps the program's values bit for bit; zoo models that needed them:
EfficientNet-Lite0 (``F.relu6``) and USE multilingual v3 (a uint8 embedding table).
"""

from __future__ import annotations

from typing import Any

_GATHERS = ("aten.index.Tensor", "aten.index_select.default", "aten.embedding.default", "aten.gather.default")
"""Ops that read rows of their first argument (the table) at integer positions."""


def convertible(program: Any) -> Any:
    """Rewrite, exactly, what coremltools' torch frontend refuses in the form ``torch.export`` writes it.

    1. ``hardtanh(x, 0, 6)`` with int bounds (``F.relu6`` and ``relu6`` decompose to it): the bounds become
       floats, since Core ML's ``clip`` takes bounds of x's dtype (``clamp`` is converted with promotion).
    2. A gather (:data:`_GATHERS`) from an 8-bit integer table whose rows are only cast to a float (a
       dequantized embedding): the table is cast to float32 before the gather instead, which is exact for
       8-bit values; Core ML's gather takes 8-bit tables only from iOS17. The table is then stored as a
       float weight, compressed like any other by ``int8`` or ``--palettize``.
    """
    graph = program.graph_module.graph
    changed = [_float_bounds(node) or _float_table(graph, node) for node in list(graph.nodes)]
    if any(changed):
        graph.lint()
        program.graph_module.recompile()
    return program


def _float_bounds(node: Any) -> bool:
    if node.op != "call_function" or str(node.target) != "aten.hardtanh.default" or len(node.args) < 2:
        return False
    x, *bounds = node.args
    val = x.meta.get("val") if hasattr(x, "meta") else None
    if all(isinstance(b, float) for b in bounds) or val is None or not val.dtype.is_floating_point:
        return False
    node.args = (x, *(float(b) for b in bounds))
    return True


def _float_table(graph: Any, node: Any) -> bool:
    import torch

    if node.op != "call_function" or str(node.target) not in _GATHERS:
        return False
    table = node.args[0]
    val = table.meta.get("val") if hasattr(table, "meta") else None
    if val is None or val.dtype not in (torch.uint8, torch.int8) or not node.users:
        return False
    checks = [u for u in node.users if str(u.target) == "aten._assert_tensor_metadata.default"]
    if not all(u in checks or (str(u.target) == "aten._to_copy.default"
                               and getattr(u.kwargs.get("dtype"), "is_floating_point", False)) for u in node.users):
        return False  # integer arithmetic on the rows (wrap-around) would change meaning in float
    with graph.inserting_before(node):
        cast = graph.call_function(torch.ops.aten._to_copy.default, (table,), {"dtype": torch.float32})
    cast.meta["val"] = val.to(torch.float32)
    node.replace_input_with(table, cast)
    node.meta["val"] = node.meta["val"].to(torch.float32)
    for check in checks:  # torch.export's dtype assertion on the rows: now float32
        check.args = (*check.args[:3], torch.float32, *check.args[4:])
    return True
