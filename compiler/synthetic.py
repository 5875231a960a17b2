"""Synthetic inputs for models built without calibration data, sized before anything is allocated.

Rules:
1. A named (dynamic) dim is 1 for the batch (first) dim and :data:`SYNTHETIC_DIM` elsewhere, unless
   ``--input NAME:DIMS`` fixes it.
2. One sample (every input of the model once) may take at most ``--input-max-mb`` (default
   :data:`DEFAULT_INPUT_MAX_MB`); the size is computed with Python integers from the shape and dtype, so a
   declared ``10^9 x 10^9`` input is refused before numpy is asked for a single byte.
3. A negative declared dim is a malformed model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgec.core.errors import ConfigError, ExportError
from edgec.core.types import TensorSpec

SYNTHETIC_DIM = 16
"""Size used for dynamic non-batch dims of synthetic golden inputs."""
DEFAULT_INPUT_MAX_MB = 256
"""Default bound, in MiB, on one synthetic sample (all inputs together)."""
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def synthetic_shape(spec: TensorSpec, fixed: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The concrete shape drawn for ``spec``: ``fixed`` when given (``--input``), else rule 1.

    Raises:
        ExportError: the model declares a negative dim.
    """
    if fixed is not None:
        return fixed
    for dim in spec.shape:
        if isinstance(dim, int) and dim < 0:
            raise ExportError(f"the model declares input {spec.name!r} with dim {dim} in shape {list(spec.shape)}; "
                              "expected sizes >= 0 or named (dynamic) dims")
    return tuple(d if isinstance(d, int) else (1 if i == 0 else SYNTHETIC_DIM) for i, d in enumerate(spec.shape))


def human_bytes(count: int) -> str:
    """``count`` bytes in binary units with three significant digits, e.g. ``'106 PiB'``."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{count} B" if unit == 0 else f"{value:.3g} {_UNITS[unit]}"


def check_sample_size(inputs: tuple[TensorSpec, ...], limit_mb: int, fixed: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Refuse inputs whose one synthetic sample would exceed ``limit_mb`` MiB (rule 2), before allocating.

    Args:
        inputs: the model's input specs.
        limit_mb: the bound (``--input-max-mb``).
        fixed: shapes given with ``--input``, by input name.

    Raises:
        ConfigError: the sample is too big; names the largest input, its shape and size.
        ExportError: the model declares a negative dim.
    """
    sizes = []
    for spec in inputs:
        shape = synthetic_shape(spec, (fixed or {}).get(spec.name))
        sizes.append((math.prod(shape) * np.dtype(spec.dtype).itemsize, spec, shape))
    total = sum(size for size, _, _ in sizes)
    if not sizes or total <= limit_mb * 2**20:
        return
    size, spec, shape = max(sizes, key=lambda item: item[0])
    where = "" if size == total else f" ({human_bytes(size)} of them for this input)"
    raise ConfigError(
        f"one sample of input {spec.name!r} (shape {'x'.join(map(str, shape))}, {spec.dtype}) would take {human_bytes(total)}"
        f"{where}, above the {limit_mb} MiB limit (--input-max-mb {limit_mb})",
        hint="fix smaller dynamic dims with --input NAME:DIMS, give real inputs with --calib, "
             "or raise --input-max-mb if the model really takes inputs this big",
    )


def synthetic_feeds(inputs: tuple[TensorSpec, ...], count: int, limit_mb: int) -> list[dict[str, np.ndarray]]:
    """``count`` deterministic random samples for ``inputs`` (seed 0), checked against ``limit_mb`` first.

    Float inputs are standard normal, booleans and ``*mask*`` inputs ones, other integers in ``[0, 100)``.

    Raises:
        ConfigError: one sample would exceed ``limit_mb`` MiB.
        ExportError: the model declares a negative dim.
    """
    check_sample_size(inputs, limit_mb)
    rng = np.random.default_rng(0)
    return [{spec.name: _draw(spec, rng) for spec in inputs} for _ in range(count)]


def _draw(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = synthetic_shape(spec)
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b" or "mask" in spec.name.lower():
        return np.ones(shape, dtype)
    return rng.integers(0, 100, size=shape).astype(dtype)
