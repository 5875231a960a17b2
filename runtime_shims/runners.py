"""Which runner runs a bundle: the runtime shim module that declares the bundle's target.

A shim module named like the target runs its bundles (``openvino.py``); one named otherwise says which
targets it runs, ``TARGETS = ("onnx",)`` in ``ort.py``. Adding a target is one shim file and no table. Modules are imported lazily, relative to this package, so the same code works
as ``edgec.runtime_shims`` on the host and as ``edgec_shim`` copied into a bundle. A runner whose module or
runtime is missing is a :class:`RunnerError` naming what to install, never an ImportError traceback.

Resolution, first match wins:

1. ``manifest["target_details"]["runner"]`` = ``"module:Class"`` (a target may record its own runner);
2. the module named like the target (``openvino.py``), unless its ``TARGETS`` leaves the target out;
3. the one module of this package whose ``TARGETS`` names the target (``ort.py`` runs ``onnx``).

Construction, first match wins, for runners that need more than the model path (settings files,
engines, quantization parameters):

1. the module's ``open_runner(bundle_dir, model_file, threads, **options) -> Runner`` (it may also pick
   another runner, e.g. TensorRT falling back to onnxruntime where no GPU is present);
2. the recorded class, or the module's only :class:`Runner` subclass:
   ``Class(bundle_dir / model_file, threads=threads, **options)``.

``options`` are keywords the compiler passes for its own runs (Core ML's ``compute_units``); devices pass none.

``trust_engine`` (default False) is passed to an opener or class that takes it (TensorRT's): True lets it
load a prebuilt native engine the bundle carries, which is running native code from the bundle. Only a
caller that verified where the bundle came from passes True (the device agent, after TUF verified the
release; the shim's ``--trust-engine``); runners that load no native code never see it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import bundle_files
from .base import Runner, RunnerError

TARGETS: tuple[str, ...] = ()
"""None: this module's :func:`open_runner` is the lookup, not a target's runner."""


def _package() -> str:
    return __package__ or "edgec_shim"


def _import(name: str) -> ModuleType | None:
    """The shim module ``name`` of this package, or None when there is none (or the name is not a plain
    public module name: manifests are untrusted).

    Raises:
        RunnerError: the module exists but cannot be imported.
    """
    if not name.isidentifier() or name.startswith("_"):
        return None
    try:
        return importlib.import_module(f".{name}", package=_package())
    except ModuleNotFoundError as exc:
        if exc.name == f"{_package()}.{name}":
            return None
        raise RunnerError(f"the {name} runner cannot be imported: {exc}") from None


def declares(module: ModuleType, target: str) -> bool:
    """Whether a shim module runs ``target`` bundles (its ``TARGETS`` names it)."""
    declared = getattr(module, "TARGETS", ())
    return isinstance(declared, (tuple, list)) and target in declared


def shim_module(target: str) -> ModuleType:
    """The shim module that runs ``target`` bundles (see the module docstring).

    Raises:
        RunnerError: no module of this shim declares the target, or two do.
    """
    named = _import(target)
    if named is not None and (not hasattr(named, "TARGETS") or declares(named, target)):
        return named
    package = importlib.import_module(_package())
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = None if info.name.startswith("_") else _import(info.name)
        if module is not None and declares(module, target):
            found.append(module)
    if len(found) > 1:
        raise RunnerError(f"shim modules {', '.join(m.__name__ for m in found)} all declare target {target!r}")
    if not found:
        raise RunnerError(f"no runner for target {target!r}: this shim has no module for it "
                          "(rebuild the bundle with an edgec that supports it)")
    return found[0]


def _recorded(manifest: dict[str, Any]) -> tuple[str, str] | None:
    details = manifest.get("target_details") or {}
    recorded = details.get("runner") if isinstance(details, dict) else None
    if isinstance(recorded, str) and ":" in recorded:
        module, cls = recorded.split(":", 1)
        return module, cls
    return None


def runner_class(module: ModuleType, class_name: str | None = None) -> type[Runner]:
    """The runner class ``class_name`` of a shim module, or its only :class:`Runner` subclass.

    Raises:
        RunnerError: no such class, or not exactly one runner in the module.
    """
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


def _takes(func: Any, name: str) -> bool:
    """Whether ``func`` (a function or class) has a parameter ``name``."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def open_model(target: str, bundle_dir: str, model_file: str, threads: int | None = None,
               runner: str | None = None, *, trust_engine: bool = False, **options: Any) -> Runner:
    """An inactive runner for ``model_file`` in ``bundle_dir``, from ``target``'s shim module.

    Args:
        target: the target name (a manifest's ``target``).
        bundle_dir: the folder holding the model.
        model_file: the model's path relative to ``bundle_dir``; not checked here (see :func:`open_runner`).
        threads: intra-op threads; None lets the runtime decide.
        runner: ``"module:Class"`` to use instead of the target's module.
        trust_engine: the bundle's origin is verified: a runner may load a prebuilt engine it carries
            (see the module docstring). Passed only to runners that take it.
        options: keywords for the runner (see the module docstring).

    Raises:
        RunnerError: no runner for the target here.
    """
    module_name, class_name = runner.split(":", 1) if runner and ":" in runner else (None, None)
    if module_name is not None:
        module = _import(module_name)
        if module is None:
            raise RunnerError(f"no runner for target {target!r}: this shim has no module {module_name!r} "
                              "(rebuild the bundle with an edgec that supports it)")
    else:
        module = shim_module(target)
    opener = getattr(module, "open_runner", None)
    make: Callable[..., Any] = opener if class_name is None and callable(opener) else runner_class(module, class_name)
    use_opener = make is opener
    if _takes(make, "trust_engine"):
        options = {**options, "trust_engine": trust_engine}
    if use_opener:
        made = make(bundle_dir, model_file, threads, **options)
    else:
        made = make(os.path.join(bundle_dir, model_file), threads=threads, **options)
    if not isinstance(made, Runner):
        raise RunnerError(f"the {target} shim returned {type(made).__name__}, not a Runner")
    return made


def open_runner(bundle_dir: str, manifest: dict[str, Any], threads: int | None = None, *,
                trust_engine: bool = False, **options: Any) -> Runner:
    """An inactive runner for a bundle: the one way the compiler, the shim, the agent and serve open one.

    ``trust_engine``: see :func:`open_model`; False (the default) for a bundle whose origin is not verified.

    Raises:
        BundleFileError: ``model_file`` is not a plain relative path to listed files inside the bundle.
        RunnerError: no runner for the target here.
    """
    model_file = bundle_files.field_name(manifest, "model_file")
    bundle_files.named_path(bundle_dir, manifest, "model_file")
    recorded = _recorded(manifest)
    return open_model(str(manifest.get("target", "")), str(bundle_dir), model_file, threads,
                      runner=":".join(recorded) if recorded else None, trust_engine=trust_engine, **options)
