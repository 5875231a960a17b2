"""Progress on stderr: on a terminal a rich spinner shows the running step and each finished step
stays as a line with its elapsed time; when stderr is not a terminal nothing is printed unless
``--verbose`` asks for plain lines."""

from __future__ import annotations

import sys
import time
from typing import Any


class Reporter:
    """Callable with one message per step.

    Args:
        enabled: None shows progress only when stderr is a terminal; True forces plain lines.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.interactive = enabled is None and sys.stderr.isatty()
        self.enabled = self.interactive if enabled is None else enabled
        self.start = time.perf_counter()
        self._status: Any = None
        self._console: Any = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = f"[{time.perf_counter() - self.start:6.1f}s]"
        if not self.interactive:
            print(f"{stamp} {message}", file=sys.stderr, flush=True)
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
            self._status = self._console.status(message)
            self._status.start()
        else:
            self._done()
            self._status.update(message)
        self._last, self._last_stamp = message, stamp

    def _done(self) -> None:
        from rich.text import Text

        self._console.print(Text.assemble((self._last_stamp, "dim"), " ", self._last), highlight=False)

    def close(self) -> None:
        """Stop the spinner (call when the command ends, successfully or not)."""
        if self._status is not None:
            self._status.stop()
            self._done()
            self._status = None
