"""ExecuTorch runner for ``model.pte`` bundles: PyTorch's ``executorch.runtime``, or the torch-free
``executorch_numpy_runtime`` where that is what a device has.

Rules:
1. The program's ``forward`` method runs the model; its inputs and outputs are positional, so edgec
   stores their names in the program itself: the constant method :data:`IO_METHOD` returns a uint8
   tensor holding ``{"inputs": [...], "outputs": [...]}`` as JSON (both runtimes return tensors from
   constant methods; the numpy runtime refuses strings). A program without it gets ``input_0``...
2. ``runtime="auto"`` (default) takes ``executorch.runtime`` (the exporter's own version, needs torch)
   when it imports, else ``executorch_numpy_runtime`` (numpy only; ExecuTorch 1.3.1 kernels, XNNPACK
   and portable ops, CPU only). ``"executorch"`` or ``"numpy"`` ask for one of them.
3. Dims that ``torch.export`` left dynamic were memory-planned for their upper bound; a feed larger
   than the planned shape is refused here with both shapes named (the runtime only logs a resize error).
4. The runtimes print cpuinfo and load diagnostics on file descriptor 2 (when a program loads and when
   XNNPACK first runs); they are captured then and shown only in the error when that fails.
5. ``threads`` resizes ``executorch.runtime``'s process-wide thread pool, before the program loads and only
   when its size differs; the numpy runtime keeps its own. XNNPACK delegates keep the pool that existed when
   their method loaded, and a resize destroys it: a method loaded before a resize runs on freed memory and
   crashes the process (measured: the segfault of ``make demo``'s latency loop, which resized the pool after
   loading). So a runner that would resize the pool while another runner of the process holds a loaded
   program is refused (:class:`RunnerError`) instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import Runner, RunnerError, brief

TARGETS = ("executorch",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""

IO_METHOD = "edgec_io"
"""Constant method of an edgec ``.pte`` that returns its input and output names (rule 1)."""
FORWARD = "forward"
RUNTIMES = ("auto", "executorch", "numpy")
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "executorch")


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file for the block; the list yields its text afterwards.

    Native libraries (the ExecuTorch runtime's cpuinfo lines, TensorFlow's absl) write there directly,
    past ``sys.stderr``.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def quiet_python_logs() -> Iterator[None]:
    """Silence the warnings torch, torchao and ExecuTorch log or warn on import (torchao's missing CUDA
    extensions, pytree deprecations) for the block."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def load_runtime(choice: str = "auto") -> tuple[Any, str]:
    """``(runtime object, name)`` for rule 2: ``executorch.runtime.Runtime.get()`` or the numpy runtime's.

    Raises:
        RunnerError: the runtime asked for (or, for ``auto``, either) is not installed.
    """
    if choice not in RUNTIMES:
        raise RunnerError(f"runtime must be one of {', '.join(RUNTIMES)}, not {choice!r}")
    reason = ""
    if choice in ("auto", "executorch"):
        try:
            with quiet_python_logs():
                from executorch.runtime import Runtime

            return Runtime.get(), "executorch"
        except ImportError as exc:
            if choice == "executorch":
                raise RunnerError(f"executorch.runtime does not import ({brief(exc, 120)}); pip install executorch") from exc
            if getattr(exc, "name", None) not in ("executorch", "executorch.runtime"):
                reason = f"; executorch.runtime does not import: {brief(exc, 120)}"
    try:
        import executorch_numpy_runtime as etnp  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RunnerError("no ExecuTorch runtime is installed (pip install executorch, or executorch-numpy-runtime "
                          f"on Python >= 3.12 for a torch-free one){reason}") from exc
    return etnp.Runtime.get(), "numpy"


