"""Per-layer divergence between an FP32 reference and a reduced-precision model.

How divergence is measured: every float tensor that exists under the same name in both models is
read out (for ONNX: node outputs keep their names through onnxruntime's QDQ and dynamic quantization
and are made graph outputs; other targets read intermediate tensors their own way, see
:meth:`edgec.targets.base.LayerTools.compare_layers`); both models run on the same feeds, one feed at a
time, and each tensor's sums (:class:`ErrorSums`) are updated and its values dropped, so memory stays
near one inference of each model whatever the number of feeds. For each tensor the relative error
``||ref - got|| / ||ref||`` over all feeds is computed. A node's *growth* is its output's error minus
the largest error among its inputs: the error that this node added. Ranking nodes by growth
(:func:`rank_errors`) names the layers where accuracy is lost.

Layer identity (:func:`layer_names`):
1. A node with weights of its own (an initializer that only it reads, with more than one value) is
   named after them: ``features.3.weight`` -> ``features.3``.
2. A shared or scalar initializer (ReLU6's ``min_val_cast``, read by every ``Clip``) names nothing: an
   activation takes the layer of the node that produces its input (Conv+Clip read as one layer); any
   other node keeps its own name.
3. Ops in :data:`NOT_LAYERS` (constants, shape arithmetic, casts) are never layers: they are neither
   ranked nor kept in float, and error passes through them unchanged.

A node with several outputs (an ``LSTM``'s sequence and its final states ``y_h``/``y_c``, a ``Split``) is
compared on each of them: its error is that of its worst output, and each consumer reads the error of the
output it reads (a streaming model's state outputs carry the error its next call starts from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import require
from edgec.core.types import Feed
from edgec.frameworks import onnx_utils


@dataclass(frozen=True)
class LayerDivergence:
    """Error added by one node of the reference graph.

    Args:
        node: node name in the reference model, as the target's float-keeping mechanism takes it
            (:attr:`edgec.targets.base.PrecisionRequest.exclude`: ONNX node names for onnxruntime's
            ``nodes_to_exclude``, op names for nncf's ignored scope, output tensor names for TFLite's
            denylisted nodes).
        op: op type.
        layer: source-model layer name where known (from the weight's name, e.g. ``features.3``), else the node name.
        tensor: the output tensor compared.
        error: relative L2 error of that tensor, all feeds together.
        cosine: cosine similarity of that tensor to the reference.
        growth: ``error`` minus the largest error among the node's inputs.
        readers: the nodes that read its outputs, in graph order (a value mover's quantizer belongs to the
            op it feeds: nncf and onnxruntime quantize an op's input before a ``Squeeze`` or ``Reshape``).
        quantized: False where the target knows the candidate quantizes none of the node's inputs or weights, so
            that keeping it in float changes nothing (an activation nncf quantizes at its readers' inputs: its
            growth is the error its input carries, amplified); ``--max-drop`` does not build such a candidate.
    """

    node: str
    op: str
    layer: str
    tensor: str
    error: float
    cosine: float
    growth: float
    readers: tuple[str, ...] = ()
    quantized: bool = True

    def to_json(self) -> dict[str, Any]:
        """JSON form with rounded numbers (without ``readers`` and ``quantized``: graph structure, not a measurement)."""
        data = asdict(self)
        del data["readers"], data["quantized"]
        for key in ("error", "cosine", "growth"):
            data[key] = float(f"{data[key]:.6g}")
        return data


@dataclass(frozen=True)
class NodeInfo:
    """One node of a reference model, as :func:`rank` needs it.

    Args:
        name: node name (what the target's exclusion mechanism takes).
        op: op type.
        layer: source-model layer the node belongs to.
        output: the output tensor compared.
        inputs: tensors the node reads (weights may be left out).
        more_outputs: the node's other outputs (an LSTM's final states), compared as well.
        quantized: whether the candidate quantizes any of its inputs or weights (see :class:`LayerDivergence`).
    """

    name: str
    op: str
    layer: str
    output: str
    inputs: tuple[str, ...]
    more_outputs: tuple[str, ...] = ()
    quantized: bool = True


NOT_LAYERS = frozenset({
    # ONNX
    "Constant", "ConstantOfShape", "Shape", "Size", "Range", "Cast", "CastLike", "Identity", "EyeLike",
    "QuantizeLinear", "DequantizeLinear",
    # OpenVINO
    "Parameter", "Result", "ShapeOf", "Convert", "FakeQuantize",
    # TFLite
    "QUANTIZE", "DEQUANTIZE", "SHAPE", "CAST",
})
"""Op types that no target's quantizer quantizes and no float-keeping mechanism takes: never a layer."""


class ErrorSums:
    """Running sums per tensor name (``sum ref^2``, ``sum got^2``, ``sum ref*got``, ``sum (ref-got)^2``):
    feeds are added one at a time and dropped, and :meth:`errors` gives what the concatenated tensors
    would (a tensor whose sizes differ between the models on any feed is left out)."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._mismatched: set[str] = set()

    def add(self, name: str, reference: Any, candidate: Any) -> None:
        """Add one feed's values of tensor ``name`` in both models."""
        dtype = np.float64 if np.float64 in (np.asarray(reference).dtype, np.asarray(candidate).dtype) else np.float32
        ref: np.ndarray = np.asarray(reference, dtype).ravel()  # float32 tensors stay float32
        got: np.ndarray = np.asarray(candidate, dtype).ravel()
        if ref.size != got.size:
            self._mismatched.add(name)
            return
        diff = ref - got
        sums = self._sums.setdefault(name, np.zeros(4))
        # products in the tensors' precision, sums in float64 (NumPy's pairwise sum): as exact as float64
        # dot products and several times faster than BLAS on a busy machine
        sums += [float(np.multiply(a, b).sum(dtype=np.float64)) for a, b in ((ref, ref), (got, got), (ref, got), (diff, diff))]

    def errors(self) -> dict[str, tuple[float, float]]:
        """Tensor name -> (relative L2 error, cosine) over every feed added."""
        return {name: _from_sums(*map(float, s)) for name, s in self._sums.items() if name not in self._mismatched}


def rank(nodes: list[NodeInfo], reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[LayerDivergence]:
    """:func:`rank_errors` on whole tensors: ``reference`` and ``candidate`` map tensor names to values
    (all feeds, flattened or not); tensors only in ``reference`` are treated as missing."""
    sums = ErrorSums()
    for name in reference:
        if name in candidate:
            sums.add(name, reference[name], candidate[name])
    return rank_errors(nodes, sums.errors())


def rank_errors(nodes: list[NodeInfo], errors: dict[str, tuple[float, float]]) -> list[LayerDivergence]:
    """Divergence per node, largest growth first.

    Args:
        nodes: the reference model's nodes in topological order.
        errors: tensor name -> (relative error, cosine) of the reduced-precision model's tensor against the
            FP32 model's (:meth:`ErrorSums.errors`); tensors missing here take the largest error upstream
            of them (quantization may fuse them away), and so do the outputs of :data:`NOT_LAYERS` ops,
            which are not listed.
    """
    upstream: dict[str, float] = {}
    readers: dict[str, list[str]] = {}
    for node in nodes:
        for name in dict.fromkeys(node.inputs):
            readers.setdefault(name, []).append(node.name)
    result = []
    for node in nodes:
        before = max((upstream.get(i, 0.0) for i in node.inputs), default=0.0)
        outputs = (node.output, *node.more_outputs)
        measured = [o for o in outputs if o in errors] if node.op not in NOT_LAYERS else []
        for name in outputs:
            upstream[name] = errors[name][0] if name in measured else before
        if measured:
            worst = max(measured, key=lambda o: errors[o][0])  # the first of equals: the main output
            err, cos = errors[worst]
            reading = tuple(dict.fromkeys(r for o in outputs for r in readers.get(o, ())))
            result.append(LayerDivergence(node.name, node.op, node.layer, worst, err, cos, err - before, reading, node.quantized))
    return sorted(result, key=lambda d: d.growth, reverse=True)


def layer_names(model: Any) -> dict[str, str]:
    """Node name -> source layer (rules 1-2 of the module docstring): its own weights' name without the last
    part (``features.3.weight`` -> ``features.3``); an activation without weights takes its producer's
    layer, so a fused Conv+Relu reads as one layer; any other node is a layer of its own, named by the node."""
    weights = own_weights(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, str] = {}
    for node in model.graph.node:
        own = [n for n in node.input[1:] if n in weights]
        source = producer.get(node.input[0]) if node.input else None
        if own:
            names[node.name] = own[0].rsplit(".", 1)[0] if "." in own[0] else own[0]
        elif source is not None and source.name in names and node.op_type in ACTIVATIONS and source.op_type not in NOT_LAYERS:
            names[node.name] = names[source.name]
        else:
            names[node.name] = node.name or node.output[0]
    return names


def own_weights(model: Any) -> set[str]:
    """Initializers that name a layer: float, read by exactly one node, more than one value, a module-path name
    (not an exporter's ``onnx::Conv_123``). Shared constants (``min_val_cast``) and scalars are not weights."""
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    return {i.name for i in model.graph.initializer
            if readers.get(i.name) == 1 and int(np.prod(i.dims)) > 1 and "::" not in i.name
            and i.data_type in _FLOAT_TYPES}  # a Slice's int64 starts or a Reshape's shape is no layer's weights


_FLOAT_TYPES = frozenset({1, 10, 11, 16})
"""ONNX FLOAT, FLOAT16, DOUBLE, BFLOAT16: the element types of weights."""


ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "HardSwish", "HardSigmoid", "Softmax"})


def _effective_names(model: Any) -> dict[str, str]:
    """Tensor -> the tensor consumers really see: the DequantizeLinear output where a tensor is fake-quantized."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    effective = {}
    for name, users in consumers.items():
        for q in users:
            if q.op_type == "QuantizeLinear" and q.input[0] == name:
                for dq in consumers.get(q.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        effective[name] = dq.output[0]
    return effective


def input_layers(model: Any, layers: dict[str, str], layer: str) -> list[str]:
    """Layers whose outputs feed ``layer`` (activations, not weights or :data:`NOT_LAYERS` ops), in graph order."""
    initializers = {i.name for i in model.graph.initializer}
    producer = {out: node.name for node in model.graph.node for out in node.output}
    constant = {node.name for node in model.graph.node if node.op_type in NOT_LAYERS}
    found: list[str] = []
    for node in model.graph.node:
        if layers.get(node.name) != layer:
            continue
        for name in node.input:
            source = producer.get(name)
            if (name not in initializers and source is not None and source not in constant
                    and layers[source] != layer and layers[source] not in found):
                found.append(layers[source])
    return found


def _float_tensors(model: Any) -> dict[str, Any]:
    onnx = require("onnx", "onnx", "layer reports")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    return {name: t for name, t in types.items() if t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}


def _session(model: Any, names: list[str], elem_types: dict[str, int]) -> Any:
    """An onnxruntime CPU session of ``model`` with the tensors ``names`` made graph outputs."""
    onnx = require("onnx", "onnx", "layer reports")
    ort = require("onnxruntime", "onnx", "layer reports")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_types[name], None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def layer_divergence(reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
    """Per-node divergence of the ONNX model ``candidate`` from the ONNX model ``reference``, largest growth
    first; the models run one feed at a time (see the module docstring)."""
    ref_model = onnx_utils.load_model(reference)
    cand_model = onnx_utils.load_model(candidate)
    ref_types = _float_tensors(ref_model)
    cand_produced = {out for node in cand_model.graph.node for out in node.output}
    cand_types = _float_tensors(cand_model)
    common = [n for n in ref_types if n in cand_produced and n in cand_types]
    common += [o.name for o in ref_model.graph.output if o.name not in common]
    effective = _effective_names(cand_model)
    cand_names = [effective.get(n, n) for n in common]
    out_types = {o.name: o.type.tensor_type.elem_type for o in cand_model.graph.output}
    cand_types = cand_types | out_types | {effective[n]: cand_types.get(n, out_types.get(n, 1)) for n in common if n in effective}
    ref_session = _session(ref_model, common, ref_types | {o.name: o.type.tensor_type.elem_type for o in ref_model.graph.output})
    cand_session = _session(cand_model, cand_names, cand_types)
    sums = ErrorSums()
    for feed in feeds:
        for name, ref, got in zip(common, ref_session.run(common, feed), cand_session.run(cand_names, feed)):
            sums.add(name, ref, got)
    compared = set(common)
    layers = layer_names(ref_model)
    nodes = []
    for n in ref_model.graph.node:
        outputs = [o for o in n.output if o in compared] + [o for o in n.output if o and o not in compared]
        if outputs:
            nodes.append(NodeInfo(n.name, n.op_type, layers[n.name], outputs[0], tuple(n.input), tuple(outputs[1:])))
    return rank_errors(nodes, sums.errors())


def _from_sums(ref2: float, got2: float, cross: float, diff2: float) -> tuple[float, float]:
    """(relative L2 error, cosine) from the sums of :class:`ErrorSums`."""
    norm = float(np.sqrt(ref2))
    err = float(np.sqrt(diff2)) / norm if norm > 0 else float(np.sqrt(got2))
    denom = norm * float(np.sqrt(got2))
    cos = cross / denom if denom > 0 else 1.0
    return err, cos


def format_report(layers: list[LayerDivergence], top: int = 10) -> str:
    """A ranked table of the layers that add the most error."""
    head = f"{'rank':>4}  {'layer':28} {'op':14} {'added error':>11} {'error':>9} {'cosine':>9}  node"
    lines = [head, "-" * len(head)]
    for rank, d in enumerate(layers[:top], 1):
        lines.append(f"{rank:>4}  {d.layer[:28]:28} {d.op[:14]:14} {d.growth:>11.4g} {d.error:>9.4g} {d.cosine:>9.6f}  {d.node}")
    return "\n".join(lines)
