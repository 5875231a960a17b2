"""Parity between reference and candidate outputs: max abs error, cosine, top-1 agreement, tolerances.

The metrics themselves live in :mod:`edgec.runtime_shims.measure` (numpy only), so the build, ``edgec
verify``, the device agent and the shim inside a bundle compute them with the same code. Tolerances are derived from what was measured at build time, with a margin for another machine's
arithmetic, and a floor per precision so that a perfect fp32 build does not demand bit-exactness.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.runtime_shims import measure

Feed = dict[str, np.ndarray]

COSINE_FLOOR = {"fp32": 1e-6, "fp16": 1e-4, "int8": 1e-3}
"""Smallest allowed ``1 - cosine`` slack per precision."""
ABS_FLOOR = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
"""Smallest allowed max-abs slack per precision, relative to the reference's largest magnitude."""
DEFAULT_MIN_COSINE = {"fp32": 0.9999}
"""Build-time gate when the user sets none: an fp32 build that disagrees with its source is a bug."""


def stack(feeds: list[Feed], name: str) -> np.ndarray:
    """Concatenate one tensor over all feeds (along a new sample axis)."""
    return np.stack([np.asarray(f[name]) for f in feeds])


def compare_output(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Metrics for one output, both arrays stacked over samples (see :func:`measure.compare_output`)."""
    return measure.compare_output(ref, got)


def compare(reference: list[Feed], actual: list[Feed], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per-output metrics over all samples."""
    return {name: compare_output(stack(reference, name), stack(actual, name)) for name in names}


def tolerance(measured: dict[str, dict[str, Any]], precision: str) -> dict[str, dict[str, float]]:
    """Per-output tolerances for re-checking on another machine."""
    floor = COSINE_FLOOR.get(precision, 1e-3)
    result = {}
    for name, m in measured.items():
        slack = max(2 * (1 - m["cosine"]), floor)
        abs_floor = ABS_FLOOR.get(precision, 5e-2) * max(1.0, m.get("ref_max_abs", 1.0))
        result[name] = {"max_abs": _round(max(4 * m["max_abs"], abs_floor)), "min_cosine": _round(1 - slack)}
    return result


def check(measured: dict[str, dict[str, Any]], tol: dict[str, dict[str, float]]) -> list[str]:
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
        scale = max(1.0, float(np.abs(stack(reference, name)).max()))
        result[name] = {"min_cosine": UNMEASURED_MIN_COSINE.get(precision, 0.99),
                        "max_abs": _round(4 * ABS_FLOOR.get(precision, 5e-2) * scale)}
    return result
