"""The target contract: the formats it takes, the precisions it offers, how it exports and runs a bundle."""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import ConfigError, MissingDependencyError, UnsupportedError
from edgec.core.installed import Readiness, readiness, require_installed
from edgec.core.registry import Registry
from edgec.core.types import Feed, ModelArtifact, TensorSpec, batch_dims, sha256_file
from edgec.runtime_shims.base import Runner
from edgec.runtime_shims.runners import open_model
from edgec.targets.options import NamedFlag, TargetOptions, merge_flags

if TYPE_CHECKING:
    from edgec.frameworks.fidelity import LayerDivergence

TARGETS: Registry[Target] = Registry("target", "edgec.targets")

PassStep = tuple[str, dict[str, Any]]
OptionsT = TypeVar("OptionsT", bound=TargetOptions)


@dataclass(frozen=True)
class PrecisionRequest:
    """What the user asked for that shapes the precision passes.

    Args:
        precision: fp32, fp16 or int8.
        int8_mode: ``auto``, ``static`` or ``dynamic``.
        calibration: the calibration set, if given.
        exclude: nodes to keep in float.
        options: the target's typed options (its :attr:`Target.Options`); None: the defaults.
        data_shapes: ``(input name, shape)`` of the build's first golden sample: the sizes a target that
            keeps dynamic dims may fix them to when it cannot convert the model with them dynamic.
    """

    precision: str
    int8_mode: str = "auto"
    calibration: CalibrationSet | None = None
    exclude: tuple[str, ...] = ()
    """Nodes to keep in float (mixed precision under an accuracy budget), named as the target's
    :meth:`LayerTools.compare_layers` names them (``LayerDivergence.node``)."""
    options: TargetOptions | None = None
    data_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def options_as(self, cls: type[OptionsT]) -> OptionsT:
        """The options as the target's ``Options`` model (its defaults when none were given).

        Raises:
            ConfigError: the options are another target's.
        """
        if self.options is None:
            return cls()
        if not isinstance(self.options, cls):
            raise ConfigError(f"target options are {type(self.options).__name__}, expected {cls.__name__}")
        return self.options


@dataclass(frozen=True)
class ExportResult:
    """Files a target wrote into the bundle and the interface a device must use."""

    model_file: str
    files: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    details: dict[str, Any] = field(default_factory=dict)


