"""Dynamic dims: what ``--input NAME:DIMS`` says about each dim of an input, and which targets keep them.

Rules:
1. Each dim of ``--input`` is a size (``320``), ``?`` (dynamic; data sized by the synthetic rule of
   :mod:`edgec.compiler.synthetic`), a range ``[32..640]`` (dynamic within it) or a size in a range
   ``320[32..640]``. A dim the model fixes must be given as that size.
2. A target that runs dynamic shapes (``Target.dynamic_shapes``: onnx, openvino) keeps every dim the source
   leaves dynamic: the sizes only shape the data (synthetic golden inputs; the second golden shape stays in
   a range). A range is recorded in the manifest's tensor spec (``ranges``, one entry per dim), and serving
   refuses sizes outside it (:meth:`edgec.core.types.TensorSpec.accepts_shape`).
3. A target that needs fixed shapes gets the sizes written into the graph on its ONNX route (the
   ``fix_shapes`` pass). A dynamic dim there that is not the batch and has no size (none given, ``?``, or a
   range) is refused before any pass runs, naming the input, the dim and the targets that keep dynamic shapes
   (:func:`check_target_dims`); the target says which dims it needs (:meth:`Target.dims_to_fix`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgec.core.errors import ConfigError
from edgec.core.types import TensorSpec

_RANGE = re.compile(r"^(\d+)?\[(\d+)\.\.(\d+)\]$")
MAX_DIM = 2**63


@dataclass(frozen=True)
class DimRange:
    """A dim kept dynamic within ``[low, high]``; ``size``: the size data take (None: the synthetic rule's
    size, brought into the range)."""

    low: int
    high: int
    size: int | None = None

    def pick(self, default: int) -> int:
        """The size data take: :attr:`size`, else ``default`` clamped into the range."""
        return self.size if self.size is not None else min(max(default, self.low), self.high)

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and self.low <= size <= self.high

    def __str__(self) -> str:
        return f"{'' if self.size is None else self.size}[{self.low}..{self.high}]"


InputDim = int | DimRange | None
"""One dim of ``--input``: a size, a range, or None for ``?``."""
InputShape = tuple[InputDim, ...]


def parse_dim(text: str) -> InputDim:
    """``320`` -> 320, ``?`` -> None, ``[32..640]`` -> DimRange(32, 640), ``320[32..640]`` -> with size 320.

    Raises:
        ValueError: anything else, a bound or size out of ``[1, 2^63)``, ``low > high`` or a size outside
            its range.
    """
    text = text.strip()
    if text == "?":
        return None
    if text.isdigit():
        return _bounded(int(text))
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(text)
    size, low, high = (None if g is None else _bounded(int(g)) for g in match.groups())
    assert low is not None and high is not None
    if low > high or (size is not None and not low <= size <= high):
        raise ValueError(text)
    return DimRange(low, high, size)


def _bounded(value: int) -> int:
    if not 1 <= value < MAX_DIM:
        raise ValueError(value)
    return value


def shape_text(shape: InputShape) -> str:
    """The ``--input`` form of a shape: ``1x3x48x[32..640]``."""
    return "x".join("?" if d is None else str(d) for d in shape)


def sizes(given: Mapping[str, InputShape]) -> dict[str, tuple[int, ...]]:
    """The shapes given as plain sizes only (every dim a size), by input name."""
    return {name: tuple(d for d in shape if isinstance(d, int)) for name, shape in given.items()
            if all(isinstance(d, int) for d in shape)}


def check_given(inputs: tuple[TensorSpec, ...], given: Mapping[str, InputShape]) -> None:
    """``--input`` names model inputs, with their rank, and gives a dim the model fixes as that size (rule 1).

    Raises:
        ConfigError: naming the flag, the input and its shape.
    """
    specs = {spec.name: spec for spec in inputs}
    for name, shape in given.items():
        if name not in specs:
            raise ConfigError(f"--input names {name!r}, which is not a model input; inputs are {', '.join(specs)}")
        dims = specs[name].shape
        if len(shape) != len(dims) or any(isinstance(d, int) and d != g for d, g in zip(dims, shape)):
            raise ConfigError(f"--input {name}:{shape_text(shape)} does not fit the model's shape {list(dims)}")


def graph_shapes(given: Mapping[str, InputShape], keeps_dynamic: bool) -> dict[str, tuple[int, ...]]:
    """The sizes written into the graph (rules 2-3): none for a target that keeps dynamic shapes, else the
    inputs given as sizes only (a range or ``?`` is refused before: :func:`check_target_dims`)."""
    return {} if keeps_dynamic else sizes(given)


def check_target_dims(target: Any, inputs: tuple[TensorSpec, ...], given: Mapping[str, InputShape],
                      request: Any = None) -> None:
    """Refuse dynamic dims that ``target`` needs fixed and ``--input`` does not size (rule 3).

    Args:
        target: the target (its :meth:`dims_to_fix` says which dims it needs sized).
        inputs: the source model's inputs.
        given: ``--input`` shapes by input name.
        request: the build's precision request (its target options).

    Raises:
        ConfigError: one line naming the input, the dim, the flag to give and the targets that keep
            dynamic shapes.
    """
    for spec, axis in target.dims_to_fix(inputs, request):
        shape = given.get(spec.name)
        dim = shape[axis] if shape is not None and axis < len(shape) else None
        if isinstance(dim, int):
            continue
        what = f"gives {dim} for it" if dim is not None else ("gives '?' for it" if shape is not None else "gives no size")
        example = _example(spec, shape)
        name = f" ({spec.shape[axis]!r})" if isinstance(spec.shape[axis], str) else ""
        raise ConfigError(
            f"the {target.name} target needs fixed input sizes, and dim {axis}{name} of input {spec.name!r} "
            f"(shape {list(spec.shape)}) is dynamic, but --input {what}",
            hint=f"give its size with --input {spec.name}:{example} (N the size it runs at), or build for a target "
                 f"that keeps dynamic shapes ({', '.join(keeping_targets())})")


def keeping_targets() -> list[str]:
    """The registered targets whose bundles keep dynamic shapes (``Target.dynamic_shapes``)."""
    from edgec.targets.base import TARGETS

    return [name for name in TARGETS.names() if TARGETS.get(name).dynamic_shapes]


def _example(spec: TensorSpec, shape: InputShape | None) -> str:
    """An ``--input`` shape for ``spec``: the sizes given or fixed, 1 for the first dim, N elsewhere."""
    dims = []
    for i, dim in enumerate(spec.shape):
        given = shape[i] if shape is not None and i < len(shape) else None
        dims.append(str(given if isinstance(given, int) else dim if isinstance(dim, int) else 1 if i == 0 else "N"))
    return "x".join(dims)


def with_ranges(specs: tuple[TensorSpec, ...], given: Mapping[str, InputShape]) -> tuple[TensorSpec, ...]:
    """``specs`` with the ranges of ``--input`` on their dynamic dims recorded (``extra["ranges"]``: per dim,
    ``[low, high]`` or None; rule 2). Dims the bundle fixes take none."""
    result = []
    for spec in specs:
        shape = given.get(spec.name) or ()
        ranges = [[d.low, d.high] if isinstance(d, DimRange) and i < len(spec.shape) and not isinstance(spec.shape[i], int)
                  else None for i, d in enumerate(shape)]
        if any(ranges) and len(ranges) == len(spec.shape):
            spec = TensorSpec(spec.name, spec.shape, spec.dtype, {**spec.extra, "ranges": ranges})
        result.append(spec)
    return tuple(result)


def range_of(given: Mapping[str, InputShape], name: str, axis: int) -> DimRange | None:
    """The range ``--input`` gives for one dim, or None."""
    shape = given.get(name) or ()
    dim = shape[axis] if axis < len(shape) else None
    return dim if isinstance(dim, DimRange) else None
