"""Parity between reference and candidate outputs: max abs error, cosine, top-1 agreement, tolerances.

The metrics themselves live in :mod:`edgec.runtime_shims.measure` (numpy only), so the build, ``edgec
verify``, the device agent and the shim inside a bundle compute them with the same code. Tolerances are derived from what was measured at build time, with a margin for another machine's
arithmetic, and a floor per precision so that a perfect fp32 build does not demand bit-exactness.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import require
from edgec.core.types import Feed
from edgec.runtime_shims import measure

COSINE_FLOOR = {"fp32": 1e-6, "fp16": 1e-4, "int8": 1e-3}
"""Smallest allowed ``1 - cosine`` slack per precision."""
ABS_FLOOR = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
"""Smallest allowed max-abs slack per precision, relative to the reference's largest magnitude."""
DEFAULT_MIN_COSINE = {"fp32": 0.9999}
"""Build-time gate when the user sets none: an fp32 build that disagrees with its source is a bug."""


def stack(feeds: list[Feed], name: str) -> np.ndarray:
    """Concatenate one tensor over all feeds (along a new sample axis)."""
    return np.stack([np.asarray(f[name]) for f in feeds])


Parts = dict[str, dict[str, Any]]
"""Outputs joined from parts along an axis: ``{name: {"part_axis": AXIS, "part_sizes": [SIZE, ...]}}``
(see :func:`output_parts`); the axis counts in the output's own dims."""


