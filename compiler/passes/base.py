"""The pass contract: a pass takes a model artifact and returns a new one, a ``modified`` flag and stats.

Modelled on onnx-ir's pass infrastructure: ``requires`` checks run before, ``ensures`` checks after,
and :func:`wrap_failure` names the pass that failed and the passes that ran before it. A toolchain that
fails on the user's model is an :class:`ExportError`; a bug in edgec (a broken ``ensures``, a ``KeyError``
in a pass's own code) is an :class:`InternalError`, printed with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import (
    CalibrationError,
    ConfigError,
    ExportError,
    InternalError,
    UnsupportedError,
    brief,
    is_edgec_bug,
)
from edgec.core.registry import Registry
from edgec.core.types import FORMAT_ONNX, ModelArtifact

PASSES: Registry[Pass] = Registry("pass", "edgec.compiler.passes")


class PassOptions(BaseModel):
    """Base for a pass's options: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class PassContext:
    """What a pass may use besides its input artifact.

    Args:
        work_dir: an empty directory for this pass's output files.
        calibration: the build's calibration set, if any.
        log: receives one-line progress messages.
    """

    work_dir: Path
    calibration: CalibrationSet | None = None
    log: Callable[[str], None] = field(default=lambda message: None)


@dataclass(frozen=True)
class PassResult:
    """Output of a pass: the new artifact, whether anything changed, and JSON-able statistics."""

    artifact: ModelArtifact
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


class Pass:
    """Base class; subclasses set ``name`` and implement :meth:`run_impl`.

    Class attributes:
        name: registry name, used on the command line and in manifests.
        accepts: input formats.
        produces: output format.
        uses_calibration: whether the calibration set changes the result (it then enters the cache key).
        requires_calibration: whether the pass refuses to run without one.
        version: bump to invalidate cached outputs after a behaviour change.
    """

    name: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]] = (FORMAT_ONNX,)
    produces: ClassVar[str] = FORMAT_ONNX
    uses_calibration: ClassVar[bool] = False
    requires_calibration: ClassVar[bool] = False
    version: ClassVar[str] = "1"
    Options: ClassVar[type[PassOptions]] = PassOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PASSES.add(cls.name, cls)

    def __init__(self, **options: Any) -> None:
        try:
            self.options = self.Options(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise ConfigError(f"bad option for pass {self.name!r}: {where}: {first['msg']}") from None

    def options_json(self) -> dict[str, Any]:
        """Options as plain JSON (for manifests and cache keys)."""
        return self.options.model_dump(mode="json")

    def requires(self, artifact: ModelArtifact, ctx: PassContext) -> None:
        """Check preconditions.

        Raises:
            UnsupportedError: the input format is not accepted.
            CalibrationError: calibration is required and missing.
        """
        if artifact.format not in self.accepts:
            raise UnsupportedError(f"pass {self.name!r} takes {', '.join(self.accepts)} models, not {artifact.format}")
        if self.requires_calibration and ctx.calibration is None:
            raise CalibrationError(f"pass {self.name!r} needs calibration data", hint="give --calib PATH")

    def ensures(self, before: ModelArtifact, result: PassResult) -> None:
        """Check postconditions: the declared output format and unchanged input names.

        Raises:
            InternalError: the pass broke its contract (a bug in the pass, not in the user's model).
        """
        after = result.artifact
        if after.format != self.produces:
            raise InternalError(f"pass {self.name!r} produced {after.format}, expected {self.produces}")
        if [s.name for s in before.inputs] != [s.name for s in after.inputs]:
            raise InternalError(f"pass {self.name!r} renamed the model inputs")

    def run(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        """Run with checks before and after."""
        self.requires(artifact, ctx)
        result = self.run_impl(artifact, ctx)
        self.ensures(artifact, result)
        return result

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        """Do the work; write outputs under ``ctx.work_dir``."""
        raise NotImplementedError


def make_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    """Instantiate a registered pass.

    Raises:
        ConfigError: unknown pass or bad options.
    """
    try:
        cls = PASSES.get(name)
    except KeyError:
        raise ConfigError(f"unknown pass {name!r}; known passes: {', '.join(PASSES.names())}") from None
    return cls(**(options or {}))


def wrap_failure(exc: Exception, failing: Pass, ran: list[str]) -> ExportError | InternalError:
    """The error for an exception that escaped a pass, naming the pass and the passes that ran before it.

    A toolchain's failure on the model (see :func:`edgec.core.errors.is_edgec_bug`: onnx's checker,
    onnxruntime's quantizers, onnxslim, torch.export and torch.onnx, torch-pruning) becomes an
    :class:`ExportError`; a bug in edgec (a broken ``ensures``, a ``KeyError`` in the pass's own code)
    becomes an :class:`InternalError`, which the CLI prints with the traceback of ``exc``.
    """
    before = f" after {', '.join(ran)}" if ran else ""
    text = f"pass {failing.name!r} failed{before}: {type(exc).__name__}: {brief(exc)}"
    return InternalError(text) if is_edgec_bug(exc) else ExportError(text)
