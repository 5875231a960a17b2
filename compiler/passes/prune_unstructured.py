"""Unstructured magnitude sparsity of ``torch.export`` programs (``.pt2`` in, ``.pt2`` out).

Rules:
1. In every convolution and linear layer, the ``ratio`` fraction of weights with the smallest absolute
   value is set to zero (per layer, ``torch.nn.utils.prune.l1_unstructured``; ties broken by torch's
   stable top-k). Biases and normalisation parameters are kept.
2. An optional ``finetune`` callable trains with the masks applied (zeros stay zero), then the masks are
   folded into the weights.
3. The program is re-exported with its dynamic dims (see :mod:`edgec.compiler.passes.prune_structured`).

What it buys: the tensors keep their shapes, so parameter counts, MACs and latency on the current
targets (onnxruntime, OpenVINO and LiteRT on CPU) are unchanged; none of them runs sparse kernels for
these dense exported weights. The gain is size after compression (zip/gzip of a bundle, or a download
with content-encoding): stats report zlib-compressed weight bytes before and after, and sparsity.
"""

from __future__ import annotations

import zlib
from typing import Any

from edgec.compiler.passes._torch_edit import (
    check_outputs,
    flat_outputs,
    iter_weights,
    load_for_editing,
    model_cost,
    reexport,
    run_finetune,
)
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.compiler.passes.prune_structured import PruneOptions
from edgec.core.errors import require
from edgec.core.types import FORMAT_PT2, ModelArtifact
from edgec.targets.base import TARGETS


def exploited_by() -> dict[str, str]:
    """What each target gains from unstructured zeros (its ``sparsity_gain``, recorded in the stats)."""
    return {cls.name: cls.sparsity_gain for cls in TARGETS.all() if cls.sparsity_gain}


class UnstructuredOptions(PruneOptions):
    """Same options as structured pruning's base: ratio and fine-tune."""


class PruneUnstructured(Pass):
    """Zero the smallest-magnitude weights of each conv/linear layer, then re-export."""

    name = "prune_unstructured"
    version = "2"  # 2: the re-captured program keeps its dim names
    accepts = (FORMAT_PT2,)
    produces = FORMAT_PT2
    Options = UnstructuredOptions

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        prune = require("torch.nn.utils.prune", "torch", "unstructured pruning")
        opts: UnstructuredOptions = self.options  # type: ignore[assignment]
        ep, module, example = load_for_editing(artifact.path)
        before = {**model_cost(module, ep), "compressed_weight_bytes": compressed_bytes(module)}
        shapes = [tuple(t.shape) for t in flat_outputs(module(*example))]
        ctx.log(f"zeroing {opts.ratio:.0%} of the conv/linear weights by magnitude")
        layers = list(iter_weights(module))
        for _, layer in layers:
            prune.l1_unstructured(layer, "weight", amount=opts.ratio)
        module = run_finetune(opts.finetune, module, ctx.log)
        for _, layer in layers:
            prune.remove(layer, "weight")
        check_outputs(module, example, shapes, "unstructured pruning")
        out = reexport(module, ep, artifact, example, ctx.work_dir / "model.pt2")
        after = {**model_cost(module, ep), "compressed_weight_bytes": compressed_bytes(module)}
        stats = {"ratio": opts.ratio, "before": before, "after": after, "layers": layer_sparsity(layers),
                 "exploited_by": exploited_by(), "finetune": opts.finetune}
        return PassResult(out, True, stats)


def compressed_bytes(module: Any) -> int:
    """zlib (level 6) size of all parameters and buffers, as stored: what a zipped bundle pays for weights."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        total += len(zlib.compress(tensor.detach().cpu().contiguous().numpy().tobytes(), 6))
    return total


def layer_sparsity(layers: list[tuple[str, Any]]) -> dict[str, float]:
    """Fraction of zero weights per layer."""
    torch = require("torch", "torch", "unstructured pruning")
    return {name: round(1 - int(torch.count_nonzero(layer.weight)) / layer.weight.numel(), 6) for name, layer in layers}