class ExecuTorchRunner(Runner):
    """Runs a ``.pte`` program's ``forward`` method on CPU (XNNPACK and portable kernels).

    Args:
        model_path: the ``.pte`` file.
        threads: size of ``executorch.runtime``'s thread pool; None leaves it as it is.
        runtime: ``auto``, ``executorch`` or ``numpy`` (rule 2).
    """

    runtime = "executorch"

    def __init__(self, model_path: str, threads: int | None = None, runtime: str = "auto") -> None:
        super().__init__(model_path, threads)
        if runtime not in RUNTIMES:
            raise RunnerError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        self.choice = runtime
        self.planned_shapes: dict[str, tuple[int, ...]] = {}
        self._method: Any = None
        self._torch: Any = None
        self._first = True

    def activate_impl(self) -> None:
        runtime, name = load_runtime(self.choice)
        self.runtime = "executorch" if name == "executorch" else "executorch_numpy_runtime"
        if name == "executorch" and self.threads:
            size_thread_pool(int(self.threads), self.model_path)
        with captured_native_stderr() as log:
            try:
                program = runtime.load_program(self.model_path)
                methods = set(program.method_names)
                self._method = program.load_method(FORWARD) if FORWARD in methods else None
                names = self._names(program) if IO_METHOD in methods else None
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
        if failure is not None:
            detail = brief(" ".join(log).strip(), 200)
            raise RunnerError(f"{self.runtime} cannot load {self.model_path}: {brief(failure, 200)}"
                              + (f" ({detail})" if detail else "")) from failure
        if self._method is None:
            raise RunnerError(f"{self.model_path} has no {FORWARD!r} method")
        self._finish(name, names)

    def _names(self, program: Any) -> dict[str, list[str]]:
        raw = self._call(program.load_method(IO_METHOD), [])[0]
        try:
            names = json.loads(bytes(np.asarray(raw, np.uint8).ravel()).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunnerError(f"the program's {IO_METHOD} method does not hold JSON names") from exc
        if not isinstance(names, dict) or not all(isinstance(names.get(k), list) for k in ("inputs", "outputs")):
            raise RunnerError(f"the program's {IO_METHOD} method does not list inputs and outputs")
        return {k: [str(n) for n in names[k]] for k in ("inputs", "outputs")}

    def _finish(self, name: str, names: dict[str, list[str]] | None) -> None:
        meta = self._meta()
        inputs, outputs = meta
        self.input_names = names["inputs"] if names else [f"input_{i}" for i in range(len(inputs))]
        self.output_names = names["outputs"] if names else [f"output_{i}" for i in range(len(outputs))]
        if len(self.input_names) != len(inputs) or len(self.output_names) != len(outputs):
            raise RunnerError(f"{self.model_path}: {IO_METHOD} names {len(self.input_names)} inputs and "
                              f"{len(self.output_names)} outputs, forward has {len(inputs)} and {len(outputs)}")
        self.planned_shapes = dict(zip(self.input_names, inputs))
        if name == "executorch":
            import torch

            self._torch = torch
            _LOADED.add(self)

    def _meta(self) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """Planned (upper-bound) shapes of forward's inputs and outputs."""
        meta = self._method.metadata
        if isinstance(meta, dict):  # executorch_numpy_runtime
            return ([tuple(t["shape"]) for t in meta["inputs"]], [tuple(t["shape"]) for t in meta["outputs"]])
        return ([tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())],
                [tuple(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())])

    def _call(self, method: Any, inputs: list[Any]) -> list[Any]:
        return list(method.execute(inputs) if hasattr(method, "execute") else method(inputs))

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(feed[name]) for name in self.input_names]
        for name, array in zip(self.input_names, arrays):
            self._check_shape(name, array.shape)
        inputs = [self._torch.from_numpy(a) for a in arrays] if self._torch is not None else arrays
        quiet: contextlib.AbstractContextManager[list[str]] = (
            captured_native_stderr() if self._first else contextlib.nullcontext([]))
        try:
            with quiet as log:
                outputs = self._call(self._method, inputs)
        except Exception as exc:
            detail = brief(" ".join(log).strip(), 200)
            raise RunnerError(f"ExecuTorch inference failed: {brief(exc)}" + (f" ({detail})" if detail else "")) from exc
        self._first = False
        return {name: _to_numpy(value) for name, value in zip(self.output_names, outputs)}

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        planned = self.planned_shapes[name]
        if len(shape) != len(planned) or any(s > p for s, p in zip(shape, planned)):
            raise RunnerError(f"input {name!r} has shape {tuple(shape)}; this program was memory-planned for "
                              f"shapes up to {planned}")

    def deactivate_impl(self) -> None:
        self._method = None
        self._torch = None
        self._first = True
        _LOADED.discard(self)


_LOADED: weakref.WeakSet[ExecuTorchRunner] = weakref.WeakSet()
"""Active runners: their methods hold the thread pool they were loaded with (rule 5)."""


def size_thread_pool(threads: int, model_path: str) -> None:
    """Resize ``executorch.runtime``'s thread pool to ``threads`` before a program loads (rule 5).

    Raises:
        RunnerError: it has another size and a runner of this process holds a loaded program, whose
            delegates would be left with the destroyed pool.
    """
    from executorch.extension.pybindings import portable_lib

    current = int(portable_lib._threadpool_get_thread_count())
    if current == threads:
        return
    if any(runner._method is not None for runner in list(_LOADED)):
        raise RunnerError(f"cannot run {model_path} on {threads} threads: ExecuTorch's thread pool is process-wide and "
                          f"a program loaded in this process runs on its {current} threads (resizing it would "
                          "crash that program); deactivate the other runner first, or ask for the same threads")
    with captured_native_stderr():  # it logs "Resetting threadpool to N threads."
        portable_lib._unsafe_reset_threadpool(threads)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.array(value.detach().cpu().numpy(), copy=True)
    return np.array(value, copy=True)
