"""Structured channel pruning of ``torch.export`` programs (``.pt2`` in, ``.pt2`` out) with torch-pruning.

Whole output channels of convolutions and output features of linear layers are removed, together with
every tensor slice that depends on them (the next layer's input channels, batch-norm statistics,
concatenation offsets, residual partners, flattened features), so the re-exported model really has
fewer parameters and MACs. torch-pruning's ``DependencyGraph`` does the dependency tracking.

Rules:
1. ``ep.module()`` of a saved program calls ``aten.conv2d``/``aten.linear``/``aten.batch_norm``... on plain
   attributes, and torch-pruning only recognises ``nn.Module`` leaves. :func:`lift_modules` therefore puts
   real ``nn.Conv*``/``nn.ConvTranspose*``/``nn.Linear``/``nn.BatchNorm*``/``nn.LayerNorm``/``nn.GroupNorm``/
   ``nn.Embedding`` modules back in place of those calls, holding the same parameter objects under the
   same names (outputs are bit-identical; checked in the tests). A parameter shared by several calls is
   left as it is.
2. Layers whose outputs reach a model output without crossing another prunable layer keep their output
   channels (the classifier of a CNN): the model's interface never changes. ``ignore`` adds more.
3. Importance is the L2 magnitude of each channel group (``importance="magnitude"``, the default);
   ``lamp`` and ``fpgm`` are data-free alternatives. ``ratio`` is the fraction of channels removed per layer
   (``global_pruning`` ranks across layers instead).
4. After pruning the module must run on example inputs and produce outputs of the original shapes;
   otherwise (e.g. the model hard-codes a channel count in ``view``) the pass fails with one line.
5. An optional user ``finetune`` callable (``file.py:function`` or ``package.module:function``) receives the
   pruned module and returns the module to export; it runs before re-export (recovery of accuracy).
6. The program is re-exported with ``torch.export`` keeping each dynamic dim and its range.

Stats: parameters and MACs (per sample: dynamic dims at their smallest export size, batch 1) before and
after, kept channels per pruned layer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgec.compiler.passes._torch_edit import (
    _channels,
    _submodule,
    check_outputs,
    flat_outputs,
    iter_weights,
    load_for_editing,
    model_cost,
    output_layers,
    reexport,
    run_finetune,
)
from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import require
from edgec.core.types import FORMAT_PT2, ModelArtifact


class PruneOptions(PassOptions):
    """Options both pruning passes take: how much to remove and the optional fine-tune callable."""

    ratio: float = Field(gt=0.0, lt=1.0)
    finetune: str | None = None
    finetune_sha256: str | None = None
    """Digest of the file defining ``finetune``; only there so that editing it invalidates cached results."""


class StructuredOptions(PruneOptions):
    importance: Literal["magnitude", "lamp", "fpgm"] = "magnitude"
    global_pruning: bool = False
    round_to: int = Field(default=16, ge=1)
    """Keep each pruned layer's channel count a multiple of this, rounding to the nearest (1: no rounding).
    onnxruntime's CPU convolutions block channels by 16 on AVX-512 and reorder tensors otherwise: measured
    on the digits CNN (450 images, one thread), 24/48 channels ran 1.3x slower than the unpruned 32/64
    and 22/44 slower still, while 16/48 ran 2.3x and 16/32 2.7x faster."""
    ignore: tuple[str, ...] = ()
    """Module names (as in the state dict, e.g. ``features.0``) whose output channels are kept."""


class PruneStructured(Pass):
    """Remove whole channels with torch-pruning's dependency graph, then re-export."""

    name = "prune_structured"
    version = "2"  # 2: the re-captured program keeps its dim names
    accepts = (FORMAT_PT2,)
    produces = FORMAT_PT2
    Options = StructuredOptions

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        tp = require("torch_pruning", "torch", "structured pruning")
        opts: StructuredOptions = self.options  # type: ignore[assignment]
        ep, module, example = load_for_editing(artifact.path)
        before = model_cost(module, ep)
        ctx.log(f"pruning {opts.ratio:.0%} of the channels ({opts.importance} importance)")
        original = [tuple(t.shape) for t in flat_outputs(module(*example))]
        ignored = output_layers(module) + [_submodule(module, name) for name in opts.ignore]
        per_layer = {} if opts.global_pruning else layer_ratios(module, ignored, opts.ratio, opts.round_to)
        pruner = tp.pruner.MetaPruner(
            module, example, importance=_importance(tp, opts.importance), pruning_ratio=opts.ratio,
            pruning_ratio_dict=per_layer, global_pruning=opts.global_pruning,
            round_to=opts.round_to if opts.global_pruning and opts.round_to > 1 else None, ignored_layers=ignored,
        )
        pruner.step()
        check_outputs(module, example, original, "structured pruning")
        channels = _channels(module)
        module = run_finetune(opts.finetune, module, ctx.log)
        check_outputs(module, example, original, "the finetune callable")
        out = reexport(module, ep, artifact, example, ctx.work_dir / "model.pt2")
        after = model_cost(module, ep)
        stats = {"ratio": opts.ratio, "importance": opts.importance, "before": before, "after": after,
                 "channels": channels, "finetune": opts.finetune}
        return PassResult(out, True, stats)


def layer_ratios(module: Any, ignored: list[Any], ratio: float, round_to: int) -> dict[Any, float]:
    """Per-layer ratios that keep ``round(C * (1 - ratio))`` channels, rounded to the nearest multiple of
    ``round_to`` (at least ``round_to``; layers with at most ``round_to`` channels are left whole).

    torch-pruning keeps ``int(C * (1 - r))`` channels and its own ``round_to`` rounds down (32 channels at
    30% would keep 16), so the ratio handed to it is ``1 - (kept + 0.5) / C``.
    """
    ratios = {}
    skip = {id(m) for layer in ignored for m in layer.modules()}
    for _, layer in iter_weights(module):
        channels = int(layer.out_channels if hasattr(layer, "out_channels") else layer.out_features)
        if id(layer) in skip:
            continue
        kept = max(round_to, round(channels * (1 - ratio) / round_to) * round_to) if round_to > 1 else round(channels * (1 - ratio))
        kept = min(kept, channels)
        ratios[layer] = 0.0 if kept >= channels else 1 - (kept + 0.5) / channels
    return ratios


def _importance(tp: Any, name: str) -> Any:
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name == "fpgm":
        return tp.importance.FPGMImportance(p=2)
    return tp.importance.MagnitudeImportance(p=2)
