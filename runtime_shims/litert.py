"""LiteRT runner for ``.tflite`` bundles: ``ai_edge_litert``, or ``tflite_runtime`` where that is what a device has.

Rules:
1. The model runs through its ``serving_default`` signature (the first signature if it has another
   name), so inputs and outputs are addressed by the names in the bundle manifest. A model without
   signatures is addressed by its tensor names.
2. Integer-quantized inputs take integer arrays as they are; a float array given for such an input is
   quantized with the tensor's own scale and zero point (``q = round(x / scale) + zero_point``).
3. Integer-quantized outputs are dequantized (``x = (q - zero_point) * scale``) unless
   ``dequantize_outputs=False``, so callers compare them with float references directly.
4. A feed whose shape differs from the tensor's current shape resizes it (dynamic batch, for example).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import Runner, RunnerError

TARGETS = ("tflite",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""


def load_interpreter_class() -> tuple[Any, str]:
    """The ``Interpreter`` class and the name of the package that provided it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found,no-redef]

        return Interpreter, "tflite_runtime"
    except ImportError as exc:
        raise RunnerError("no LiteRT interpreter is installed (pip install ai-edge-litert, or tflite-runtime)") from exc


def quantize(array: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float -> the tensor's integer type with its scale and zero point (rule 2); other arrays unchanged."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind not in "iu" or not scale or np.asarray(array).dtype.kind != "f":
        return np.asarray(array)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(array, np.float64) / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(array: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """The tensor's integer values -> float32 with its scale and zero point (rule 3)."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return array
    return ((array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (native INFO lines bypass sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LiteRtRunner(Runner):
    """Runs a ``.tflite`` file with the LiteRT interpreter on CPU.

    Args:
        model_path: the ``.tflite`` file.
        threads: interpreter threads; None lets LiteRT decide.
        dequantize_outputs: return float outputs for integer-quantized output tensors.
    """

    runtime = "ai_edge_litert"

    def __init__(self, model_path: str, threads: int | None = None, dequantize_outputs: bool = True) -> None:
        super().__init__(model_path, threads)
        self.dequantize_outputs = dequantize_outputs
        self._interpreter: Any = None
        self._signature: Any = None
        self._inputs: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, dict[str, Any]] = {}

    def activate_impl(self) -> None:
        interpreter_class, self.runtime = load_interpreter_class()
        self._warmed = False
        try:
            with _quiet_native_stderr():  # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" on fd 2
                self._interpreter = interpreter_class(model_path=self.model_path, num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"LiteRT cannot load {self.model_path}: {exc}") from exc
        signatures = self._interpreter.get_signature_list()
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            self._signature = self._interpreter.get_signature_runner(key)
            self._inputs = dict(self._signature.get_input_details())
            self._outputs = dict(self._signature.get_output_details())
        else:
            self._interpreter.allocate_tensors()
            self._inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
            self._outputs = {d["name"]: d for d in self._interpreter.get_output_details()}
        self.input_names = list(self._inputs)
        self.output_names = list(self._outputs)

    def input_details(self) -> dict[str, dict[str, Any]]:
        """Per input: shape, dtype and ``quantization`` ``(scale, zero_point)`` as LiteRT reports them."""
        return self._inputs

    def output_details(self) -> dict[str, dict[str, Any]]:
        """Per output, as :meth:`input_details`."""
        return self._outputs

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {name: np.ascontiguousarray(quantize(feed[name], self._inputs[name])) for name in self.input_names}
        for name, array in arrays.items():
            want = np.dtype(self._inputs[name]["dtype"])
            if array.dtype != want:
                raise RunnerError(f"input {name!r} has dtype {array.dtype}; the model expects {want}")
        try:
            # the first run applies the XNNPACK delegate, which LiteRT announces on file descriptor 2
            with _quiet_native_stderr() if not self._warmed else contextlib.nullcontext():
                outputs = self._signature(**arrays) if self._signature is not None else self._run_tensors(arrays)
            self._warmed = True
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"LiteRT inference failed: {exc}") from exc
        if not self.dequantize_outputs:
            return {name: outputs[name] for name in self.output_names}
        return {name: dequantize(outputs[name], self._outputs[name]) for name in self.output_names}

    def _run_tensors(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        resized = False
        for name, array in arrays.items():
            index = self._inputs[name]["index"]
            if tuple(interpreter.get_tensor(index).shape) != array.shape:
                interpreter.resize_tensor_input(index, array.shape, strict=False)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, array in arrays.items():
            interpreter.set_tensor(self._inputs[name]["index"], array)
        interpreter.invoke()
        return {name: interpreter.get_tensor(d["index"]) for name, d in self._outputs.items()}

    def deactivate_impl(self) -> None:
        self._signature = None
        self._interpreter = None
