"""Runner lifecycle: ``activate`` -> ``infer`` (many times) -> ``deactivate``.

Modelled on Polygraphy's runner: the public methods check state and inputs; subclasses implement the
``*_impl`` methods. Only numpy is imported here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]
"""Input (or output) name -> array: one inference's worth of data. The shims' copy of
``edgec.core.types.Feed`` (the shims ship alone to devices and import nothing from edgec)."""


def brief(exc: BaseException | str, limit: int | None = 300) -> str:
    """An exception's text on one line, whitespace folded, cut to ``limit`` characters with "...".

    The shims' copy of ``edgec.core.errors.brief`` (the shims import nothing from edgec).
    """
    text = " ".join(str(exc).split())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


class RunnerError(Exception):
    """A runner was misused (not active, wrong feed) or its runtime failed."""


class Runner:
    """Base runner. Subclasses implement :meth:`activate_impl`, :meth:`infer_impl`, :meth:`deactivate_impl`.

    Args:
        model_path: file or directory the runtime loads.
        threads: intra-op threads; None lets the runtime decide.
    """

    runtime = "base"

    def __init__(self, model_path: str, threads: int | None = None) -> None:
        self.model_path = str(model_path)
        self.threads = threads
        self.is_active = False
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.load_seconds = 0.0

    def activate(self) -> Runner:
        """Load the model; records :attr:`load_seconds`."""
        if self.is_active:
            raise RunnerError(f"{type(self).__name__} is already active")
        start = time.perf_counter()
        self.activate_impl()
        self.load_seconds = time.perf_counter() - start
        self.is_active = True
        return self

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one feed (input name -> array) and return output name -> array.

        NumPy scalars (a 0-d input read back from a stacked array) are passed on as 0-d arrays: runtimes
        refuse the scalars, and a 0-d input stays 0-d.
        """
        if not self.is_active:
            raise RunnerError(f"{type(self).__name__} must be activated before infer()")
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise RunnerError(f"feed does not match the model inputs {self.input_names}: missing {missing}, unexpected {extra}")
        return self.infer_impl({name: np.asarray(value) for name, value in feed.items()})

    def deactivate(self) -> None:
        """Release the runtime's resources."""
        if not self.is_active:
            raise RunnerError(f"{type(self).__name__} is not active")
        self.deactivate_impl()
        self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        if self.is_active:
            self.deactivate()

    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError
