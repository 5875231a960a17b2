"""Calibration the onnx target shares between the builds of one ``--max-drop`` search (:meth:`OnnxTarget.reuse`).

A search builds up to ``--max-builds`` INT8 candidates of one model that differ only in the nodes kept in float
(``nodes_to_exclude``) and, in its first step, the calibration method and the ``quantize_ops`` list. Built one
by one, each candidate's ``quantize_static`` calibrated again over every calibration sample (YOLOv8n at 320:
most of a candidate's time). onnxruntime's calibration (1.32's ``quantize_static``) reads the model file it is
given, the op types, the method and the calibrator's extra options; ``nodes_to_exclude`` reaches only the
quantizer that runs after it. Inside :func:`sharing` (the search's scope) the tensor ranges are therefore kept
per key: the digest of the exact file ``quantize_static`` receives, the calibration set (its digest and sample
count), the method and the extra options (:mod:`edgec.compiler.passes._chunked_calibration`, for every method,
minmax included). They are calibrated for every op type onnxruntime quantizes, and a candidate gets them
restricted to the tensors its own op types calibrate (ranges are per tensor), through ``quantize_static``'s
``calibration_cache_path``, instead of calibrating: one calibration per model and method. SmoothQuant (which
calibrates its own rewritten model) shares nothing. The check for output ``Concat``s that join parts of very
different ranges (:mod:`edgec.compiler.passes._mixed_outputs`, one more FP32 pass over the calibration set) is
kept likewise, per model file, calibration set and ratio.

Each candidate is still onnxruntime's own quantization of its own exclusions; only the ranges, which come out
the same for the same inputs, are computed once (model files byte-identical to unshared builds:
``tests/integration/targets/test_onnx_search_reuse.py``). Outside the scope nothing is kept; what a scope kept
is dropped when it ends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgec.targets import _reuse_scope

T = TypeVar("T")


@dataclass
class Shared:
    """What the builds of one scope share; counts for benchmarks and tests."""

    ranges: dict[Hashable, bytes] = field(default_factory=dict)
    """Per calibration key, the ranges file's bytes (``onnxruntime.quantization.save_tensors_data`` JSON)."""
    calibrations: int = 0
    """Calibrations run in this scope (the other candidates were served what was kept)."""
    served: int = 0
    """Candidates given kept ranges."""
    outputs: dict[Hashable, Any] = field(default_factory=dict)
    """Per model file, calibration set and ratio, the outputs whose ``Concat`` stays float."""
    output_checks: int = 0
    """Mixed-range output checks run in this scope."""

    def clear(self) -> None:
        """Drop what the scope kept (its counts stay for benchmarks and tests)."""
        self.ranges.clear()
        self.outputs.clear()


_SHARED: contextvars.ContextVar[Shared | None] = contextvars.ContextVar("edgec_onnx_shared", default=None)


def sharing() -> AbstractContextManager[Shared]:
    """A scope in which INT8 builds share calibration ranges; what it kept is dropped when it ends. Inside another scope it is
    that scope (a build's search and its final precision passes share one)."""
    return _reuse_scope.entered(_SHARED, Shared)


def current() -> Shared | None:
    """The active scope, None outside :func:`sharing`."""
    return _SHARED.get()


def kept(key: Hashable) -> bytes | None:
    """The ranges kept under ``key`` in the active scope (counted as served), None when none are."""
    scope = _SHARED.get()
    found = None if scope is None else scope.ranges.get(key)
    if scope is not None and found is not None:
        scope.served += 1
    return found


def keep(key: Hashable, ranges: bytes) -> None:
    """Keep a calibration's ``ranges`` under ``key`` in the active scope (nothing outside one)."""
    scope = _SHARED.get()
    if scope is not None:
        scope.ranges[key] = ranges
        scope.calibrations += 1


def mixed_outputs(key: Hashable | None, find: Callable[[], T]) -> T:
    """``find()`` (the mixed-range outputs of a model), run once per ``key`` in the active scope; outside one, or
    with no key, ``find()`` itself."""
    scope = _SHARED.get()
    if scope is None or key is None:
        return find()
    if key not in scope.outputs:
        scope.outputs[key] = find()
        scope.output_checks += 1
    found: T = scope.outputs[key]
    return found
