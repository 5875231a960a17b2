"""OpenVINO runner (CPU by default) for ``model.xml`` + ``model.bin`` bundles.

OpenVINO's CPU plugin executes float layers in bf16 by default where the CPU supports it, which moves
outputs by ~1e-4 against the FP32 reference. The runner therefore pins ``INFERENCE_PRECISION_HINT``:
to the value passed in, else to the one the bundle declares in the model's ``runtime_options``
rt_info (edgec writes it), else to ``f32``. Other ``runtime_options`` the bundle declares are applied
too; the arguments below win over them. Threads and the performance hint are configurable.

The real package is imported as ``openvino`` inside functions only; this module is
``edgec.runtime_shims.openvino`` and never shadows it (absolute imports). A shim copied next to a
script *as* ``openvino.py`` would shadow it, which :func:`_import_openvino` detects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runner, RunnerError, brief

TARGETS = ("openvino",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""

DEFAULT_INFERENCE_PRECISION = "f32"
DEFAULT_PERFORMANCE_HINT = "LATENCY"
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
RUNTIME_OPTIONS = "runtime_options"
"""rt_info section of the model holding compile properties the bundle was verified with."""


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise RunnerError("openvino is not installed (pip install openvino)") from exc
    if not hasattr(ov, "Core"):
        raise RunnerError(f"'import openvino' found {getattr(ov, '__file__', ov)!r}, not the OpenVINO package; "
                          "rename that file or move it off sys.path")
    return ov


def declared_options(model: Any) -> dict[str, str]:
    """Compile properties stored under the model's ``runtime_options`` rt_info (empty when none)."""
    if not model.has_rt_info([RUNTIME_OPTIONS]):
        return {}
    section = model.get_rt_info([RUNTIME_OPTIONS])
    items = section.astype(dict) if hasattr(section, "astype") else dict(section)
    return {str(k): str(v.astype(str) if hasattr(v, "astype") else v) for k, v in items.items()}


class OpenVinoRunner(Runner):
    """Runs an OpenVINO IR ``.xml`` (its ``.bin`` beside it) with ``openvino.Core``.

    Args:
        model_path: the ``.xml`` file.
        threads: ``INFERENCE_NUM_THREADS``; None lets OpenVINO decide.
        device: OpenVINO device name (``CPU``, ``GPU``, ``NPU``, ``AUTO``).
        performance_hint: ``LATENCY`` (one stream, default), ``THROUGHPUT`` or ``CUMULATIVE_THROUGHPUT``.
        inference_precision: ``f32``, ``bf16`` or ``f16``; None takes the bundle's declared value, else f32.
        config: further compile properties; they win over the arguments above.
    """

    runtime = "openvino"

    def __init__(self, model_path: str, threads: int | None = None, device: str = "CPU",
                 performance_hint: str = DEFAULT_PERFORMANCE_HINT, inference_precision: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(model_path, threads)
        if performance_hint not in PERFORMANCE_HINTS:
            raise RunnerError(f"performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, not {performance_hint!r}")
        self.device = device
        self.performance_hint = performance_hint
        self.inference_precision = inference_precision
        self.extra_config = dict(config or {})
        self.compile_config: dict[str, Any] = {}
        self._compiled: Any = None
        self._request: Any = None
        self._output_aliases: list[set[str]] = []

    def activate_impl(self) -> None:
        ov = _import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(self.model_path)
        except Exception as exc:  # one call: OpenVINO raises RuntimeError (C++) and ValueError/TypeError for a bad file
            raise RunnerError(f"OpenVINO cannot read {self.model_path}: {brief(exc, 300)}") from exc
        self.compile_config = self._config(declared_options(model))
        self._compiled = core.compile_model(model, self.device, self.compile_config)
        self._request = self._compiled.create_infer_request()
        # compiling merges the names of ops it removes into the ports (an LSTM's state input ``h`` also answers to
        # ``10``, ``unsqueeze:0``), and get_any_name() may pick one of those: the names are read from the IR
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.output_names = [port.get_any_name() for port in model.outputs]
        self._output_aliases = [set(port.get_names()) for port in self._compiled.outputs]

    def _config(self, declared: dict[str, str]) -> dict[str, Any]:
        precision = self.inference_precision or declared.get("INFERENCE_PRECISION_HINT") or DEFAULT_INFERENCE_PRECISION
        config: dict[str, Any] = dict(declared)
        config.update({"PERFORMANCE_HINT": self.performance_hint, "INFERENCE_PRECISION_HINT": precision})
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        config.update(self.extra_config)
        return config

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._request is not None
        inputs = {name: np.asarray(feed[name], order="C") for name in self.input_names}  # keeps 0-d inputs 0-d
        try:
            results = self._request.infer(inputs)
        except Exception as exc:  # one call: OpenVINO's RuntimeError (C++) or its wrappers' errors on this feed
            raise RunnerError(f"OpenVINO inference failed: {brief(exc, 300)}") from exc
        return {name: np.array(value, copy=True) for name, value in zip(self.output_names, self._match(results))}

    def _match(self, results: Any) -> list[Any]:
        """The result of each compiled output, found by any of its tensor names (an output an ``If`` node
        produces carries its branch's name too, and ``get_any_name()`` may pick either), else by position."""
        values = list(results.values())
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        matched = []
        for index, aliases in enumerate(self._output_aliases):
            found = next((by_name[n] for n in sorted(aliases) if n in by_name), None)
            if found is None and index >= len(values):
                raise RunnerError(f"OpenVINO returned {len(values)} outputs; the model declares {len(self._output_aliases)}")
            matched.append(values[index] if found is None else found)
        return matched

    def property(self, name: str) -> Any:
        """A property of the compiled model as OpenVINO resolved it (e.g. ``INFERENCE_PRECISION_HINT``)."""
        if self._compiled is None:
            raise RunnerError(f"{type(self).__name__} must be activated before property()")
        return self._compiled.get_property(name)

    def deactivate_impl(self) -> None:
        self._request = None
        self._compiled = None
