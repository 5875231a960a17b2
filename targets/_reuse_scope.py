"""The scope a target's :meth:`~edgec.targets.base.Target.reuse` opens (:mod:`._openvino_reuse`,
:mod:`._calibration_reuse`): one shared object per context, dropped when the outermost scope ends."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar


class Clearable(Protocol):
    def clear(self) -> None:
        """Drop everything kept."""


S = TypeVar("S", bound=Clearable)


@contextlib.contextmanager
def entered(var: contextvars.ContextVar[S | None], make: Callable[[], S]) -> Iterator[S]:
    """A new ``make()`` set in ``var`` while inside and cleared when it ends; inside another scope of ``var``,
    that scope (a build's search and its final precision passes share one)."""
    outer = var.get()
    if outer is not None:
        yield outer
        return
    scope = make()
    token = var.set(scope)
    try:
        yield scope
    finally:
        var.reset(token)
        scope.clear()
