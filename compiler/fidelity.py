"""Per-layer divergence between an FP32 reference and a reduced-precision model.

How divergence is measured: every float tensor that exists under the same name in both models is
read out (for ONNX: node outputs keep their names through onnxruntime's QDQ and dynamic quantization
and are made graph outputs; other targets read intermediate tensors their own way, see
:meth:`edgec.targets.base.Target.compare_layers`); both models run on the same feeds; for each tensor
the relative error ``||ref - got|| / ||ref||`` over all feeds is computed. A node's *growth* is its
output's error minus the largest error among its inputs: the error that this node added. Ranking nodes
by growth (:func:`rank`) names the layers where accuracy is lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler import onnx_utils
from edgec.core.errors import require

Feed = dict[str, np.ndarray]


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
    """

    node: str
    op: str
    layer: str
    tensor: str
    error: float
    cosine: float
    growth: float

    def to_json(self) -> dict[str, Any]:
        """JSON form with rounded numbers."""
        data = asdict(self)
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
    """

    name: str
    op: str
    layer: str
    output: str
    inputs: tuple[str, ...]


def rank(nodes: list[NodeInfo], reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[LayerDivergence]:
    """Divergence per node, largest growth first.

    Args:
        nodes: the reference model's nodes in topological order.
        reference: tensor name -> values of the FP32 model (all feeds, flattened or not).
        candidate: tensor name -> values of the reduced-precision model, same names; tensors missing
            here take the largest error upstream of them (quantization may fuse them away).
    """
    errors = {name: _errors(np.asarray(reference[name], np.float64).ravel(), np.asarray(candidate[name], np.float64).ravel())
              for name in reference if name in candidate}
    upstream: dict[str, float] = {}
    result = []
    for node in nodes:
        before = max((upstream.get(i, 0.0) for i in node.inputs), default=0.0)
        if node.output not in errors:
            upstream[node.output] = before
            continue
        err, cos = errors[node.output]
        upstream[node.output] = err
        result.append(LayerDivergence(node.name, node.op, node.layer, node.output, err, cos, err - before))
    return sorted(result, key=lambda d: d.growth, reverse=True)


def layer_names(model: Any) -> dict[str, str]:
    """Node name -> source layer: the first weight's name without ``.weight`` (``features.3``); a node without
    weights (an activation) takes its producer's layer, so a fused Conv+Relu reads as one layer."""
    initializers = {i.name for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, str] = {}
    for node in model.graph.node:
        weights = [n for n in node.input[1:] if n in initializers]
        if weights:
            names[node.name] = weights[0].rsplit(".", 1)[0] if "." in weights[0] else weights[0]
        elif node.input and node.input[0] in producer and producer[node.input[0]].name in names and node.op_type in ACTIVATIONS:
            names[node.name] = names[producer[node.input[0]].name]
        else:
            names[node.name] = node.name or node.output[0]
    return names


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
    """Layers whose outputs feed ``layer`` (activations, not weights), in graph order."""
    initializers = {i.name for i in model.graph.initializer}
    producer = {out: node.name for node in model.graph.node for out in node.output}
    found: list[str] = []
    for node in model.graph.node:
        if layers.get(node.name) != layer:
            continue
        for name in node.input:
            source = producer.get(name)
            if name not in initializers and source is not None and layers[source] != layer and layers[source] not in found:
                found.append(layers[source])
    return found


def _float_tensors(model: Any) -> dict[str, Any]:
    onnx = require("onnx", "onnx", "layer reports")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    return {name: t for name, t in types.items() if t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}


def _run_with(model: Any, names: list[str], elem_types: dict[str, int], feeds: list[Feed]) -> dict[str, np.ndarray]:
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
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [session.run(names, feed) for feed in feeds]
    return {name: np.concatenate([np.asarray(r[i], np.float64).ravel() for r in runs]) for i, name in enumerate(names)}


def layer_divergence(reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
    """Per-node divergence of the ONNX model ``candidate`` from the ONNX model ``reference``, largest growth first."""
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
    ref_vals = _run_with(ref_model, common, ref_types | {o.name: o.type.tensor_type.elem_type for o in ref_model.graph.output}, feeds)
    cand_vals = _run_with(cand_model, cand_names, cand_types, feeds)
    candidate_vals = {name: cand_vals[cname] for name, cname in zip(common, cand_names)}
    layers = layer_names(ref_model)
    nodes = [NodeInfo(n.name, n.op_type, layers[n.name], next((o for o in n.output if o in ref_vals), n.output[0]), tuple(n.input))
             for n in ref_model.graph.node if n.output]
    return rank(nodes, ref_vals, candidate_vals)


def _errors(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    norm = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(ref - got) / norm) if norm > 0 else float(np.linalg.norm(got))
    denom = norm * float(np.linalg.norm(got))
    cos = float(ref @ got / denom) if denom > 0 else 1.0
    return err, cos


def format_report(layers: list[LayerDivergence], top: int = 10) -> str:
    """A ranked table of the layers that add the most error."""
    head = f"{'rank':>4}  {'layer':28} {'op':14} {'added error':>11} {'error':>9} {'cosine':>9}  node"
    lines = [head, "-" * len(head)]
    for rank, d in enumerate(layers[:top], 1):
        lines.append(f"{rank:>4}  {d.layer[:28]:28} {d.op[:14]:14} {d.growth:>11.4g} {d.error:>9.4g} {d.cosine:>9.6f}  {d.node}")
    return "\n".join(lines)
