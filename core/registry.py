"""Name -> class registries for importers, passes and targets, filled by discovering modules by file name.

Adding a target or a pass is one new file: its class registers itself when defined (through
``__init_subclass__`` on the base class), and :func:`discover` imports every module of the package so
that the definitions run. Modules must keep heavy imports inside functions, so discovery stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes, discovered lazily from one package.

    Args:
        kind: what is registered, for error messages ("target", "pass", ...).
        package: dotted package whose modules define the classes.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, type[T]] = {}
        self._discovered = False

    def add(self, name: str, cls: type[T]) -> None:
        """Register ``cls`` under ``name``; a second class with the same name is a bug."""
        existing = self._items.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise RuntimeError(f"two {self.kind}s named {name!r}: {existing} and {cls}")
        self._items[name] = cls

    def discover(self) -> None:
        """Import every module of the package once (modules whose name starts with ``_`` are skipped)."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        """Sorted registered names."""
        self.discover()
        return sorted(self._items)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``.

        Raises:
            KeyError: when nothing is registered under that name.
        """
        self.discover()
        return self._items[name]

    def all(self) -> list[type[T]]:
        """All registered classes, sorted by name."""
        self.discover()
        return [self._items[n] for n in sorted(self._items)]
