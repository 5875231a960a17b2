"""Parameters, MACs and weight sparsity of ONNX graphs (for ``edgec inspect`` and manifests).

MACs (multiply-accumulates) are counted for the ops that dominate inference cost; everything else
(activations, pooling, normalisation, element-wise) is ignored, as is customary:

====================================  ==================================================================
op                                    MACs
====================================  ==================================================================
Conv, ConvInteger, QLinearConv        ``numel(Y) * numel(W) / W.shape[0]`` (= Cin/groups * kernel)
ConvTranspose                         ``numel(X) * numel(W) / W.shape[0]`` (= Cout/groups * kernel)
Gemm                                  ``numel(Y) * K``
MatMul, MatMulInteger, QLinearMatMul  ``numel(Y) * K``, K the last dim of A (its only dim when 1-D)
====================================  ==================================================================

Shapes come from ONNX shape inference after fixing dynamic input dims: sizes given by name (``dims``), else
those of a sample input (``shapes``: a build passes its first golden input, so a bundle's MACs are those of
the inputs its proof ran), else the shared rule of :mod:`edgec.compiler.synthetic` (16, then 64 and 224 while
nodes stay uncounted: at 1x1 a strided network's shapes break or its MACs mean nothing). The batch (the first
dim of an input, or a dim named like one) is 1 unless ``dims`` names it: MACs per sample. The sizes used are
recorded (``dims``). Nodes whose shapes stay unknown are listed in ``uncounted`` instead of being guessed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.synthetic import SYNTHETIC_DIMS
from edgec.core.errors import require

WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
MATMUL_A = {"Gemm": 0, "MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


@dataclass(frozen=True)
class ModelCost:
    """What running one model costs.

    Args:
        params: weight elements stored as initializers.
        macs: multiply-accumulates for one inference with ``dims`` as the dynamic sizes.
        macs_by_op: the same split by op type.
        sparsity: fraction of zero elements in the weight tensors (initializers with two or more dims).
        dims: the size used for each dynamic input dim.
        uncounted: names of compute nodes whose shapes could not be inferred.
    """

    params: int
    macs: int
    macs_by_op: dict[str, int]
    sparsity: float
    dims: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form for manifests and ``inspect --json``."""
        return {"params": self.params, "macs": self.macs, "macs_by_op": dict(self.macs_by_op),
                "sparsity": self.sparsity, "dims": dict(self.dims), "uncounted": list(self.uncounted)}


