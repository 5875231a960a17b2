"""Give ``MaxPool`` its padding as copies of the edge rows instead of -inf: ceil-mode and padded max pools.

Why: onnx2tf converts a ``MaxPool`` with ``ceil_mode=1`` or ``pads`` (PyTorch's ``MaxPool2d(3, 2,
ceil_mode=True)``: MTCNN, GoogLeNet, SqueezeNet) into ``PADV2`` with the float minimum (-3.4e38) and a
``MAX_POOL_2D``. Full-integer INT8 then calibrates the padded tensor's range from -3.4e38: MTCNN ONet's first
PReLU got the scale 1.3e36 (every activation quantized to 0), and XNNPACK refuses the model ("failed to
prepare"). Padding with copies of the edge values instead keeps the tensor's range.

Math (why it is exact): a max pool window that covers padded positions also covers the edge row they copy.
Windows are contiguous, ``k`` wide; a window starting in the begin padding (``start >= -pads_begin`` with
``pads_begin < k``) ends at ``start + k - 1 >= 0``, so it holds row 0; a window covering end padding starts at or
before the last row (ceil mode's rule: the last window starts inside the input or the begin padding, checked
here), so it holds row ``n - 1``. A copy of a value the window already holds never changes its maximum, and a
window without padding sees the same values as before.

Rules, for each ``MaxPool`` node:
1. Default ONNX domain, one output (no ``Indices``), ``auto_pad`` NOTSET, dilations 1, and padding
   (``pads`` > 0 or ``ceil_mode=1``); the input's sizes known (ONNX shape inference); the output size as
   onnxruntime computes it (:func:`output_size`).
2. Per spatial axis: the end padding a floor-mode pool needs for the same output size,
   ``(out - 1) * stride + kernel - size - pads_begin`` (at least 0); the pool is rewritten only when every
   window covering padding covers the edge row (``pads_begin < kernel`` and ``(out - 1) * stride - pads_begin <
   size``).
3. The input is padded by ``Concat`` with ``Slice`` copies of its first and last rows, axis by axis; the
   ``MaxPool`` keeps its name, kernel and strides, with no ``pads`` and ``ceil_mode=0``.

The tflite target's ONNX route asks for this pass (``TfliteTarget.onnx_rewrites``); the stats count the pools.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


def _dims(info: Any) -> list[int] | None:
    shape = info.type.tensor_type.shape
    dims = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return None if not dims or None in dims else dims  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, begin: int, end: int, ceil: bool) -> int:
    """A max pool's output length as onnxruntime and PyTorch compute it: in ceil mode, a last window that would
    start in the end padding is dropped (ONNX shape inference keeps it in some opsets)."""
    span = size + begin + end - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    return out - 1 if ceil and (out - 1) * stride >= size + begin else out


def _plan(node: Any, shapes: dict[str, list[int]]) -> list[tuple[int, int]] | None:
    """Rules 1-2: ``(pads_begin, pads_end)`` per spatial axis for the edge padding, or None to leave it."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type != "MaxPool" or node.domain not in DEFAULT_DOMAINS or len([o for o in node.output if o]) != 1:
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(d != 1 for d in attrs.get("dilations", [])):
        return None
    x, kernel = shapes.get(node.input[0]), list(attrs.get("kernel_shape", []))
    if x is None or not kernel or len(x) != len(kernel) + 2:
        return None
    strides = list(attrs.get("strides", [1] * len(kernel)))
    pads, ceil = list(attrs.get("pads", [0] * 2 * len(kernel))), bool(attrs.get("ceil_mode", 0))
    if not ceil and not any(pads):
        return None
    plan = []
    for axis, (k, s) in enumerate(zip(kernel, strides)):
        size, begin, end = x[axis + 2], pads[axis], pads[axis + len(kernel)]
        out = output_size(size, k, s, begin, end, ceil)
        if out < 1 or begin >= k or (out - 1) * s - begin >= size:
            return None
        plan.append((begin, max((out - 1) * s + k - size - begin, 0)))
    return plan


def rewrite(model: Any) -> int:
    """Rules 1-3 on ``model`` (changed in place); returns how many pools were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {i.name: d for i in [*graph.input, *graph.value_info, *graph.output] if (d := _dims(i)) is not None}
    taken = {name for n in model.graph.node for name in (*n.input, *n.output)} | {i.name for i in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        plan = _plan(node, shapes)
        if plan is None:
            nodes.append(node)
            continue
        current, size = node.input[0], list(shapes[node.input[0]])
        for axis, (begin, end) in enumerate(plan, start=2):
            if not begin and not end:
                continue
            base = f"{node.name or node.output[0]}__edgec_pad{axis}"
            edges = []
            for tag, start, stop in (("first", 0, 1), ("last", size[axis] - 1, size[axis])):
                names = [onnx_utils.unique_name(f"{base}_{tag}_{role}", taken) for role in ("starts", "ends", "axes", "out")]
                for name, value in zip(names, (start, stop, axis)):
                    model.graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
                nodes.append(helper.make_node("Slice", [current, *names[:3]], [names[3]], name=names[3]))
                edges.append(names[3])
            padded = onnx_utils.unique_name(base, taken)
            nodes.append(helper.make_node("Concat", [edges[0]] * begin + [current] + [edges[1]] * end, [padded],
                                          name=padded, axis=axis))
            current, size[axis] = padded, size[axis] + begin + end
        kept = [a for a in node.attribute if a.name not in ("pads", "ceil_mode")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.input[0] = current
        nodes.append(node)
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


class EdgePadPools(Pass):
    """Padded and ceil-mode ``MaxPool`` -> edge copies + a plain ``MaxPool`` (see the module docstring)."""

    name = "edge_pad_pools"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        model = onnx_utils.load_model(artifact.path)
        count = rewrite(model)
        stats = {"rewritten": count}
        if not count:
            return PassResult(unchanged(artifact, ctx), False, stats)
        ctx.log(f"edge_pad_pools: {count} padded MaxPool(s) pad with edge copies instead of -inf")
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)
