"""``If`` nodes whose condition the input sizes decide, replaced by their branch before OpenVINO converts a model.

Why: torch exports ``x.squeeze(d)`` on a dim it cannot prove is 1 as ``If(Shape(x)[d] == 1, Squeeze(x, d),
Identity(x))``, and an RNN cell's batched check as ``If(Size(Shape(x)) == 1, ...)``. OpenVINO's ONNX
frontend gives such an ``If`` an output of unknown rank (its branches' ranks differ) and then refuses the
``Conv`` after it (``input data tensor's rank has to be known (static)``; silero-vad). With the input sizes
fixed it converts both branches and the one never taken fails its own shape checks instead.

Rules:
1. Input dims come from the artifact's specs (the dims the source fixes; openvino keeps the others dynamic).
   ONNX shape inference then gives the other tensors' dims and ranks (inside ``If``/``Loop`` bodies too), so
   a rank check always folds and a squeeze check folds when the squeezed dim is fixed.
2. A condition is evaluated from constants and those dims through a few integer ops (:data:`_FOLDABLE`:
   ``Shape``, ``Size``, ``Gather``, ``Equal``, ``Not``, ``Cast``, ...); an unknown dim makes it unknown.
3. An ``If`` whose condition is known becomes its branch's nodes (and initializers: a name the graph already
   has must hold the same tensor, else the ``If`` stays) in place, with an ``Identity`` per output; repeated, as a folded branch can decide the next condition. Nothing else changes.
4. Where ONNX shape inference cannot follow (a ``Reshape`` to a computed shape, an STFT's framing), a condition
   the input sizes decide is computed by running the model: when every input's dims are fixed, a top-level
   ``If`` whose condition reads the inputs only through ``Shape``/``Size`` of tensors whose shapes follow from
   the input shapes (:func:`shape_conditions`) gets its value from onnxruntime on zeros of those sizes.
   Ops whose output shape depends on values (``NonZero``, a ``Reshape`` to a shape computed from data, ...)
   make the shapes after them data-dependent, and a condition reading them is left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.core.types import TensorSpec

_FOLDABLE = frozenset({"Constant", "Shape", "Size", "Gather", "Equal", "Not", "Cast", "Identity", "Squeeze",
                       "Unsqueeze", "Greater", "Less", "And", "Or", "Concat"})
_MOVES = frozenset({"Gather", "Identity", "Squeeze", "Unsqueeze", "Concat"})
"""Ops that pass a partly known shape on (the dims they pick may all be known)."""
_MAX_ROUNDS = 16
_SMALL = 64
"""Initializers up to this many elements take part in conditions."""


def fixed_dims(spec: TensorSpec) -> list[int | None]:
    """Rule 1: each dim's size when the spec fixes it, else None."""
    return [d if isinstance(d, int) else None for d in spec.shape]


def fold_ifs(model: Any, dims: dict[str, list[int | None]]) -> int:
    """Rules 1-3 on ``model`` (an ``onnx.ModelProto``, changed in place); returns how many ``If`` were folded."""
    import onnx

    if not _has_if(model.graph):
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for inp in probe.graph.input:
        for dim, size in zip(inp.type.tensor_type.shape.dim, dims.get(inp.name, [])):
            if size is not None:
                dim.Clear()
                dim.dim_value = size
    folded = 0
    for _ in range(_MAX_ROUNDS):
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
        except Exception:  # onnx's checker errors (any type) on a graph it cannot type: fold nothing more
            break
        count = _fold_graph(probe.graph, _shapes(inferred.graph), {})
        if not count:
            break
        folded += count
    if folded:
        _copy_nodes(probe.graph, model.graph)
    return folded