class Target:
    """Base class; subclasses set the class attributes and implement the methods.

    The hooks a target implements: :meth:`precision_passes` and :meth:`export`; it may override
    :meth:`validate`, :meth:`check_available`, :meth:`check_runtime`, :meth:`bundle_feeds` and
    :meth:`bundle_outputs`. Everything else is a declared attribute. Its bundles run with the runtime shim
    module named like the target, or declaring it in its ``TARGETS`` (see :mod:`edgec.runtime_shims.runners`);
    per-layer tools are the optional :class:`LayerTools` protocol.
    """

    name: ClassVar[str]
    extra: ClassVar[str]
    routes: ClassVar[tuple[str, ...]]
    """Artifact formats accepted, in order of preference."""
    precisions: ClassVar[tuple[str, ...]]
    modules: ClassVar[tuple[str, ...]] = ()
    """Python modules every build of the target needs (looked up, not imported: :mod:`edgec.core.installed`)."""
    route_modules: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Modules a route format needs on top of :attr:`modules` (tflite's ONNX route: onnx2tf and what it imports)."""
    runtime_modules: ClassVar[tuple[str, ...] | None] = None
    """Python modules needed to run its bundles (``edgec verify``, ``edgec serve``); None: :attr:`modules`."""
    packages: ClassVar[tuple[str, ...]] = ()
    """Distribution names whose versions go into the manifest's toolchain."""
    precision_notes: ClassVar[dict[str, str]] = {}
    """One line per precision on what it buys on this target, measured (``benchmarks/fp16_vs_fp32.py``):
    shown by ``edgec targets`` and in the summary of a build of that precision."""
    Options: ClassVar[type[TargetOptions]] = TargetOptions
    """The target's typed options (``--target-option KEY=VALUE`` and the named flags its fields declare)."""
    runs_on: ClassVar[tuple[str, ...] | None] = None
    """``sys.platform`` values where its runtime executes models (Core ML: ``darwin``); None: anywhere."""
    runner_options: ClassVar[dict[str, Any]] = {}
    """Keywords for its shim runner when the compiler runs a model (parity, verify, layer probes)."""
    serves: ClassVar[bool] = True
    """Whether its bundles can be served behind HTTP (``edgec serve``, ``edgec package``)."""
    sparsity_gain: ClassVar[str | None] = None
    """What it gains from weights zeroed by unstructured pruning (recorded in that pass's stats); None: nothing."""
    color: ClassVar[str | None] = None
    """Its color in benchmark plots (``#rrggbb``); None: one from the report's spare colors."""
    onnx_rewrites: ClassVar[tuple[str, ...]] = ()
    """Passes (by name, in order) that the target's converter needs on its ONNX route; the planner runs them
    after the clean-up passes, so they are cached and listed in the manifest like any pass."""
    calibration_methods: ClassVar[tuple[str, ...]] = ("minmax",)
    """Calibration methods (``--calib-method``) whose static INT8 models differ on this target; ``--max-drop``
    tries the others before keeping layers in float (:meth:`searched_methods`)."""
    dynamic_shapes: ClassVar[bool] = False
    """Whether its bundles keep the dims the source leaves dynamic and run any size of them (onnxruntime,
    OpenVINO): ``--input`` then only sizes the data. False: its ONNX route needs fixed sizes, written into the
    graph from ``--input``, and :meth:`dims_to_fix` says which dims must be given (a route its own converter
    takes, Core ML's or ExecuTorch's from PyTorch, bounds dims itself)."""
    collapse_hint: ClassVar[str] = ""
    """What to try first when its static INT8 bundle collapses (the accuracy gate's hint), e.g. an option of
    its own; empty: only the general advice."""
    export_version: ClassVar[str] = "1"
    """Part of the cache key of its exports: bump it when :meth:`export` writes other files for the same
    model, request and toolchain versions, so that no rebuild reuses an export of the old code."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            TARGETS.add(cls.name, cls)

    def validate(self, request: PrecisionRequest) -> None:
        """Check a request before anything is imported, converted or calibrated (overrides call this first).

        Raises:
            UnsupportedError: the precision is not one of :attr:`precisions`, or a combination the target
                cannot build.
            ConfigError: the options are not this target's :attr:`Options`.
        """
        if request.precision not in self.precisions:
            raise UnsupportedError(f"the {self.name} target offers {', '.join(self.precisions)}, not {request.precision}")
        request.options_as(self.Options)

    def check_available(self, route: str | None = None) -> None:
        """Raise :class:`MissingDependencyError` naming the command that installs a missing module (nothing is
        imported): one of :attr:`modules`, or with ``route`` one that route needs (:attr:`route_modules`)."""
        require_installed(self.modules, self.extra, f"the {self.name} target")
        if route is not None:
            require_installed(self.route_modules.get(route, ()), self.extra, f"the {self.name} target's {route} route")

    def check_runtime(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra when the runtime for its bundles is missing
        (a server or a device needs the runtime, not the converters); nothing is imported."""
        modules = self.modules if self.runtime_modules is None else self.runtime_modules
        require_installed(modules, self.extra, f"running {self.name} bundles")

    @classmethod
    def readiness(cls) -> Readiness:
        """What the target's builds (every route) and its runtime lack here, looked up without importing."""
        try:
            cls().check_runtime()
            runtime = True
        except MissingDependencyError:
            runtime = False
        return readiness(cls.modules, cls.route_modules, cls.routes, cls.extra, runtime)

    def toolchain(self) -> dict[str, str]:
        """Installed versions of the target's packages."""
        return package_versions(self.packages)

    def export_cache_key(self) -> dict[str, Any]:
        """What decides :meth:`export`'s files besides the model, the request and the toolchain versions
        (part of its cache key): :attr:`export_version`; a target whose export depends on the host (an
        engine built for this GPU) adds the host here."""
        return {"export_version": self.export_version}

    def reuse(self) -> AbstractContextManager[Any]:
        """A scope whose :meth:`export` calls may share work that gives the same result every time (the
        ``--max-drop`` search's candidates of one model: a converted model, calibration statistics), keyed so that
        a different model, calibration set or option never gets another's; dropped when it ends. None here."""
        return nullcontext()

    def model_digest(self, folder: Path, files: Iterable[str]) -> str:
        """A digest of the model files ``files`` of ``folder`` (what :meth:`export` wrote) that is equal for two
        exports that compute the same: ``--max-drop`` measures such a candidate once and does not count it against
        ``--max-builds``. Here sha256 over every file; a target whose files record the request or name ops afresh
        on each export (openvino) hashes what the runtime executes."""
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(f"{name}\0".encode() + sha256_file(folder / name).encode())
        return digest.hexdigest()

    def searched_methods(self, request: PrecisionRequest, artifact: ModelArtifact) -> tuple[str, ...]:
        """The calibration methods that give ``request`` different models of ``artifact``: :attr:`calibration_methods`
        for an INT8 request with calibration data that is not ``--int8-mode dynamic``, else none."""
        if request.precision != "int8" or request.calibration is None or request.int8_mode == "dynamic":
            return ()
        return self.calibration_methods if len(self.calibration_methods) > 1 else ()

    def searched_variants(self, request: PrecisionRequest, artifact: ModelArtifact) -> tuple[tuple[str, TargetOptions], ...]:
        """Whole-model alternatives to ``request``'s target options that ``--max-drop`` tries before keeping layers
        in float (after the calibration methods): ``(label, options)`` pairs, the build's own first, then the
        others in the order to try them (label like ``quantize_ops=compute``, as logs and the manifest name it).
        Offer only what the user left to the target (an option not given, see pydantic's ``model_fields_set``).
        None here."""
        return ()

    def dims_to_fix(self, inputs: tuple[TensorSpec, ...], request: PrecisionRequest | None = None) -> list[tuple[TensorSpec, int]]:
        """``(input, axis)`` of the dynamic dims its ONNX route needs a size for (``--input``): none where
        :attr:`dynamic_shapes`, else every dynamic dim but the batch (the first dim of some input)."""
        if self.dynamic_shapes:
            return []
        batch = batch_dims(inputs)
        return [(spec, axis) for spec in inputs for axis, dim in enumerate(spec.shape)
                if not isinstance(dim, int) and axis > 0 and dim not in batch]

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
        """False where this host cannot execute the bundle (see :attr:`runs_on`): parity is then not measured."""
        return self.runs_on is None or sys.platform in self.runs_on

    def runner(self, bundle_dir: Path, model_file: str, threads: int | None = None) -> Runner:
        """An inactive runner for ``model_file`` in ``bundle_dir``, from the target's runtime shim module
        (:func:`edgec.runtime_shims.runners.open_model`) with :attr:`runner_options`.

        Raises:
            RunnerError: no shim module runs this target here.
        """
        return open_model(self.name, str(bundle_dir), model_file, threads, **self.runner_options)


@runtime_checkable
class LayerTools(Protocol):
    """Per-layer comparison and mixed precision (``edgec debug``, ``--report-layers``, ``--max-drop``).

    Optional: a target that can read intermediate tensors implements :meth:`compare_layers`; subclassing
    this protocol gives it the default :meth:`float_group` and :meth:`float_nodes`. The compiler checks
    ``isinstance(target, LayerTools)``.
    """

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
        """Per-layer divergence of a reduced-precision model file of this target from its FP32 model file.

        Both files are what :meth:`export` writes (``model_file`` of an fp32 and of a reduced-precision
        bundle); ``feeds`` are in the bundle's layout (:meth:`bundle_feeds`). Each node's ``node`` name is
        what :attr:`PrecisionRequest.exclude` takes to keep it in float in the next :meth:`export`.

        Returns:
            Divergences, largest growth first (see :func:`edgec.frameworks.fidelity.rank`).
        """
        ...

    def float_group(self, reference: Path, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        """Layers to keep in float together with ``layer`` so that it really runs in float (default: itself)."""
        return [layer]

    def float_nodes(self, reference: Path, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        """The :attr:`PrecisionRequest.exclude` names that keep ``layers`` in float (default: their ranked nodes)."""
        return tuple(d.node for d in ranked if d.layer in layers)


def target_class(name: str) -> type[Target]:
    """The registered target class called ``name``.

    Raises:
        ConfigError: no target has that name.
    """
    try:
        return TARGETS.get(name)
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGETS.names())}") from None


def target_options(name: str, given: TargetOptions | Iterable[tuple[str, str]] | None) -> TargetOptions:
    """Target ``name``'s typed options from what a user (``KEY=VALUE`` pairs) or a recipe (a model) gave.

    Raises:
        ConfigError: an unknown target, another target's options model, or a bad option.
    """
    options = target_class(name).Options
    if isinstance(given, TargetOptions):
        if not isinstance(given, options):
            raise ConfigError(f"the {name} target takes {options.__name__}, not {type(given).__name__}")
        return given
    return options.from_pairs(given or (), name)


def named_flags() -> list[NamedFlag]:
    """The ``edgec build`` flags the registered targets declare on their options (``--palettize``)."""
    return merge_flags(flag for cls in TARGETS.all() for flag in cls.Options.named_flags(cls.name))


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{name: version}`` for installed distributions; missing ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