def compare_output(ref: np.ndarray, got: np.ndarray, parts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics for one output, both arrays stacked over samples (see :func:`measure.compare_output`);
    ``parts`` (an entry of :data:`Parts`) adds each part's cosine on its own scale."""
    split = (int(parts["part_axis"]), [int(s) for s in parts["part_sizes"]]) if parts else None
    return measure.compare_output(ref, got, split)


def compare(reference: list[Feed], actual: list[Feed], names: list[str], parts: Parts | None = None) -> dict[str, dict[str, Any]]:
    """Per-output metrics over all samples, which may differ in shape (golden inputs at a second size of a
    dynamic dim: see :func:`measure.compare_samples`)."""
    result = {}
    for name in names:
        split = (parts or {}).get(name)
        result[name] = measure.compare_samples([f[name] for f in reference], [f[name] for f in actual],
                                               (int(split["part_axis"]), [int(s) for s in split["part_sizes"]]) if split else None)
    return result


def output_parts(path: Path) -> Parts:
    """The outputs of the ONNX model at ``path`` that a ``Concat`` produces (directly or through
    ``Identity``), with the concat axis and each part's size along it, where shape inference knows them: parity
    judges each part on its own scale, so boxes 0-320 cannot hide class probabilities 0-1 that collapsed."""
    from edgec.frameworks import onnx_utils

    onnx = require("onnx", "onnx", "reading output parts")
    model = onnx.shape_inference.infer_shapes(onnx_utils.load_model(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    ranks = {v.name: v.type.tensor_type.shape for v in (*graph.input, *graph.value_info, *graph.output)}
    found: Parts = {}
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type == "Identity":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Concat" or len(node.input) < 2 or output.name not in ranks:
            continue
        rank = len(ranks[output.name].dim)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % max(rank, 1)
        sizes = [_dim(ranks.get(name), axis) for name in node.input]
        if all(s > 0 for s in sizes):
            found[output.name] = {"part_axis": axis, "part_sizes": sizes}
    return found


def _dim(shape: Any, axis: int) -> int:
    """A fixed dim of a shape proto, or 0 when unknown."""
    if shape is None or axis >= len(shape.dim) or not shape.dim[axis].HasField("dim_value"):
        return 0
    return int(shape.dim[axis].dim_value)


def tolerance(measured: dict[str, dict[str, Any]], precision: str) -> dict[str, dict[str, Any]]:
    """Per-output tolerances for re-checking on another machine."""
    floor = COSINE_FLOOR.get(precision, 1e-3)
    result: dict[str, dict[str, Any]] = {}
    for name, m in measured.items():
        slack = max(2 * (1 - m["cosine"]), floor)
        abs_floor = ABS_FLOOR.get(precision, 5e-2) * max(1.0, m.get("ref_max_abs", 1.0))
        result[name] = {"max_abs": _round(max(4 * m["max_abs"], abs_floor)), "min_cosine": _round(1 - slack)}
        if "min_part_cosine" in m:  # with the split, so that verify judges the parts again
            result[name].update(min_part_cosine=_round(1 - max(2 * (1 - m["min_part_cosine"]), floor)),
                                part_axis=m["part_axis"], part_sizes=m["part_sizes"])
    return result


def check(measured: dict[str, dict[str, Any]], tol: dict[str, dict[str, Any]]) -> list[str]:
    """Failure descriptions; empty when every output is within tolerance."""
    return measure.check_tolerance(measured, tol)


def _round(value: float) -> float:
    """Round to 6 significant digits so manifests do not record float noise."""
    return float(f"{value:.6g}")


UNMEASURED_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}
"""Gate for bundles whose parity could not be measured at build time (Core ML built on Linux)."""


def default_tolerance(reference: list[Feed], precision: str) -> dict[str, dict[str, float]]:
    """Tolerances when the manifest has none: a fixed cosine floor per precision and a max-abs bound
    scaled to the reference's magnitude."""
    result = {}
    for name in reference[0]:
        scale = max(1.0, max(float(np.abs(np.asarray(f[name])).max(initial=0.0)) for f in reference))
        result[name] = {"min_cosine": UNMEASURED_MIN_COSINE.get(precision, 0.99),
                        "max_abs": _round(4 * ABS_FLOOR.get(precision, 5e-2) * scale)}
    return result


COLLAPSE_MIN_COSINE = 0.9
"""Below this cosine to FP32 (of an output, or of one part of it on its own scale), a bundle has collapsed."""
COLLAPSE_MIN_SHARE = 0.05
"""An output whose centred cosine (the cosine of its deviations from FP32's mean) is below
:data:`COLLAPSE_MIN_COSINE` has collapsed when its mean error is also at least this share of FP32's largest
magnitude: an output that lost its ups and downs, which the plain cosine forgives on values far from zero
(probabilities 0.02-0.96: cosine 0.98 with mean error 0.28). Below the share, the output barely varies and its
deviations are noise either way."""
COLLAPSE_MIN_TOP1 = 0.5
"""Below this top-1 agreement with FP32 on real inputs (calibration data), a classifier has collapsed."""


def collapsed(measured: dict[str, dict[str, Any]], real_inputs: bool) -> list[str]:
    """Why the measured parity is catastrophic, one phrase per output (empty when it is not): an output's
    cosine below :data:`COLLAPSE_MIN_COSINE`, a part of it below that on its own scale, its centred cosine
    below that with a mean error of at least :data:`COLLAPSE_MIN_SHARE` of its scale, or, on real inputs,
    a top-1 agreement below :data:`COLLAPSE_MIN_TOP1` (on random inputs class scores are near-ties), or
    non-finite outputs (NaN or inf where FP32 gave numbers)."""
    reasons = []
    for name, m in sorted(measured.items()):
        if not (math.isfinite(m["cosine"]) and math.isfinite(m.get("max_abs", 0.0))):
            reasons.append(f"output {name!r} holds NaN or infinite values (cosine {m['cosine']}, max_abs {m.get('max_abs')})")
        elif m["cosine"] < COLLAPSE_MIN_COSINE:
            reasons.append(f"output {name!r} has cosine {m['cosine']:.4f}")
        elif m.get("min_part_cosine", 1.0) < COLLAPSE_MIN_COSINE:
            cosines, sizes = m["part_cosines"], m["part_sizes"]
            worst = min(range(len(cosines)), key=lambda i: cosines[i])
            start = sum(sizes[:worst])
            reasons.append(f"part {worst + 1} of {len(sizes)} of output {name!r} (indices {start}-{start + sizes[worst] - 1} "
                           f"along axis {m['part_axis']}) has cosine {cosines[worst]:.4f} on its own scale")
        elif _lost_deviations(m):
            reasons.append(f"output {name!r} has cosine {m['cosine']:.4f} but its deviations from FP32's mean have "
                           f"cosine {m['centred_cosine']:.4f} (mean error {m['mean_abs']:.4g} on values up to "
                           f"{m['ref_max_abs']:.4g})")
        elif real_inputs and m.get("top1_agreement", 1.0) < COLLAPSE_MIN_TOP1:
            reasons.append(f"output {name!r} gives FP32's top-1 class on {m['top1_agreement']:.0%} of the golden inputs")
    return reasons


def _lost_deviations(m: dict[str, Any]) -> bool:
    """Whether an output's centred cosine collapsed with an error visible on its scale (see
    :data:`COLLAPSE_MIN_SHARE`); False for parity recorded before edgec measured the centred cosine."""
    return (m.get("centred_cosine", 1.0) < COLLAPSE_MIN_COSINE
            and m.get("mean_abs", 0.0) >= COLLAPSE_MIN_SHARE * m.get("ref_max_abs", 0.0) > 0)