def model_cost(model: Any, dims: dict[str, int] | None = None, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelCost:
    """Parameters, MACs and sparsity of a loaded ONNX ``ModelProto``.

    Args:
        model: the model (not modified).
        dims: sizes for symbolic input dims by name (``input:axis`` for an unnamed one).
        shapes: a sample's input shapes by input name; its sizes fill the other dynamic dims but the batch.
            Dims neither gives follow the shared synthetic rule (see the module docstring).
    """
    onnx = require("onnx", "onnx", "counting MACs of ONNX models")
    best: tuple[Counter[str], dict[str, int], list[str]] | None = None
    for spatial in SYNTHETIC_DIMS:
        counted = _macs(onnx, model, dims or {}, shapes or {}, spatial)
        if best is None or len(counted[2]) < len(best[2]):
            best = counted
        if not best[2] or not any(key.startswith("synthetic:") for key in counted[1]):
            break
    assert best is not None
    macs, used, uncounted = best
    params, sparsity = _weights(onnx, model)
    return ModelCost(params, sum(macs.values()), dict(sorted(macs.items())), sparsity,
                     {k.removeprefix("synthetic:"): v for k, v in used.items()}, uncounted)


def _macs(onnx: Any, model: Any, dims: dict[str, int], sample: dict[str, tuple[int, ...]],
          spatial: int) -> tuple[Counter[str], dict[str, int], list[str]]:
    """MACs by op type, the sizes used (those from the synthetic rule marked ``synthetic:``) and the nodes
    left uncounted, with the rule's non-batch dims at ``spatial``."""
    fixed, used = _fix_inputs(onnx, model, dims, sample, spatial)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # one onnx call, best effort: on a model it cannot infer (any error type), shapes stay unknown
        inferred = fixed
    shapes = _shapes(onnx, inferred)
    macs: Counter[str] = Counter()
    uncounted = []
    for node in inferred.graph.node:
        if node.op_type not in WEIGHT_INPUT and node.op_type not in MATMUL_A:
            continue
        count = node_macs(node, shapes)
        if count is None:
            uncounted.append(node.name or node.op_type)
        else:
            macs[node.op_type] += count
    return macs, used, uncounted


def file_cost(path: Path, dims: dict[str, int] | None = None, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelCost:
    """:func:`model_cost` of an ``.onnx`` file (loaded with its external data)."""
    onnx = require("onnx", "onnx", "counting MACs of ONNX models")
    return model_cost(onnx.load(str(path)), dims, shapes)


def node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """MACs of one Conv/ConvTranspose/Gemm/MatMul-like node, or None when a needed shape is unknown."""
    if node.op_type in WEIGHT_INPUT:
        weight = shapes.get(node.input[WEIGHT_INPUT[node.op_type]])
        base = shapes.get(node.input[0] if node.op_type == "ConvTranspose" else node.output[0])
        if weight is None or base is None or not weight or weight[0] == 0:
            return None
        return _numel(base) * _numel(weight) // weight[0]
    a = shapes.get(node.input[MATMUL_A[node.op_type]])
    y = shapes.get(node.output[0])
    if a is None or y is None or not a:
        return None
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    k = a[0] if (node.op_type == "Gemm" and trans_a) or len(a) == 1 else a[-1]
    return _numel(y) * k


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _fix_inputs(onnx: Any, model: Any, dims: dict[str, int], sample: dict[str, tuple[int, ...]],
                spatial: int) -> tuple[Any, dict[str, int]]:
    """A copy of ``model`` whose dynamic input dims are concrete, and the sizes chosen for them (keys of
    sizes from the synthetic rule start with ``synthetic:``)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {i.name for i in fixed.graph.initializer}
    values = [v for v in fixed.graph.input if v.name not in initializers]
    batch = {v.type.tensor_type.shape.dim[0].dim_param for v in values if v.type.tensor_type.shape.dim}
    used: dict[str, int] = {}
    for value in values:
        shape = sample.get(value.name)
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            name = dim.dim_param or f"{value.name}:{axis}"
            is_batch = axis == 0 or name in batch
            if name in dims:
                size = int(dims[name])
            elif not is_batch and shape is not None and len(shape) == len(value.type.tensor_type.shape.dim):
                size = int(shape[axis])
            else:
                size = 1 if is_batch else spatial
                name = name if is_batch else f"synthetic:{name}"
            used[name] = size
            dim.Clear()
            dim.dim_value = size
    return fixed, used


def _shapes(onnx: Any, model: Any) -> dict[str, tuple[int, ...]]:
    """Fully known shapes of every value and initializer."""
    shapes: dict[str, tuple[int, ...]] = {}
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(int(d) for d in node.attribute[0].t.dims)
    return shapes


def _weights(onnx: Any, model: Any) -> tuple[int, float]:
    """Total initializer elements, and the fraction of zeros among weight tensors (two or more dims)."""
    from onnx import numpy_helper

    total = 0
    zeros = 0
    weight_elems = 0
    for init in model.graph.initializer:
        count = _numel(tuple(init.dims))
        total += count
        if len(init.dims) < 2:
            continue
        try:
            values = numpy_helper.to_array(init)
        except Exception:  # one onnx call, best effort: an initializer it cannot decode is left out of the sparsity
            continue
        weight_elems += count
        zeros += count - int(np.count_nonzero(values))
    return total, round(zeros / weight_elems, 6) if weight_elems else 0.0
