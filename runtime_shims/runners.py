"""Which runner runs a bundle: ``manifest["target"]`` -> shim module and runner class.

Runner modules are imported lazily, relative to this package, so the same code works as
``edgec.runtime_shims`` on the host and as ``edgec_shim`` copied into a bundle. A runner whose module
or runtime is missing is a :class:`RunnerError` naming what to install, never an ImportError traceback.

Resolution, first match wins:

1. ``manifest["target_details"]["runner"]`` = ``"module:Class"`` (a target may record its own runner);
2. :data:`RUNNERS` below;
3. a shim module named like the target, holding exactly one :class:`Runner` subclass.

Construction, first match wins, for runners that need more than the model path (settings files,
engines, quantization parameters):

1. the shim module's ``open_runner(bundle_dir, model_file, threads) -> Runner`` (it may also pick
   another runner, e.g. TensorRT falling back to onnxruntime where no GPU is present);
2. the class's ``from_bundle(bundle_dir, manifest, threads)`` classmethod;
3. ``Class(bundle_dir / manifest["model_file"], threads=threads)``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from . import bundle_files
from .base import Runner, RunnerError

RUNNERS: dict[str, tuple[str, str]] = {
    "onnx": ("ort", "OrtRunner"),
    "openvino": ("openvino", "OpenVinoRunner"),
    "tflite": ("litert", "LiteRtRunner"),
    "coreml": ("coreml", "CoreMLRunner"),
    "tensorrt": ("tensorrt", "TensorRTRunner"),
}
"""Target name -> (shim module, runner class)."""


def runner_spec(manifest: dict[str, Any]) -> tuple[str, str | None]:
    """``(module, class or None)`` for a manifest; None means: the module's only Runner subclass."""
    details = manifest.get("target_details") or {}
    recorded = details.get("runner") if isinstance(details, dict) else None
    if isinstance(recorded, str) and ":" in recorded:
        module, cls = recorded.split(":", 1)
        return module, cls
    target = str(manifest.get("target", ""))
    if target in RUNNERS:
        return RUNNERS[target]
    return target, None


def _shim_module(manifest: dict[str, Any]) -> tuple[Any, str | None]:
    module_name, class_name = runner_spec(manifest)
    package = __package__ or "edgec_shim"
    try:
        return importlib.import_module(f".{module_name}", package=package), class_name
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(f".{module_name}"):
            raise RunnerError(f"no runner for target {manifest.get('target')!r}: this shim has no module "
                              f"{module_name!r} (rebuild the bundle with an edgec that supports it)") from None
        raise RunnerError(f"the {module_name} runner cannot be imported: {exc}") from None


def runner_class(manifest: dict[str, Any]) -> type[Runner]:
    """Import the runner class for a manifest.

    Raises:
        RunnerError: unknown target, or its shim module is not in this package.
    """
    module, class_name = _shim_module(manifest)
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and issubclass(cls, Runner):
            return cls
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, Runner) and c is not Runner and c.__module__ == module.__name__]
    if len(found) != 1:
        raise RunnerError(f"shim module {module.__name__!r} defines {len(found)} runners, expected "
                          f"{class_name or 'exactly one'}")
    return found[0]


def make_runner(bundle_dir: str, manifest: dict[str, Any], threads: int | None = None) -> Runner:
    """An inactive runner for the bundle (see the module docstring for the construction protocol).

    Raises:
        BundleFileError: ``model_file`` is not a plain relative path to listed files inside the bundle.
        RunnerError: no runner for the target here.
    """
    model_file = bundle_files.field_name(manifest, "model_file")
    bundle_files.named_path(bundle_dir, manifest, "model_file")
    module, _ = _shim_module(manifest)
    opener = getattr(module, "open_runner", None)
    if callable(opener):
        runner = opener(bundle_dir, model_file, threads)
    else:
        cls = runner_class(manifest)
        factory = getattr(cls, "from_bundle", None)
        if callable(factory):
            runner = factory(bundle_dir, manifest, threads)
        else:
            runner = cls(os.path.join(bundle_dir, model_file), threads=threads)
    if not isinstance(runner, Runner):
        raise RunnerError(f"the {manifest.get('target')} shim returned {type(runner).__name__}, not a Runner")
    return runner