_SHAPE_FROM_SHAPES = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Conv", "ConvTranspose", "CumSum", "DepthToSpace", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Flatten", "Floor", "Gather", "GatherElements", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "GRU",
    "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "LSTM", "MatMul", "Max",
    "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu", "RNN",
    "Round", "Selu", "Sigmoid", "Sign", "Sin", "Cos", "Softmax", "Softplus", "SpaceToDepth", "Sqrt", "Sub", "Sum",
    "Tanh", "Transpose", "Where", "Xor",
})
"""Ops whose output shape follows from their inputs' shapes alone (rule 4); any other op's output shape
depends on the values of its inputs after the first (a ``Reshape``'s target shape, a ``Slice``'s ends)."""


def fold_ifs_by_running(model: Any, sizes: dict[str, tuple[int, ...]]) -> int:
    """Rule 4 on ``model`` (changed in place) with every graph input at ``sizes``; returns how many ``If`` were
    folded (0 when an input has no size or onnxruntime cannot run the model)."""
    folded = 0
    for _ in range(_MAX_ROUNDS):
        conditions = shape_conditions(model.graph)
        values = _run_conditions(model, conditions, sizes) if conditions else None
        if not values:
            break
        count = _fold_graph(model.graph, {}, values)
        if not count:
            break
        folded += count
    return folded


def shape_conditions(graph: Any) -> list[str]:
    """The conditions of ``graph``'s top-level ``If`` nodes that depend on its inputs' shapes only (rule 4)."""
    data = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    values, shapes, found = set(data), set[str](), list[str]()
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in ("Shape", "Size"):
            value, shape = inputs[0] in shapes, False
        elif node.op_type in ("If", "Loop", "Scan") or any(a.HasField("g") for a in node.attribute):
            if node.op_type == "If" and inputs[0] not in values:
                found.append(inputs[0])
            value = shape = True  # their bodies read the outer graph: not followed
        else:
            value = any(name in values for name in inputs)
            shape = any(name in shapes for name in inputs) or (
                node.op_type not in _SHAPE_FROM_SHAPES and any(name in values for name in inputs[1:])) or (
                node.op_type in ("NonZero", "Unique", "Compress", "NonMaxSuppression") and value)
        values.update(node.output if value else ())
        shapes.update(node.output if shape else ())
    return found


def _run_conditions(model: Any, conditions: list[str], sizes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The conditions' values from onnxruntime on zeros of ``sizes``; None when that is not possible."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None) for name in conditions)
    feeds = {}
    initializers = {i.name for i in model.graph.initializer}
    for inp in (i for i in model.graph.input if i.name not in initializers):
        if inp.name not in sizes:
            return None
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = np.zeros(sizes[inp.name], dtype=dtype)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(conditions, session.run(None, feeds)))
    except Exception:  # onnxruntime raises its own Fail/InvalidArgument types on a graph it cannot run: fold nothing
        return None


def _copy_nodes(source: Any, target: Any) -> None:
    del target.node[:]
    target.node.extend(source.node)
    known = {i.name for i in target.initializer}
    target.initializer.extend(i for i in source.initializer if i.name not in known)


def _has_if(graph: Any) -> bool:
    return any(node.op_type == "If" for node in graph.node)


def _shapes(graph: Any, found: dict[str, list[int | None] | None] | None = None) -> dict[str, list[int | None] | None]:
    """Tensor name -> dims (None where unknown; None for an unknown rank), from every graph of the model."""
    found = {} if found is None else found
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        found[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim] \
            if tensor.HasField("shape") else None
    for init in graph.initializer:
        found[init.name] = list(init.dims)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                _shapes(attr.g, found)
    return found


