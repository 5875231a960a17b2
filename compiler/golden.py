"""The golden set a bundle carries as its proof: which inputs, and what they are compared with.

Rules:
1. With calibration data, the golden inputs are ``--golden-samples`` samples spread evenly over the whole
   set (sample ``i * N // k`` for ``i < k``), not its first ``k``: a set sorted by class would otherwise
   give golden inputs of one class, and a top-1 agreement on them says little.
2. Without calibration data they are seeded random draws (:func:`~edgec.compiler.synthetic.synthetic_feeds`):
   real enough to catch a broken conversion, but class scores on noise are near-ties, so a top-1
   agreement on them means little. The manifest says which (``parity.golden_source``) and the build says so.
   Settings (``--input-value``, :mod:`edgec.compiler.input_values`) take their value, never a draw. Dynamic
   dims are 16 first; when the FP32 reference cannot run there (a stride-32 detector), 64 and then 224
   (:func:`synthetic_reference`), and the record says which size ran.
3. When the build prunes, the bundle is also compared with the model *before* pruning
   (``parity.unpruned``): the parity reference is the pruned model, so without this a pruned bundle reports
   cosine 1.0 however much pruning changed its answers. That check uses up to :data:`PRUNE_CHECK_SAMPLES`
   calibration samples, spread as in rule 1 (the golden inputs without calibration data): eight golden
   inputs are too few to tell a fine-tuned model at 98% agreement from a broken one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler import parity
from edgec.compiler.synthetic import (
    SYNTHETIC_DIM,
    SYNTHETIC_DIMS,
    check_sample_size,
    has_spatial_dims,
    synthetic_feeds,
)
from edgec.core.errors import ConfigError, ExportError
from edgec.core.types import Feed, TensorSpec

SYNTHETIC = "synthetic"
CALIBRATION = "calibration"
PRUNE_CHECK_SAMPLES = 128
"""Calibration samples on which a pruned bundle is compared with the unpruned model (rule 3)."""
PRUNE_MIN_TOP1 = 0.9
"""Below this top-1 agreement with the unpruned model, on a class-score output, the build warns (see
:func:`pruning_warning`). Class scores are judged by their answers: fine-tuning rescales the logits (the
digits CNN fine-tuned after 30% pruning: cosine 0.96 to the unpruned logits, every answer the same)."""
PRUNE_MIN_COSINE = 0.99
"""Below this cosine to the unpruned model, on an output that is not class scores, the build warns."""


@dataclass(frozen=True)
class PruningCheck:
    """Inputs on which the pruned model is compared with the unpruned one (rule 3), and both models'
    FP32 outputs on them (in the source framework).

    Args:
        inputs: the inputs, in the source model's layout.
        source: how they were chosen (as :attr:`GoldenSet.source`).
        unpruned: outputs of the source model before pruning.
        pruned: outputs of the source model after pruning.
    """

    inputs: list[Feed]
    source: dict[str, Any]
    unpruned: list[Feed]
    pruned: list[Feed]


@dataclass(frozen=True)
class GoldenSet:
    """Golden inputs and the FP32 outputs the bundle is measured against.

    Args:
        inputs: the golden inputs, in the source model's layout.
        outputs: the reference outputs (the source model after pruning, when the build prunes).
        source: how the inputs were chosen (the manifest's ``parity.golden_source``).
        pruning: the comparison with the model before pruning; None when the build does not prune.
    """

    inputs: list[Feed]
    outputs: list[Feed]
    source: dict[str, Any]
    pruning: PruningCheck | None = None

    @property
    def synthetic(self) -> bool:
        """The inputs are random draws, not data (rule 2)."""
        return self.source.get("kind") == SYNTHETIC


def spread(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(count)``, starting at 0; all of them when ``count <= wanted``."""
    if count <= wanted:
        return list(range(count))
    return [i * count // wanted for i in range(wanted)]


def choose_inputs(calibration: CalibrationSet | None, inputs: tuple[TensorSpec, ...], samples: int,
                  limit_mb: int, values: Mapping[str, np.ndarray] | None = None,
                  spatial: int = SYNTHETIC_DIM) -> tuple[list[Feed], dict[str, Any]]:
    """The golden inputs (rules 1 and 2) and the record of how they were chosen.

    Args:
        values: inputs set with ``--input-value`` (synthetic inputs only; calibration sets already hold them).
        spatial: the size of dynamic non-batch dims of synthetic inputs.

    Raises:
        ConfigError: synthetic inputs would exceed ``limit_mb`` MiB per sample.
        ExportError: the model declares a negative dim.
    """
    if calibration is not None:
        return from_calibration(calibration, samples)
    source: dict[str, Any] = {"kind": SYNTHETIC, "seed": 0,
                              "selection": "random: standard normal floats, ones for bool and mask inputs, integers in [0, 100)"}
    given = {k: v for k, v in (values or {}).items() if any(s.name == k for s in inputs)}
    if given:
        source["values"] = {k: v.tolist() for k, v in sorted(given.items())}
    if spatial != SYNTHETIC_DIM:
        source["dynamic_dims"] = spatial
    return synthetic_feeds(inputs, samples, limit_mb, given, spatial), source


Reference = Callable[[list[Feed]], list[Feed]]
"""Runs the FP32 reference on golden inputs."""


def synthetic_reference(inputs: tuple[TensorSpec, ...], samples: int, limit_mb: int, values: Mapping[str, np.ndarray],
                        reference: Reference) -> tuple[list[Feed], list[Feed], dict[str, Any]]:
    """Synthetic golden inputs the model can run, their reference outputs and their record (rule 2): dynamic
    non-batch dims at each of :data:`SYNTHETIC_DIMS` in turn until ``reference`` runs, stopping before a size
    that would exceed ``limit_mb``.

    Raises:
        ConfigError: even the first size exceeds ``limit_mb`` MiB per sample.
        ExportError: the reference ran at none of the sizes; the hint names ``--input``.
    """
    tried: list[int] = []
    failure: ExportError | None = None
    for spatial in SYNTHETIC_DIMS if has_spatial_dims(inputs) else SYNTHETIC_DIMS[:1]:
        try:
            check_sample_size(inputs, limit_mb, spatial=spatial)
        except ConfigError:
            if not tried:
                raise
            break
        feeds, source = choose_inputs(None, inputs, samples, limit_mb, values, spatial)
        tried.append(spatial)
        try:
            return feeds, reference(feeds), source
        except ExportError as exc:
            failure = failure or exc
    assert failure is not None
    sizes = " or ".join(map(str, tried))
    spec = next(s for s in inputs if has_spatial_dims((s,))) if has_spatial_dims(inputs) else inputs[0]
    raise ExportError(f"{failure.message} (on synthetic inputs, dynamic dims at {sizes})",
                      hint=f"give the sizes the model takes with --input {spec.name}:DIMS (its shape is "
                           f"{list(spec.shape)}), or real inputs with --calib") from failure


def from_calibration(calibration: CalibrationSet, samples: int) -> tuple[list[Feed], dict[str, Any]]:
    """``samples`` calibration samples spread evenly over the set (rule 1), and the record of the choice."""
    index = spread(len(calibration), samples)
    source = {"kind": CALIBRATION, "data": Path(calibration.source).name, "of": len(calibration),
              "selection": "evenly spaced", "indices": index}
    return [calibration.feed(i) for i in index], source


def describe(source: dict[str, Any], samples: int) -> str:
    """One line for the build's summary: where the golden inputs came from and what that means."""
    if source.get("kind") == CALIBRATION:
        return f"{samples} of {source.get('of')} calibration samples ({source.get('data')}), evenly spaced"
    return (f"{samples} synthetic random inputs (no --calib): a top-1 agreement on noise means little; "
            "give --calib DATA for golden inputs drawn from real data")


def pruning_inputs(calibration: CalibrationSet | None, golden_inputs: list[Feed],
                   golden_source: dict[str, Any]) -> tuple[list[Feed], dict[str, Any]]:
    """The inputs of the comparison with the unpruned model (rule 3) and how they were chosen."""
    if calibration is None:
        return golden_inputs, golden_source
    return from_calibration(calibration, PRUNE_CHECK_SAMPLES)


def unpruned_entry(check: PruningCheck, reference: str, compared: str, unpruned: list[Feed],
                   actual: list[Feed]) -> dict[str, Any]:
    """The manifest's ``parity.unpruned``: ``actual`` (the bundle's outputs, or the pruned source model's)
    against ``unpruned``, the outputs of the model before pruning on ``check.inputs``."""
    outputs = parity.compare(unpruned, actual, list(unpruned[0]))
    for metrics in outputs.values():  # near-ties explain rounding; pruning moves scores by far more than that
        metrics.pop("near_ties", None)
    return {"reference": reference, "compared": compared, "samples": len(actual), "inputs": check.source,
            "outputs": outputs}


def pruning_warning(entry: dict[str, Any], finetuned: bool) -> str | None:
    """A warning when pruning changed the model's answers, None otherwise: a class-score output's top-1
    agreement with the unpruned model below :data:`PRUNE_MIN_TOP1`, or another output's cosine to it below
    :data:`PRUNE_MIN_COSINE`."""
    moved = []
    for name, m in sorted(entry["outputs"].items()):
        if "top1_agreement" in m and m["top1_agreement"] < PRUNE_MIN_TOP1:
            moved.append(f"output {name!r} gives the same top-1 class on {_top1(m)} (cosine {m['cosine']:.4f})")
        elif "top1_agreement" not in m and m["cosine"] < PRUNE_MIN_COSINE:
            moved.append(f"output {name!r} has cosine {m['cosine']:.4f}")
    if not moved:
        return None
    advice = ("fine-tune longer or prune less (a smaller --prune)" if finetuned
              else "fine-tune after pruning with --finetune MODULE:FUNCTION, or prune less")
    return (f"pruning changed the model's answers: against the unpruned model on {entry['samples']} inputs, "
            f"{'; '.join(moved)} (the golden parity is measured against the pruned model); {advice}")


def _top1(metrics: dict[str, Any]) -> str:
    if "top1_agree" in metrics and "top1_rows" in metrics:
        return f"{int(metrics['top1_agree'])}/{int(metrics['top1_rows'])}"
    return f"{float(metrics['top1_agreement']):.4f}"
