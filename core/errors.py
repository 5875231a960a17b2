"""User-facing errors with one fixed exit code per family, and the internal-error marker.

An :class:`EdgecError` is something the user can fix: the CLI prints its one-line message (and hint) on
stderr and exits with the family's code, without a traceback. Anything else that escapes is a bug and
is reported with a traceback and :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_UNSUPPORTED = 4
EXIT_EXPORT = 5
EXIT_CALIBRATION = 6
EXIT_ACCURACY = 7
EXIT_INTEGRITY = 8


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


class InternalError(Exception):
    """A bug in edgec: reported with a traceback."""


ERROR_FAMILIES: tuple[type[EdgecError], ...] = (
    ConfigError,
    MissingDependencyError,
    UnsupportedError,
    ExportError,
    CalibrationError,
    AccuracyGateError,
    IntegrityError,
)


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
