"""Synthetic inputs for models built without calibration data, sized before anything is allocated.

Rules:
1. A dynamic dim is 1 for the batch and ``spatial`` (:data:`SYNTHETIC_DIM`, 16, at first) elsewhere, unless
   ``--input NAME:DIMS`` sizes it (a size; a range brings ``spatial`` into it; ``?`` leaves the rule:
   :mod:`edgec.compiler.dynamic_dims`). The rule itself is :func:`edgec.core.types.default_shape`. A named dim is the batch when it is the first dim of any input, and takes
   one size in every input (a recurrent state ``[2, batch, 128]`` beside ``audio [batch, 512]``). A model
   that cannot run at 16 (a stride-32 detector) is tried at the next of :data:`SYNTHETIC_DIMS`
   (:func:`edgec.compiler.golden.synthetic_reference`).
2. One sample (every input of the model once) may take at most ``--input-max-mb`` (default
   :data:`DEFAULT_INPUT_MAX_MB`); the size is computed with Python integers from the shape and dtype, so a
   declared ``10^9 x 10^9`` input is refused before numpy is asked for a single byte.
3. A negative declared dim is a malformed model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgec.compiler.dynamic_dims import DimRange, InputShape
from edgec.core.errors import ConfigError, ExportError
from edgec.core.types import SYNTHETIC_DIM, TensorSpec, batch_dims, default_shape

SYNTHETIC_DIMS = (SYNTHETIC_DIM, 64, 224)
"""Sizes tried in turn for dynamic non-batch dims until the FP32 reference runs (rule 1)."""
DEFAULT_INPUT_MAX_MB = 256
"""Default bound, in MiB, on one synthetic sample (all inputs together)."""
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def batch_names(inputs: tuple[TensorSpec, ...]) -> frozenset[str]:
    """Names of the dims that are the first dim of some input (rule 1)."""
    return batch_dims(inputs)


def has_spatial_dims(inputs: tuple[TensorSpec, ...]) -> bool:
    """Whether some input has a dynamic dim that is not the batch: only then can another size help."""
    batch = batch_names(inputs)
    return any(not isinstance(d, int) and i > 0 and d not in batch for s in inputs for i, d in enumerate(s.shape))


def synthetic_shape(spec: TensorSpec, fixed: InputShape | None = None, batch: frozenset[str] = frozenset(),
                    spatial: int = SYNTHETIC_DIM) -> tuple[int, ...]:
    """The concrete shape drawn for ``spec``: rule 1, with the sizes ``fixed`` gives (``--input``) winning.

    Args:
        fixed: the ``--input`` shape of this input (sizes, ranges or None per dim), checked against the spec
            before (:func:`edgec.compiler.dynamic_dims.check_given`).
        batch: dim names that are the batch (:func:`batch_names` of all the model's inputs).
        spatial: the size of the other dynamic dims.

    Raises:
        ExportError: the model declares a negative dim.
    """
    for dim in spec.shape:
        if isinstance(dim, int) and dim < 0:
            raise ExportError(f"the model declares input {spec.name!r} with dim {dim} in shape {list(spec.shape)}; "
                              "expected sizes >= 0 or named (dynamic) dims")
    rule = default_shape(spec, batch, spatial)
    if fixed is None or len(fixed) != len(rule):
        return rule
    return tuple(g if isinstance(g, int) else g.pick(r) if isinstance(g, DimRange) else r for g, r in zip(fixed, rule))


def human_bytes(count: int) -> str:
    """``count`` bytes in binary units with three significant digits, e.g. ``'106 PiB'``."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{count} B" if unit == 0 else f"{value:.3g} {_UNITS[unit]}"


def check_sample_size(inputs: tuple[TensorSpec, ...], limit_mb: int, fixed: Mapping[str, InputShape] | None = None,
                      spatial: int = SYNTHETIC_DIM) -> None:
    """Refuse inputs whose one synthetic sample would exceed ``limit_mb`` MiB (rule 2), before allocating.

    Args:
        inputs: the model's input specs.
        limit_mb: the bound (``--input-max-mb``).
        fixed: shapes given with ``--input``, by input name.
        spatial: the size of dynamic non-batch dims (rule 1).

    Raises:
        ConfigError: the sample is too big; names the largest input, its shape and size.
        ExportError: the model declares a negative dim.
    """
    sizes = []
    batch = batch_names(inputs)
    for spec in inputs:
        shape = synthetic_shape(spec, (fixed or {}).get(spec.name), batch, spatial)
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


def synthetic_feeds(inputs: tuple[TensorSpec, ...], count: int, limit_mb: int,
                    values: Mapping[str, np.ndarray] | None = None, spatial: int = SYNTHETIC_DIM,
                    fixed: Mapping[str, InputShape] | None = None) -> list[dict[str, np.ndarray]]:
    """``count`` deterministic random samples for ``inputs`` (seed 0), checked against ``limit_mb`` first;
    ``fixed``: the ``--input`` shapes (rule 1).

    Inputs in ``values`` (``--input-value``) take their value; float inputs are standard normal, booleans
    and ``*mask*`` inputs (of any dtype) ones, other integers (token ids) in ``[0, 100)``. Every array keeps the input's
    rank, 0-d included. Settings without a value are refused before (:func:`edgec.compiler.input_values.check_settings`).

    Raises:
        ConfigError: one sample would exceed ``limit_mb`` MiB.
        ExportError: the model declares a negative dim.
    """
    check_sample_size(inputs, limit_mb, fixed, spatial=spatial)
    rng = np.random.default_rng(0)
    batch, given, shapes = batch_names(inputs), dict(values or {}), dict(fixed or {})
    return [{spec.name: given[spec.name] if spec.name in given else
             _draw(spec, rng, synthetic_shape(spec, shapes.get(spec.name), batch, spatial))
             for spec in inputs} for _ in range(count)]


def _draw(spec: TensorSpec, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "b" or "mask" in spec.name.lower():  # a float attention mask too: normal draws sum to <= 0
        return np.ones(shape, dtype)
    if dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape), dtype)
    return np.asarray(rng.integers(0, 100, size=shape), dtype)
