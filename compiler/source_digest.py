"""A digest of edgec's own code, part of every stage cache key.

The stage cache keys imports, passes, reference runs and exports by their inputs, options and the toolchain's
versions. edgec's version alone does not change when a pass or a target is edited in a checkout, so a
developer's rebuild would reuse what the old code produced. The build's toolchain therefore carries
``edgec_code``: a sha256 over the source files of the packages a build runs (their relative paths and
contents), computed once per process (about 180 files, a few milliseconds). Editing any of them makes every
key new; the manifest's ``toolchain`` records it, so a bundle also names the exact code that built it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

BUILD_PACKAGES = ("core", "frameworks", "compiler", "targets", "calibration", "runtime_shims")
"""The edgec packages whose code decides what a build writes (benchmarks and cloud_sync do not)."""


def digest_of(roots: Iterable[tuple[str, Path]]) -> str:
    """16 hex digits of sha256 over every ``*.py`` under each ``(label, folder)``: label, relative path and
    content of each file, in sorted order (so it does not depend on the file system's listing order)."""
    total = hashlib.sha256()
    for label, root in roots:
        for path in sorted(root.rglob("*.py")):
            total.update(f"{label}/{path.relative_to(root).as_posix()}\0".encode())
            total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()[:16]


def package_roots() -> list[tuple[str, Path]]:
    """``(package, folder)`` for each of :data:`BUILD_PACKAGES` as installed (a checkout's folders in an
    editable install, site-packages in a wheel install)."""
    roots = []
    for name in BUILD_PACKAGES:
        spec = importlib.util.find_spec(f"edgec.{name}")
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.append((name, Path(location)))
    return roots


@functools.cache
def source_digest() -> str:
    """The digest of the running edgec's build code (see the module docstring)."""
    return digest_of(package_roots())
