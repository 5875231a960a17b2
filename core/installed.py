"""Which Python modules are installed, looked up without importing them (``edgec targets`` and the build's
first check take milliseconds, where importing TensorFlow, torch or coremltools takes seconds).

Rules:
1. A module is installed when :func:`importlib.util.find_spec` finds it and a distribution's metadata claims
   its top-level name (:func:`importlib.metadata.packages_distributions`; a folder that an uninstall left
   behind has none); the version is that distribution's.
2. ``find_spec`` raises where a parent package cannot be imported (or an import hook refuses the name): that
   is "not installed", not a bug.
3. A module comes with one edgec extra (:data:`MODULE_EXTRAS`), except those whose distribution cannot come
   with any (:data:`INSTALL_ALONE`): the hint then is the exact ``pip`` command that installs it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from edgec.core.errors import MissingDependencyError

TF_KERAS = "tf-keras==2.21.0"
"""onnx2tf imports ``tf_keras``; its version follows the ``tensorflow-cpu`` pin of the ``tflite`` extra."""
INSTALL_ALONE = {"tf_keras": f"pip install --no-deps '{TF_KERAS}'"}
"""Modules no extra can install. tf-keras's metadata asks for ``tensorflow``, not ``tensorflow-cpu``: pip would
add a second TensorFlow (572 MB) over the ``tensorflow/`` folder of the first, so it is installed without its
dependencies (what ``make test`` and ``make demo`` do)."""
MODULE_EXTRAS = {
    "onnx": "onnx", "onnxruntime": "onnx", "onnxslim": "onnx", "ml_dtypes": "onnx",
    "torch": "torch", "onnxscript": "torch", "torch_pruning": "torch",
    "tensorflow": "tflite", "keras": "tflite", "ai_edge_litert": "tflite", "onnx2tf": "tflite",
    "onnx_graphsurgeon": "tflite", "sng4onnx": "tflite", "psutil": "tflite", "h5py": "tflite",
    "openvino": "openvino", "nncf": "openvino", "coremltools": "coreml", "tensorrt": "tensorrt",
    "executorch": "executorch", "torchao": "executorch", "tf2onnx": "tf2onnx",
}
"""Top-level module -> the edgec extra that installs it (others: the extra of whatever needs them)."""


@dataclass(frozen=True)
class Module:
    """What is installed under a top-level module name.

    Attributes:
        name: the module, e.g. ``tensorflow``.
        distribution: the distribution that provides it (``tensorflow-cpu``), or None.
        version: that distribution's version, or None.
        problem: why it is not usable (None: installed).
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    problem: str | None = None

    @property
    def installed(self) -> bool:
        return self.problem is None


def lookup(module: str) -> Module:
    """Whether ``module`` is installed, and by which distribution, without importing it (see the rules).

    Args:
        module: a top-level or dotted module name; a dotted one is looked up by its top level for metadata.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that cannot import, or an import hook refusing the name
        spec = None
    if spec is None:
        return Module(module, problem="not installed")
    if module.split(".")[0] in sys.stdlib_module_names:
        return Module(module)
    distributions = _distributions().get(module.split(".")[0], [])
    if not distributions:  # a folder an uninstall left behind, or a stray one on sys.path
        return Module(module, problem="found, but no installed distribution provides it (a partial uninstall?)")
    name = distributions[0]
    try:
        return Module(module, name, importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return Module(module, name, problem=f"the metadata of {name} is broken")


def install_command(module: str, extra: str) -> str:
    """The command that installs ``module``: the exact ``pip`` line for :data:`INSTALL_ALONE`, else its extra's
    (:data:`MODULE_EXTRAS`, or ``extra`` for modules not listed there)."""
    top = module.split(".")[0]
    return INSTALL_ALONE.get(top) or f"pip install 'edgec[{MODULE_EXTRAS.get(top, extra)}]'"


def missing(modules: tuple[str, ...]) -> list[Module]:
    """The modules of ``modules`` that are not installed (in order)."""
    return [m for m in map(lookup, modules) if not m.installed]


def require_installed(modules: tuple[str, ...], extra: str, purpose: str) -> None:
    """Raise for the first module of ``modules`` that is not installed, without importing any.

    Raises:
        MissingDependencyError: naming the module, ``purpose`` and the command that installs it
            (:func:`install_command`).
    """
    for module in missing(modules):
        raise missing_error(module.name, extra, purpose)


def missing_error(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """A :class:`MissingDependencyError` whose hint is :func:`install_command` (not always the extra)."""
    top = module.split(".")[0]
    error = MissingDependencyError(top, MODULE_EXTRAS.get(top, extra), purpose)
    error.hint = install_command(top, extra)
    return error


@dataclass(frozen=True)
class Readiness:
    """Whether a target can build, looked up without importing its toolchain.

    Attributes:
        missing: modules every build of the target needs that are not installed.
        routes: per route format, the modules that route needs on top and that are not installed.
        found: the needed modules that are installed, with their distribution and version.
        extra: the target's extra (for modules :data:`MODULE_EXTRAS` does not list).
    """

    missing: tuple[Module, ...]
    routes: dict[str, tuple[Module, ...]]
    found: tuple[Module, ...] = ()
    extra: str = ""
    runtime: bool = True
    """Whether the runtime its bundles need is installed (``edgec verify``, ``edgec serve``)."""

    @property
    def ready(self) -> bool:
        """Every module of the target and of all its routes is installed."""
        return not self.missing and not any(self.routes.values())

    def summary(self) -> str:
        """``ready``, ``partly ready: ...`` or ``not installed (...)``, naming the command for what is missing."""
        if self.missing:
            first = self.missing[0].name
            return f"not installed: needs {first} ({install_command(first, self.extra)})"
        lacking = [f"the {route} route needs {', '.join(m.name for m in mods)} "
                   f"({'; '.join(dict.fromkeys(install_command(m.name, self.extra) for m in mods))})"
                   for route, mods in self.routes.items() if mods]
        return "partly ready: " + "; ".join(lacking) if lacking else "ready"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: ``ready``, ``runtime``, ``missing`` (module, problem, install command), ``routes`` (in
        preference order: ready, missing) and ``installed`` (module: distribution, version)."""
        def entries(modules: tuple[Module, ...]) -> list[dict[str, str | None]]:
            return [{"module": m.name, "problem": m.problem, "install": install_command(m.name, self.extra)}
                    for m in modules]

        return {"ready": self.ready, "runtime": self.runtime, "missing": entries(self.missing),
                "routes": {r: {"ready": not mods, "missing": entries(mods)} for r, mods in self.routes.items()},
                "installed": {m.name: {"distribution": m.distribution, "version": m.version} for m in self.found}}


def readiness(modules: tuple[str, ...], route_modules: dict[str, tuple[str, ...]], routes: tuple[str, ...],
              extra: str, runtime: bool = True) -> Readiness:
    """What a target with these needs lacks (see :class:`Readiness`); imports nothing.

    Args:
        modules: what every build needs.
        route_modules: what a route format needs on top.
        routes: the target's route formats.
        extra: the target's extra.
        runtime: whether the runtime of its bundles is installed.
    """
    needed = dict.fromkeys([*modules, *(m for r in routes for m in route_modules.get(r, ()))])
    looked = {name: lookup(name) for name in needed}
    return Readiness(tuple(looked[m] for m in modules if not looked[m].installed),
                     {r: tuple(looked[m] for m in route_modules.get(r, ()) if not looked[m].installed) for r in routes},
                     tuple(m for m in looked.values() if m.installed), extra, runtime)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())
