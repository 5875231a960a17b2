"""User-facing errors with one fixed exit code per family, and the internal error that marks a bug.

An :class:`EdgecError` is something the user can fix: the CLI prints its one-line message (and hint) on
stderr and exits with the family's code, without a traceback. An :class:`InternalError` (or anything else
that escapes) is a bug in edgec: the CLI prints it with its traceback and exits with :data:`EXIT_INTERNAL`.

Exit codes: 0 ok, 1 internal error (a bug: traceback, please report it), 2 configuration, 3 missing
dependency, 4 unsupported, 5 export/conversion, 6 calibration, 7 accuracy gate, 8 integrity, 9 sync (an
object store or the network did not answer or refused the request).

Where a toolchain (onnx, onnxruntime, torch, TensorFlow, onnx2tf, OpenVINO, Core ML, TensorRT) fails on a
user's model, the failure becomes a user-facing family; where edgec's own code fails, it stays a bug.
:func:`is_edgec_bug` tells them apart and :func:`raise_if_bug` is what a broad ``except`` calls first.
"""

from __future__ import annotations

import sys
from types import TracebackType

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_UNSUPPORTED = 4
EXIT_EXPORT = 5
EXIT_CALIBRATION = 6
EXIT_ACCURACY = 7
EXIT_INTEGRITY = 8
EXIT_SYNC = 9


