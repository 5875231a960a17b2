"""Progress messages on stderr: shown on a terminal (or with --verbose), silent otherwise."""

from __future__ import annotations

import sys
import time


class Reporter:
    """Prints ``[  1.2s] message`` lines to stderr when enabled.

    Args:
        enabled: None shows messages only when stderr is a terminal.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)
