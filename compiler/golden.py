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
4. Where the bundle keeps dims dynamic (``Target.dynamic_shapes``: onnx, openvino), the golden set also
   holds samples at a second size of those dims (not the batch): ``max(1, k // 4)`` more, made from the last
   golden inputs by wrapping them along those dims (real data stays real data, repeated), at twice the
   size, else half of it, within a ``--input`` range and ``--input-max-mb`` (:func:`with_second_shape`).
   The first size the FP32 reference runs at is kept; when it runs at neither, the record says so and the
   golden set keeps one shape. Parity, the bundle's ``golden.npz`` and ``edgec verify`` cover both shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler import parity
from edgec.compiler.dynamic_dims import InputShape, range_of
from edgec.compiler.synthetic import (
    SYNTHETIC_DIM,
    SYNTHETIC_DIMS,
    batch_names,
    check_sample_size,
    has_spatial_dims,
    synthetic_feeds,
)
from edgec.core.errors import CalibrationError, ConfigError, ExportError
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
                  spatial: int = SYNTHETIC_DIM, fixed: Mapping[str, InputShape] | None = None) -> tuple[list[Feed], dict[str, Any]]:
    """The golden inputs (rules 1 and 2) and the record of how they were chosen.

    Args:
        values: inputs set with ``--input-value`` (synthetic inputs only; calibration sets already hold them).
        spatial: the size of dynamic non-batch dims of synthetic inputs.
        fixed: the ``--input`` shapes, which size synthetic inputs.

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
    return synthetic_feeds(inputs, samples, limit_mb, given, spatial, fixed), source


Reference = Callable[[list[Feed]], list[Feed]]
"""Runs the FP32 reference on golden inputs."""


def synthetic_reference(inputs: tuple[TensorSpec, ...], samples: int, limit_mb: int, values: Mapping[str, np.ndarray],
                        reference: Reference, fixed: Mapping[str, InputShape] | None = None,
                        ) -> tuple[list[Feed], list[Feed], dict[str, Any]]:
    """Synthetic golden inputs the model can run, their reference outputs and their record (rule 2): dynamic
    non-batch dims at each of :data:`SYNTHETIC_DIMS` in turn until ``reference`` runs, stopping before a size
    that would exceed ``limit_mb``; sizes ``fixed`` gives (``--input``) win.

    Raises:
        ConfigError: even the first size exceeds ``limit_mb`` MiB per sample.
        ExportError: the reference ran at none of the sizes; the hint names ``--input``.
    """
    tried: list[int] = []
    failure: ExportError | None = None
    for spatial in SYNTHETIC_DIMS if has_spatial_dims(inputs) else SYNTHETIC_DIMS[:1]:
        try:
            check_sample_size(inputs, limit_mb, fixed, spatial=spatial)
        except ConfigError:
            if not tried:
                raise
            break
        feeds, source = choose_inputs(None, inputs, samples, limit_mb, values, spatial, fixed)
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


def check_finite(outputs: list[Feed], synthetic: bool) -> None:
    """Refuse golden reference outputs that hold NaN or infinity: parity against them cannot be measured (a
    NaN cosine read as 0: "cosine 0.000000 to the FP32 reference" on an fp32 build).

    Raises:
        ExportError: on synthetic inputs (the hint names ``--calib`` and ``--input-value``).
        CalibrationError: on the calibration data's samples.
    """
    for index, feed in enumerate(outputs):
        for name, value in feed.items():
            array = np.asarray(value)
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                bad = "NaN" if np.isnan(array).any() else "infinity"
                where = "synthetic golden input" if synthetic else "calibration sample"
                message = (f"the FP32 model gives {bad} in output {name!r} on {where} {index}: parity against it "
                           "cannot be measured")
                if synthetic:
                    raise ExportError(message, hint="give real inputs with --calib, or the values inputs must hold "
                                                    "with --input-value NAME=VALUE")
                raise CalibrationError(message, hint="check that sample, or leave it out of --calib")


SECOND_SHAPE_SHARE = 4
"""One more golden sample per this many (at least one) is taken at a second size of the dynamic dims (rule 4)."""
DimPlaces = dict[str, list[tuple[str, int]]]
"""A dynamic dim (its name, or ``input[axis]`` when unnamed) -> the ``(input, axis)`` places where it occurs."""


def varying_dims(specs: tuple[TensorSpec, ...]) -> DimPlaces:
    """The dynamic dims of ``specs`` other than the batch (rule 4), each with the places it occurs: inputs that
    share a dim name (``input_ids`` and ``attention_mask``'s ``seq``) change together."""
    batch = batch_names(specs)
    dims: DimPlaces = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if not isinstance(dim, int) and axis > 0 and dim not in batch:
                dims.setdefault(dim if isinstance(dim, str) else f"{spec.name}[{axis}]", []).append((spec.name, axis))
    return dims


def same_sizes(dims: DimPlaces, feed: Feed) -> DimPlaces:
    """``dims`` with the places of one name that differ in size in ``feed`` split off under their own
    ``input[axis]`` key: a placeholder name (``?``, written for every dynamic dim) joins nothing."""
    result: DimPlaces = {}
    for key, places in dims.items():
        first = np.shape(feed[places[0][0]])[places[0][1]]
        for name, axis in places:
            alike = np.shape(feed[name])[axis] == first
            result.setdefault(key if alike else f"{name}[{axis}]", []).append((name, axis))
    return result


def second_sizes(feed: Feed, dims: DimPlaces, fixed: Mapping[str, InputShape] | None = None) -> list[dict[str, int]]:
    """The sizes tried for the second shape, in order (rule 4): each dim at twice its size in ``feed``, then at
    half of it, within its ``--input`` range (whose bounds are tried last)."""
    options: dict[str, list[int]] = {}
    for key, places in dims.items():
        name, axis = places[0]
        first = int(np.shape(feed[name])[axis])
        bounds = next((r for n, a in places if (r := range_of(fixed or {}, n, a)) is not None), None)
        low, high = (bounds.low, bounds.high) if bounds is not None else (1, None)
        wanted = [2 * first, first // 2, *((high, low) if bounds is not None else ())]
        picked = [size for i, size in enumerate(wanted) if size != first and low <= size and (high is None or size <= high)
                  and size not in wanted[:i]]
        if picked:
            options[key] = picked
    count = min(2, max((len(o) for o in options.values()), default=0))
    return [{key: o[min(i, len(o) - 1)] for key, o in options.items()} for i in range(count)]


def resized(feed: Feed, dims: DimPlaces, sizes: Mapping[str, int]) -> Feed:
    """``feed`` with each dim of ``sizes`` brought to its size: wrapped around (repeated) to grow, cut to shrink."""
    out = dict(feed)
    for key, size in sizes.items():
        for name, axis in dims[key]:
            array = np.asarray(out[name])
            out[name] = np.take(array, np.arange(size) % array.shape[axis], axis=axis)
    return out


def _resized_bytes(feed: Feed, dims: DimPlaces, sizes: Mapping[str, int]) -> int:
    """What :func:`resized` would allocate, computed from shapes before anything is."""
    shapes = {name: list(np.shape(value)) for name, value in feed.items()}
    for key, size in sizes.items():
        for name, axis in dims[key]:
            shapes[name][axis] = size
    return sum(math.prod(shape) * np.asarray(feed[name]).dtype.itemsize for name, shape in shapes.items())


def with_second_shape(inputs: list[Feed], outputs: list[Feed], source: dict[str, Any], specs: tuple[TensorSpec, ...],
                      fixed: Mapping[str, InputShape] | None, limit_mb: int,
                      reference: Reference) -> tuple[list[Feed], list[Feed], dict[str, Any]]:
    """The golden set with samples at a second size of the dynamic dims of ``specs`` added (rule 4), and
    its record (``source["second_shape"]``); as it was when ``specs`` has none."""
    base = inputs[-max(1, len(inputs) // SECOND_SHAPE_SHARE):]
    dims = same_sizes(varying_dims(specs), base[0]) if inputs else {}
    if not dims:
        return inputs, outputs, source
    failures: list[str] = []
    for sizes in second_sizes(base[0], dims, fixed):
        where = ", ".join(f"{k} {v}" for k, v in sorted(sizes.items()))
        if _resized_bytes(base[0], dims, sizes) > limit_mb * 2**20:
            failures.append(f"{where} is over --input-max-mb {limit_mb}")
            continue
        feeds = [resized(feed, dims, sizes) for feed in base]
        try:
            more = reference(feeds)
        except ExportError as exc:
            failures.append(f"at {where} the FP32 reference failed: {exc.message}")
            continue
        first = {key: int(np.shape(base[0][dims[key][0][0]])[dims[key][0][1]]) for key in sizes}
        record = {"samples": len(feeds), "dims": {key: [first[key], sizes[key]] for key in sorted(sizes)},
                  "made_from": f"the last {len(feeds)} golden inputs, wrapped or cut along those dims"}
        return [*inputs, *feeds], [*outputs, *more], {**source, "second_shape": record}
    why = "; ".join(failures) or "no other size fits the --input ranges"
    return inputs, outputs, {**source, "second_shape": {"skipped": why}}


def from_calibration(calibration: CalibrationSet, samples: int) -> tuple[list[Feed], dict[str, Any]]:
    """``samples`` calibration samples spread evenly over the set (rule 1), and the record of the choice."""
    index = spread(len(calibration), samples)
    source = {"kind": CALIBRATION, "data": Path(calibration.source).name, "of": len(calibration),
              "selection": "evenly spaced", "indices": index}
    return [calibration.feed(i) for i in index], source


def describe(source: dict[str, Any], samples: int) -> str:
    """One line for the build's summary: where the golden inputs came from and what that means."""
    second = source.get("second_shape") or {}
    more = int(second.get("samples", 0))
    samples -= more
    tail = ""
    if more:
        dims = ", ".join(f"{k} {v[1]} (not {v[0]})" for k, v in sorted(second.get("dims", {}).items()))
        tail = f"; {more} more at a second size of the dynamic dims: {dims}"
    elif second.get("skipped"):
        tail = f"; no second size of the dynamic dims: {second['skipped']}"
    if source.get("kind") == CALIBRATION:
        return f"{samples} of {source.get('of')} calibration samples ({source.get('data')}), evenly spaced{tail}"
    return (f"{samples} synthetic random inputs (no --calib): a top-1 agreement on noise means little; "
            f"give --calib DATA for golden inputs drawn from real data{tail}")


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