class EdgecError(Exception):
    """A problem the user can fix; printed as one line, never with a traceback.

    Args:
        message: what was wrong and what was expected, in one sentence.
        hint: optional next step for the user.
    """

    exit_code: int = EXIT_CONFIG
    family: str = "error"

    def __init__(self, message: str, hint: str | None = None, log: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log
        """Long diagnostic output (a converter's log); the pipeline saves it beside a failed build."""

    def one_line(self) -> str:
        """The message and hint folded into one line for stderr."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return f"edgec: {self.family}: {text}"


class ConfigError(EdgecError):
    """Bad command-line arguments, paths or options."""

    exit_code = EXIT_CONFIG
    family = "config error"


class MissingDependencyError(EdgecError):
    """An optional package that the requested work needs is not installed."""

    exit_code = EXIT_MISSING_DEPENDENCY
    family = "missing dependency"

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            hint=f"pip install 'edgec[{extra}]'",
        )
        self.package = package
        self.extra = extra


class UnsupportedError(EdgecError):
    """A combination edgec cannot handle (format, target, precision, op)."""

    exit_code = EXIT_UNSUPPORTED
    family = "unsupported"


class ExportError(EdgecError):
    """Importing, converting or exporting a model failed."""

    exit_code = EXIT_EXPORT
    family = "export error"


class CalibrationError(EdgecError):
    """Calibration data is missing, malformed or does not match the model."""

    exit_code = EXIT_CALIBRATION
    family = "calibration error"


class AccuracyGateError(EdgecError):
    """A parity or accuracy check failed its tolerance."""

    exit_code = EXIT_ACCURACY
    family = "accuracy gate"


class IntegrityError(EdgecError):
    """A file hash, size or manifest does not match what was recorded."""

    exit_code = EXIT_INTEGRITY
    family = "integrity error"


class SyncError(EdgecError):
    """An object store or the network did not answer, or refused the request (not a bad file: see IntegrityError)."""

    exit_code = EXIT_SYNC
    family = "sync error"


class InternalError(Exception):
    """A bug in edgec (a broken invariant or post-condition, or an unexpected exception in its own code).

    Never caught to become a one-line message: the CLI prints it with its traceback, asks for a report and
    exits with :data:`EXIT_INTERNAL`. The message says where it happened (e.g. the pass and the passes
    that ran before it); the original exception is its ``__cause__``.
    """


ERROR_FAMILIES: tuple[type[EdgecError], ...] = (
    ConfigError,
    MissingDependencyError,
    UnsupportedError,
    ExportError,
    CalibrationError,
    AccuracyGateError,
    IntegrityError,
    SyncError,
)

TOOLCHAIN_PACKAGES = frozenset({
    "onnx", "onnxruntime", "onnxslim", "onnxscript", "onnx_ir", "onnx2tf", "onnx_graphsurgeon", "sng4onnx",
    "torch", "torchvision", "torchao", "torch_pruning", "sympy", "executorch",
    "tensorflow", "tf_keras", "keras", "tflite_runtime", "ai_edge_litert", "ml_dtypes", "google",
    "openvino", "nncf", "coremltools", "tensorrt", "polygraphy", "obstore", "tuf", "securesystemslib",
})
"""Top-level packages whose failures on a user's model or store are not edgec's bugs (``google``: protobuf)."""

NEUTRAL_PACKAGES = frozenset(sys.stdlib_module_names) | {"numpy", ""}
"""Packages that only say who called them: their frames are skipped when looking for who failed
(``""``: code without a module, such as the ``forward`` that torch.fx generates)."""

USER_CODE_PREFIX = "_edgec_user_"
"""Module names under which the torch importer loads a user's model file: its failures are not edgec's."""

_SHIM_ERRORS = {"edgec.runtime_shims.base"}
"""Modules whose exception classes report a runtime's failure (the shims' ``RunnerError``)."""


def is_edgec_bug(exc: BaseException) -> bool:
    """Whether ``exc`` is a bug in edgec's own code rather than a toolchain failing on the user's input.

    Rules, first match wins:

    1. :class:`EdgecError`: not a bug (a user-facing failure); :class:`InternalError`: a bug.
    2. ``OSError`` and ``MemoryError``: not a bug (the disk, memory or a permission ran out).
    3. An exception class a toolchain defines (``onnx.checker.ValidationError``, onnxruntime's ``Fail``,
       ``InvalidGraph``, ``InvalidArgument``, ``NotImplemented``, ``RuntimeException``; torch's
       ``Unsupported`` and ``UserError``; ``tf.errors.*``; obstore's and python-tuf's errors; the shims'
       ``RunnerError``): not a bug.
    4. Otherwise the innermost traceback frame outside the standard library and numpy decides: a frame
       of a toolchain package (its own ``ValueError``, ``KeyError``, ``AssertionError`` ... on a model it
       cannot handle, and the ``RuntimeError`` that OpenVINO's wrappers raise) or of the user's model file
       is not a bug; any other frame (edgec's own code, a callback it gave a toolchain) is a bug, and so
       is no frame at all.
    """
    if isinstance(exc, (EdgecError, InternalError)):
        return isinstance(exc, InternalError)
    if isinstance(exc, (OSError, MemoryError)):
        return False
    module = type(exc).__module__
    if module.split(".")[0] in TOOLCHAIN_PACKAGES or module in _SHIM_ERRORS:
        return False
    for name in reversed(_frame_modules(exc.__traceback__)):
        top = name.split(".")[0]
        if top in TOOLCHAIN_PACKAGES or top.startswith(USER_CODE_PREFIX):
            return False
        if top not in NEUTRAL_PACKAGES:
            return True
    return True


def _frame_modules(tb: TracebackType | None) -> list[str]:
    """Module names of a traceback's frames, outermost first."""
    names = []
    while tb is not None:
        names.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return names


def raise_if_bug(exc: BaseException, where: str) -> None:
    """Raise :class:`InternalError` from ``exc`` when it is a bug in edgec (:func:`is_edgec_bug`); else return.

    Called first in a broad ``except`` that turns a toolchain's failure into a user-facing family, so that
    the catch cannot also swallow edgec's own bugs.

    Args:
        exc: the caught exception.
        where: what edgec was doing, for the message (e.g. ``"running the onnx bundle"``).

    Raises:
        InternalError: ``exc`` is a bug.
    """
    if isinstance(exc, InternalError):
        raise exc
    if is_edgec_bug(exc):
        raise InternalError(f"{where}: {type(exc).__name__}: {brief(exc)}") from exc


def brief(exc: BaseException | str, limit: int | None = 300) -> str:
    """An exception's text (or any text) on one line, whitespace folded, cut to ``limit`` characters with "...".

    Args:
        exc: the exception or text.
        limit: the most characters kept before the "..."; None keeps all.
    """
    text = " ".join(str(exc).split())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def require(module: str, extra: str, purpose: str):  # noqa: ANN201 - returns a module
    """Import an optional module or raise :class:`MissingDependencyError`.

    Args:
        module: dotted module name, e.g. ``"onnxruntime"``.
        extra: the edgec extra that installs it.
        purpose: what needs it, for the message.

    Raises:
        MissingDependencyError: when the import fails.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