def _fold_graph(graph: Any, shapes: dict[str, Any], outer: dict[str, np.ndarray]) -> int:
    from onnx import numpy_helper

    values = dict(outer)
    values.update({i.name: numpy_helper.to_array(i) for i in graph.initializer if int(np.prod(i.dims)) <= _SMALL})
    nodes, folded, taken = [], 0, {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "If":
            branch = _branch(node, values)
            if branch is not None and all(taken.get(i.name, i) == i for i in branch.initializer):
                nodes.extend(_inline(node, branch, graph))
                folded += 1
                continue
        for attr in node.attribute:
            if attr.HasField("g"):
                folded += _fold_graph(attr.g, shapes, values)
        if node.op_type in _FOLDABLE:
            _evaluate(node, values, shapes)
        nodes.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(nodes)
    return folded


def _branch(node: Any, values: dict[str, np.ndarray]) -> Any:
    cond = values.get(node.input[0])
    if cond is None or cond.size != 1:
        return None
    name = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
    return next(a.g for a in node.attribute if a.name == name)


def _inline(node: Any, branch: Any, graph: Any) -> list[Any]:
    from onnx import helper

    known = {i.name for i in graph.initializer}  # a name already there holds the same tensor (checked by the caller)
    graph.initializer.extend(i for i in branch.initializer if i.name not in known)
    moved = list(branch.node)
    moved += [helper.make_node("Identity", [out.name], [name], name=f"{node.name or name}/folded_if_{i}")
              for i, (out, name) in enumerate(zip(branch.output, node.output)) if name]
    return moved


def _evaluate(node: Any, values: dict[str, np.ndarray], shapes: dict[str, Any]) -> None:
    """Rule 2: the node's output value when its inputs are known (dims of ``Shape`` inputs from ``shapes``)."""
    try:
        result = _compute(node, [values.get(i) for i in node.input], shapes)
    except (ValueError, IndexError, TypeError):
        return
    if result is not None and node.output:
        values[node.output[0]] = np.asarray(result)


def _compute(node: Any, args: list[Any], shapes: dict[str, Any]) -> Any:
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Constant":
        return numpy_helper.to_array(attrs["value"]) if "value" in attrs else None
    if op == "Shape":
        dims = shapes.get(node.input[0])
        part = None if dims is None else dims[attrs.get("start", 0):attrs.get("end", len(dims))]
        if part is None:
            return None
        return np.array(part, dtype=np.int64) if None not in part else np.array(part, dtype=object)
    if op == "Size":  # of a partly known shape too: its length is the rank
        dims = list(args[0].shape) if args[0] is not None else shapes.get(node.input[0])
        return None if dims is None or None in dims else np.int64(np.prod(dims))
    if any(a is None for name, a in zip(node.input, args) if name):
        return None
    if op not in _MOVES and any(_partial(a) for a in args if a is not None):
        return None  # an unknown dim reaches arithmetic or a comparison
    result = _numeric(op, args, attrs)
    return result.astype(np.int64) if isinstance(result, np.ndarray) and result.dtype == object and not _partial(result) else result


def _partial(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == object and any(v is None for v in value.reshape(-1))


def _numeric(op: str, args: list[Any], attrs: dict[str, Any]) -> Any:
    simple = {"Size": lambda: np.int64(args[0].size), "Equal": lambda: np.equal(args[0], args[1]),
              "Not": lambda: np.logical_not(args[0]), "Identity": lambda: args[0],
              "Greater": lambda: np.greater(args[0], args[1]), "Less": lambda: np.less(args[0], args[1]),
              "And": lambda: np.logical_and(args[0], args[1]), "Or": lambda: np.logical_or(args[0], args[1])}
    if op in simple:
        return simple[op]()
    if op == "Gather":
        return np.take(args[0], args[1], axis=attrs.get("axis", 0))
    if op == "Cast":
        from onnx import helper

        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=attrs.get("axis", 0))
    axes = attrs.get("axes", args[1] if len(args) > 1 and args[1] is not None else None)
    if op == "Squeeze":
        return np.squeeze(args[0], axis=None if axes is None else tuple(int(a) for a in np.atleast_1d(axes)))
    if op == "Unsqueeze" and axes is not None:
        return np.expand_dims(args[0], tuple(int(a) for a in np.atleast_1d(axes)))
    return None
