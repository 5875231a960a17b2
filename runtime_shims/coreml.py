"""Core ML runner: runs an ``.mlpackage`` with coremltools' ``MLModel.predict`` (macOS only).

coremltools can build and inspect models on any host, but executing one needs Apple's Core ML
framework: on other hosts :meth:`CoreMLRunner.activate` raises :class:`RunnerError` saying so.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .base import Runner, RunnerError

TARGETS = ("coreml",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLRunner(Runner):
    """Runs a Core ML model package.

    Args:
        model_path: the ``.mlpackage`` directory.
        threads: ignored (Core ML schedules its own threads); kept for the common runner interface.
        compute_units: ``ALL`` (CPU, GPU and Neural Engine), ``CPU_ONLY``, ``CPU_AND_GPU`` or ``CPU_AND_NE``.
    """

    runtime = "coreml"

    def __init__(self, model_path: str, threads: int | None = None, compute_units: str = "ALL") -> None:
        super().__init__(model_path, threads)
        if compute_units not in COMPUTE_UNITS:
            raise RunnerError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {compute_units!r}")
        self.compute_units = compute_units
        self._model: Any = None

    def activate_impl(self) -> None:
        if sys.platform != "darwin":
            raise RunnerError(f"Core ML models run only on macOS; this host is {sys.platform} "
                              "(coremltools can build and inspect them here, not execute them)")
        try:
            import coremltools as ct
        except ImportError as exc:
            raise RunnerError("coremltools is not installed (pip install coremltools)") from exc
        self._model = ct.models.MLModel(self.model_path, compute_units=getattr(ct.ComputeUnit, self.compute_units))
        description = self._model.get_spec().description
        self.input_names = [i.name for i in description.input]
        self.output_names = [o.name for o in description.output]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._model is not None
        result = self._model.predict({name: np.ascontiguousarray(value) for name, value in feed.items()})
        return {name: np.asarray(result[name]) for name in self.output_names}

    def deactivate_impl(self) -> None:
        self._model = None
