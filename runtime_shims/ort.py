"""onnxruntime runner (CPU by default)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runner, RunnerError

TARGETS = ("onnx",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""


class OrtRunner(Runner):
    """Runs an ``.onnx`` file with onnxruntime.

    Args:
        model_path: the ``.onnx`` file.
        threads: intra-op threads; None lets onnxruntime decide.
        providers: execution providers, CPU by default.
    """

    runtime = "onnxruntime"

    def __init__(self, model_path: str, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__(model_path, threads)
        self.providers = providers or ["CPUExecutionProvider"]
        self._session: Any = None

    def activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError("onnxruntime is not installed (pip install onnxruntime)") from exc
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(self.model_path, options, providers=self.providers)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        outputs = self._session.run(self.output_names, feed)
        return dict(zip(self.output_names, outputs))

    def deactivate_impl(self) -> None:
        self._session = None
