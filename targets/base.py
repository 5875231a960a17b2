"""The target contract: the formats it takes, the precisions it offers, how it exports and runs a bundle."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import ConfigError, UnsupportedError, require
from edgec.core.registry import Registry
from edgec.core.types import ModelArtifact, TensorSpec
from edgec.runtime_shims.base import Runner

if TYPE_CHECKING:
    from edgec.compiler.fidelity import LayerDivergence

TARGETS: Registry[Target] = Registry("target", "edgec.targets")

PassStep = tuple[str, dict[str, Any]]
Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class PrecisionRequest:
    """What the user asked for that shapes the precision passes.

    Args:
        precision: fp32, fp16 or int8.
        int8_mode: ``auto``, ``static`` or ``dynamic``.
        calibration: the calibration set, if given.
        exclude: nodes to keep in float.
    """

    precision: str
    int8_mode: str = "auto"
    calibration: CalibrationSet | None = None
    exclude: tuple[str, ...] = ()
    """Nodes to keep in float (mixed precision under an accuracy budget), named as the target's
    :meth:`Target.compare_layers` names them (``LayerDivergence.node``)."""
    options: tuple[tuple[str, str], ...] = ()
    """Target-specific options (``--target-option KEY=VALUE`` and named flags such as ``--palettize``)."""

    def option(self, key: str, default: str | None = None) -> str | None:
        """The value of one target option (the last one given wins)."""
        found = [v for k, v in self.options if k == key]
        return found[-1] if found else default

    def option_values(self, key: str) -> list[str]:
        """Every value given for a repeatable option, in order."""
        return [v for k, v in self.options if k == key]


@dataclass(frozen=True)
class ExportResult:
    """Files a target wrote into the bundle and the interface a device must use."""

    model_file: str
    files: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    details: dict[str, Any] = field(default_factory=dict)


class Target:
    """Base class; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    extra: ClassVar[str]
    routes: ClassVar[tuple[str, ...]]
    """Artifact formats accepted, in order of preference."""
    precisions: ClassVar[tuple[str, ...]]
    modules: ClassVar[tuple[str, ...]] = ()
    """Python modules the target needs to build bundles."""
    runtime_modules: ClassVar[tuple[str, ...] | None] = None
    """Python modules needed to run its bundles (``edgec verify``, ``edgec serve``); None: :attr:`modules`."""
    packages: ClassVar[tuple[str, ...]] = ()
    """Distribution names whose versions go into the manifest's toolchain."""
    option_help: ClassVar[dict[str, str]] = {}
    """Target options this target reads (``--target-option KEY=VALUE``), with a one-line description."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            TARGETS.add(cls.name, cls)

    def check_options(self, options: tuple[tuple[str, str], ...]) -> None:
        """Reject options this target does not read.

        Raises:
            ConfigError: naming the unknown key and the keys the target accepts.
        """
        for key, _ in options:
            if key not in self.option_help:
                accepted = ", ".join(sorted(self.option_help)) or "none"
                raise ConfigError(f"the {self.name} target has no option {key!r}; it accepts: {accepted}")

    def check_available(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra when a needed module is missing."""
        for module in self.modules:
            require(module, self.extra, f"the {self.name} target")

    def check_runtime(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra when the runtime for its bundles is missing
        (a server or a device needs the runtime, not the converters)."""
        for module in self.modules if self.runtime_modules is None else self.runtime_modules:
            require(module, self.extra, f"running {self.name} bundles")

    def toolchain(self) -> dict[str, str]:
        """Installed versions of the target's packages."""
        return package_versions(self.packages)

    def bundle_suffix(self, request: PrecisionRequest) -> str:
        """Extra text for the bundle name when options change the model beyond its precision (``-p4``)."""
        return ""

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        """Passes that bring a float model to the requested precision."""
        raise NotImplementedError

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        """Write the deployable model files into ``bundle_dir``.

        Targets whose converter applies the precision itself (TFLite, Core ML) read ``request``
        (precision, calibration) here; ``work_dir`` is scratch space that is removed afterwards.

        Raises:
            ExportError: conversion failed; set its ``log`` to the converter's output so the
                pipeline can save it beside the failed build.
        """
        raise NotImplementedError

    def bundle_feeds(self, feeds: list[Feed], result: ExportResult) -> list[Feed]:
        """Source-layout feeds -> what the bundle's runner takes (e.g. NCHW -> NHWC). Identity by default."""
        return feeds

    def bundle_outputs(self, outputs: list[Feed], result: ExportResult) -> list[Feed]:
        """Source-layout reference outputs -> the bundle's output layout. Identity by default."""
        return outputs

    def measures_parity(self) -> bool:
        """False where this host cannot execute the bundle (Core ML on Linux): parity is then not measured."""
        return True

    def runner(self, bundle_dir: Path, model_file: str, threads: int | None = None) -> Runner:
        """A runtime shim runner for the bundle's model."""
        raise NotImplementedError

    # ---- fidelity: per-layer comparison and mixed precision (``edgec debug``, ``--report-layers``, ``--max-drop``)

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
        """Per-layer divergence of a reduced-precision model file of this target from its FP32 model file.

        Both files are what :meth:`export` writes (``model_file`` of an fp32 and of a reduced-precision
        bundle); ``feeds`` are in the bundle's layout (:meth:`bundle_feeds`). Each node's ``node`` name is
        what :attr:`PrecisionRequest.exclude` takes to keep it in float in the next :meth:`export`.

        Returns:
            Divergences, largest growth first (see :func:`edgec.compiler.fidelity.rank`).

        Raises:
            UnsupportedError: the target has no way to read intermediate tensors.
        """
        raise UnsupportedError(f"per-layer comparison is not available for the {self.name} target")

    def float_group(self, reference: Path, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        """Layers to keep in float together with ``layer`` so that it really runs in float (default: itself)."""
        return [layer]

    def float_nodes(self, reference: Path, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        """The :attr:`PrecisionRequest.exclude` names that keep ``layers`` in float (default: their ranked nodes)."""
        return tuple(d.node for d in ranked if d.layer in layers)


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{name: version}`` for installed distributions; missing ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
