"""Small helpers around the ``onnx`` package: loading with clear errors, interface specs, op counts.

``onnx`` is imported inside functions so that the core stays importable without it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError, brief, require
from edgec.core.types import FORMAT_ONNX, ModelArtifact, TensorSpec, sha256_file


def _onnx() -> Any:
    return require("onnx", "onnx", "reading ONNX models")


class GraphIndex:
    """One ONNX graph indexed by value: constants (initializers and ``Constant`` nodes), producers, consumers and
    graph outputs."""

    def __init__(self, graph: Any) -> None:
        numpy_helper = _onnx().numpy_helper
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                            if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"})
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}


def load_model(path: Path) -> Any:
    """Load and check an ONNX model.

    Raises:
        ExportError: when the file is not a valid ONNX model (truncated, corrupt, wrong format).
    """
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # one onnx call on the user's file: protobuf raises several types for corrupt bytes
        raise ExportError(
            f"could not parse {path} as an ONNX model ({type(exc).__name__}: {brief(exc, 200)})",
            hint="expected a complete .onnx file; re-export it",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ExportError(f"{path} holds no ONNX graph (empty or not an ONNX file)", hint="re-export the model")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: a model proto over 2 GB
        raise ExportError(f"{path} is not a valid ONNX model: {brief(exc, 200)}", hint="re-export the model") from exc
    return model



def _dtype_name(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, ValueError, TypeError):  # no numpy dtype for it (unknown or string types): use onnx's name
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def value_info_spec(value_info: Any) -> TensorSpec:
    """A :class:`TensorSpec` from an ONNX ValueInfoProto.

    A ``dim_value`` of ``-1`` (older exporters such as paddle2onnx write it for a dynamic dim) is dynamic
    (``None``), like a dim with neither a value nor a name; any other negative value stays, and is refused
    where input sizes are checked.
    """
    tensor_type = value_info.type.tensor_type
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value != -1:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(str(dim.dim_param))
        else:
            dims.append(None)
    return TensorSpec(value_info.name, tuple(dims), _dtype_name(tensor_type.elem_type))


def graph_specs(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of a model (initializers listed as inputs are skipped)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(value_info_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(value_info_spec(v) for v in model.graph.output)
    return inputs, outputs


def artifact_from_file(path: Path) -> ModelArtifact:
    """Load, check and describe an ONNX file as a :class:`ModelArtifact`."""
    model = load_model(path)
    inputs, outputs = graph_specs(model)
    return ModelArtifact(path, FORMAT_ONNX, inputs, outputs, sha256_file(path))


def save_model(model: Any, path: Path) -> None:
    """Save a model as a single file (weights inline; models over 2 GB are out of scope for now)."""
    _onnx().save_model(model, str(path))


def op_counts(model: Any) -> dict[str, int]:
    """Node count per op type (with domain prefix for non-default domains), sorted by name."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        counts[f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    return dict(sorted(counts.items()))


def weight_precision(model: Any) -> str:
    """A summary of how the weights are stored: fp32, fp16, int8 (QDQ/QOperator) or mixed."""
    onnx = _onnx()
    counts = op_counts(model)
    if any(op in counts for op in ("DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear")):
        return "int8"
    sizes: Counter[int] = Counter()
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        sizes[init.data_type] += n
    if not sizes:
        return "unknown"
    dominant = sizes.most_common(1)[0][0]
    names = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    return names.get(dominant, onnx.TensorProto.DataType.Name(dominant).lower())


def parameter_count(model: Any) -> int:
    """Number of weight elements stored as initializers."""
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n
    return total


def save_artifact(model: Any, work_dir: Path, filename: str = "model.onnx") -> ModelArtifact:
    """Save ``model`` under ``work_dir`` and describe it (specs from the graph, digest of the bytes)."""
    path = work_dir / filename
    save_model(model, path)
    inputs, outputs = graph_specs(model)
    return ModelArtifact(path, FORMAT_ONNX, inputs, outputs, sha256_file(path))


def sort_file(path: Path) -> bool:
    """:func:`sort_nodes` on the model file at ``path``, rewritten only when the order changed (onnxruntime's
    quantizers sort by explicit inputs, ignoring the values an ``If``/``Loop`` body reads from outside)."""
    model = _onnx().load(str(path))
    changed = sort_nodes(model)
    if changed:
        save_model(model, path)
    return changed


def outer_names(node: Any) -> set[str]:
    """Values of the enclosing graphs that the subgraphs of ``node`` (``If`` branches, ``Loop`` bodies) read."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
            local = {v.name for v in sub.input} | {i.name for i in sub.initializer} | {""}
            for inner in sub.node:
                local.update(inner.output)
            for inner in sub.node:
                names.update(n for n in (*inner.input, *outer_names(inner)) if n not in local)
    return names


def sort_nodes(model: Any) -> bool:
    """Put the graph's nodes in topological order in place; returns whether the order changed.

    onnxruntime's float16 conversion appends the input casts at the end of the node list; onnxruntime
    does not mind, but ``onnx.checker`` and TensorRT's parser do.

    Raises:
        ExportError: a node reads a value nothing produces, or the graph has a cycle.
    """
    graph = model.graph
    known = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    needs = {id(n): [*n.input, *outer_names(n)] for n in pending}  # an If/Loop body reads outer values by name
    while pending:
        ready = [n for n in pending if all(name in known for name in needs[id(n)])]
        if not ready:
            raise ExportError(f"node {pending[0].name!r} reads values that no node produces (or the graph has a cycle)")
        for node in ready:
            known.update(node.output)
        ordered.extend(ready)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    if [id(n) for n in ordered] == [id(n) for n in graph.node]:
        return False
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return True


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``, ... the first not in ``taken``; added to ``taken``."""
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate
