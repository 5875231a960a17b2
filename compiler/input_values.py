"""Inputs that take a given value, not data: ``--input-value NAME=VALUE`` (and ``--fold-input-values``).

Third-party models have inputs that are settings rather than data: a voice-activity model's ``sample_rate``
(a 0-d int64), a flag, a length. A random draw for them runs the proof on a path the model never sees
(``sample_rate`` 37), so edgec never draws them at random.

Rules:
1. ``--input-value NAME=VALUE`` sets input ``NAME`` to ``VALUE`` in every golden and calibration sample
   (where calibration data holds ``NAME`` too, the flag wins). The input's declared shape must be fixed
   (``[]``, ``[1]``, ``[2, 3]``; fix dynamic dims with ``--input``); every element takes ``VALUE``, cast to the
   input's dtype, which must hold it exactly (no ``1.5`` for an int64).
2. A *setting* (:func:`is_setting`: a non-float input of at most one element: rank 0, or every dim fixed to
   1) needs a value: from ``--calib`` data or from rule 1. Without either the build stops before any pass
   runs and names the flag. Integer tensors of more elements (token ids) and bool/mask tensors keep the
   synthetic draws of :mod:`edgec.compiler.synthetic`; so do float inputs.
3. With ``--fold-input-values`` the values are written into the graph as constants (the ``fold_inputs``
   pass) and the bundle no longer takes those inputs; the FP32 reference still runs the source model
   with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from edgec.core.errors import ConfigError
from edgec.core.types import Feed, TensorSpec

Number = int | float


def is_setting(spec: TensorSpec) -> bool:
    """A non-float input of at most one element (rule 2)."""
    dtype = np.dtype(spec.dtype) if _known(spec.dtype) else None
    return dtype is not None and dtype.kind in "iub" and all(d == 1 for d in spec.shape)


def value_arrays(inputs: tuple[TensorSpec, ...], values: Mapping[str, Number],
                 fixed: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``--input-value`` gives, by input name (rule 1).

    Args:
        fixed: shapes given with ``--input``, by input name.

    Raises:
        ConfigError: a name that is not an input, a dynamic shape, or a value the input's dtype cannot hold.
    """
    specs = {spec.name: spec for spec in inputs}
    arrays = {}
    for name, value in values.items():
        if name not in specs:
            raise ConfigError(f"--input-value names {name!r}, which is not a model input; inputs are {', '.join(specs)}")
        spec = specs[name]
        arrays[name] = _array(replace(spec, shape=(fixed or {}).get(name, spec.shape)), value)
    return arrays


def check_settings(inputs: tuple[TensorSpec, ...], given: Mapping[str, np.ndarray]) -> None:
    """Refuse a build without ``--calib`` where a setting has no value (rule 2).

    Raises:
        ConfigError: naming the first such input and ``--input-value``.
    """
    for spec in inputs:
        if is_setting(spec) and spec.name not in given:
            shape = "0-d" if not spec.shape else f"shape {list(spec.shape)}"
            raise ConfigError(
                f"input {spec.name!r} ({shape} {spec.dtype}) is a setting, not data, and edgec never draws settings "
                "at random", hint=f"give its value with --input-value {spec.name}=VALUE (e.g. a sample rate), "
                                       "or real inputs with --calib")


def complete(feeds: list[Feed], inputs: tuple[TensorSpec, ...], given: Mapping[str, np.ndarray]) -> list[Feed]:
    """``feeds`` with the given values added for ``inputs`` they lack (inputs folded into the bundle's graph,
    which the source model still takes)."""
    missing = {spec.name: given[spec.name] for spec in inputs if spec.name in given}
    if not missing or all(name in feed for feed in feeds for name in missing):
        return feeds
    return [{**feed, **{k: v for k, v in missing.items() if k not in feed}} for feed in feeds]


def _array(spec: TensorSpec, value: Number) -> np.ndarray:
    if not all(isinstance(d, int) for d in spec.shape):
        raise ConfigError(f"--input-value {spec.name}={value}: input {spec.name!r} has dynamic dims {list(spec.shape)}; "
                          f"fix them with --input {spec.name}:DIMS first")
    if not _known(spec.dtype):
        raise ConfigError(f"--input-value {spec.name}={value}: input {spec.name!r} has dtype {spec.dtype}, "
                          "which --input-value cannot fill; expected a number or bool input")
    dtype = np.dtype(spec.dtype)
    cast = np.asarray(value).astype(dtype)
    if float(cast) != float(value):
        raise ConfigError(f"--input-value {spec.name}={value}: input {spec.name!r} is {dtype}, which cannot hold {value}")
    return np.full(tuple(int(d) for d in spec.shape), cast, dtype)  # type: ignore[arg-type]


def _known(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "iubf"
    except TypeError:
        return False
