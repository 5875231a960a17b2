"""INT8 that quantized nothing: a model whose weights all sit inside ``If``/``Loop``/``Scan`` bodies.

onnxruntime's quantizers work on the main graph only. A model that keeps its network inside control flow
(silero-vad chooses its 8 kHz or 16 kHz network with an ``If`` on the sample rate) comes out of them
unchanged: an "int8" bundle of float weights, as large and as fast as FP32. :func:`require_quantized`
refuses that with one line saying why and how to inline the branch.

Rules:
1. A weight is a float initializer, or a float ``Constant`` tensor, of at least :data:`MIN_WEIGHT` elements.
2. The check fails only when the quantized main graph holds no 8-bit initializer while some subgraph
   holds weights: a model with no weights anywhere is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.core.errors import UnsupportedError
from edgec.frameworks import onnx_utils

MIN_WEIGHT = 16
"""Smaller tensors are shapes, axes and scalars, not weights."""
_FLOATS = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_EIGHT_BITS = {2, 3}  # UINT8, INT8


def _size(tensor: Any) -> int:
    size = 1
    for dim in tensor.dims:
        size *= dim
    return size


def subgraphs(graph: Any) -> Iterator[Any]:
    """Every graph nested in ``graph``'s nodes' attributes, depth first."""
    for node in graph.node:
        for attribute in node.attribute:
            nested = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
            for sub in nested:
                yield sub
                yield from subgraphs(sub)


def weights(graph: Any) -> int:
    """The number of weights (rule 1) that ``graph`` itself holds."""
    tensors = list(graph.initializer)
    tensors += [n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")]
    return sum(1 for t in tensors if t.data_type in _FLOATS and _size(t) >= MIN_WEIGHT)


def require_quantized(path: Path) -> None:
    """Rule 2 on the quantized model at ``path``.

    Raises:
        UnsupportedError: no weight of the main graph became 8-bit while If/Loop/Scan bodies hold weights.
    """
    model = onnx_utils.load_model(path)
    if any(init.data_type in _EIGHT_BITS for init in model.graph.initializer):
        return
    nested = sum(weights(g) for g in subgraphs(model.graph))
    if nested:
        raise UnsupportedError(
            f"INT8 quantized no weight: the model's {nested} weight tensors sit inside If/Loop/Scan bodies, "
            "which onnxruntime's quantizer does not enter",
            hint="when an input setting picks the branch (e.g. a sample rate), fix it with --input-value NAME=VALUE "
                 "--fold-input-values so that the branch is inlined; or build fp32/fp16")
