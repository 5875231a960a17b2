"""Work the openvino target shares between the builds of one ``--max-drop`` search (:meth:`OpenVinoTarget.reuse`).

A search builds the FP32 reference and up to ``--max-builds`` INT8 candidates of one model that differ only in
the ops kept in float (nncf's ignored scope) and, in its first step, the calibration method. Built one by one,
each candidate converted the model again and ran nncf's statistics collection again over every calibration
sample. Inside :func:`sharing` (the search's scope):

- the converted FP32 ``openvino.Model`` is kept once per source model (its digest and tensor specs, and the
  build's data sizes when conversion had to fix dynamic dims to them) and every export gets a clone of it, never
  the kept model itself;
- nncf's statistics (the per-tensor values its range estimators and bias correction reduce the calibration
  samples to) are kept per source model, calibration set (its digest and sample count), calibration method and
  every other nncf option, and within that per statistic point (the tensor, and the reducers and aggregators
  that produce the value): a candidate collects only the points no earlier candidate collected, often none
  (:mod:`edgec.targets._openvino_stats`).

Each candidate is still the target's real export (nncf's own quantization, bias correction and saving) measured
with the real runtime; only conversion and statistics collection, which give the same values every time for
the same inputs, are done once. Outside the scope nothing is kept: everything kept is dropped when it ends.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from edgec.targets import _reuse_scope

Converted = tuple[Any, dict[str, Any], Any]
"""What conversion returns: the ``openvino.Model``, how it got there and the artifact it matches."""


@dataclass
class Shared:
    """What the builds of one scope share, each under its own key; counts for benchmarks and tests."""

    models: dict[Hashable, Converted] = field(default_factory=dict)
    statistics: dict[Hashable, dict[Hashable, Any]] = field(default_factory=dict)
    conversions: int = 0
    """Conversions run in this scope (the others were clones)."""
    collections: int = 0
    """nncf statistics collections run in this scope (the others were served from what was kept)."""

    def clear(self) -> None:
        """Drop what the scope kept (its counts stay for benchmarks and tests)."""
        self.models.clear()
        self.statistics.clear()


_SHARED: contextvars.ContextVar[Shared | None] = contextvars.ContextVar("edgec_openvino_shared", default=None)


def sharing() -> AbstractContextManager[Shared]:
    """A scope in which exports share conversions and statistics; what it kept is dropped when it ends. Inside another scope it is
    that scope (a build's search and its final precision passes share one)."""
    return _reuse_scope.entered(_SHARED, Shared)


def current() -> Shared | None:
    """The active scope, None outside :func:`sharing`."""
    return _SHARED.get()


def converted(key: Hashable, sizes: Hashable, convert: Callable[[], Converted]) -> Converted:
    """``convert()``, run once per ``key`` in a scope (``key`` and ``sizes``, the build's data sizes, when the
    conversion had to fix dynamic dims to them: ``fixed_dims`` in its details). The model is a clone of the kept
    one (a build may change its copy freely), the details a copy; outside a scope, ``convert()`` itself."""
    scope = _SHARED.get()
    if scope is None:
        return convert()
    found = next((k for k in ((key, None), (key, sizes)) if k in scope.models), None)
    if found is None:
        made = convert()
        found = (key, sizes if "fixed_dims" in made[1] else None)
        scope.models[found] = made
        scope.conversions += 1
    model, details, artifact = scope.models[found]
    return model.clone(), copy.deepcopy(details), artifact


def statistics(key: Hashable) -> dict[Hashable, Any] | None:
    """The statistics kept under ``key`` (a model, calibration set, method and options), created empty; None
    outside a scope (nothing is kept)."""
    scope = _SHARED.get()
    return None if scope is None else scope.statistics.setdefault(key, {})


def count_collection() -> None:
    """Note that a statistics collection ran in the active scope."""
    scope = _SHARED.get()
    if scope is not None:
        scope.collections += 1
