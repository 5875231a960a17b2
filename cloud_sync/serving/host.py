"""The served model: a verified bundle and its runner, swappable while requests are in flight.

A :class:`LoadedBundle` is immutable; a swap replaces the host's reference to it, so a batch that
started on the old bundle finishes on it while new batches use the new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.bundle import BundleManifest
from edgec.compiler.errors import EdgecError
from edgec.compiler.types import TensorSpec

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle that passed its health check, with an active runner."""

    path: Path
    manifest: BundleManifest
    runner: Any
    inputs: tuple[TensorSpec, ...]
    sha256: str

    @property
    def bundle_id(self) -> str:
        """Directory name, e.g. ``digits-onnx-int8``."""
        return self.path.name

    @property
    def dynamic_batch(self) -> bool:
        """Whether every input's first dim is symbolic, so requests can be stacked."""
        return all(spec.shape and not isinstance(spec.shape[0], int) for spec in self.inputs)

    def run(self, feeds: list[Feed]) -> list[Feed]:
        """Run several requests as one batch (stacked on axis 0) and split the outputs back."""
        if len(feeds) == 1:
            return [self.runner.infer(feeds[0])]
        sizes = [len(next(iter(f.values()))) for f in feeds]
        stacked = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        outputs = self.runner.infer(stacked)
        bounds = np.cumsum([0, *sizes])
        return [{k: v[bounds[i]:bounds[i + 1]] for k, v in outputs.items()} for i in range(len(feeds))]


def load_bundle(path: Path, threads: int | None = None) -> LoadedBundle:
    """Verify a bundle (hashes and golden parity) and activate its runner.

    Raises:
        EdgecError: the bundle fails verification or cannot run here.
    """
    from edgec.compiler.verify import verify_bundle
    from edgec.targets.base import TARGETS

    report = verify_bundle(path, threads=threads)
    if not report.measured:
        raise EdgecError(f"{path.name} cannot run on this host ({report.manifest.target}); nothing to serve")
    manifest = report.manifest
    runner = TARGETS.get(manifest.target)().runner(path, manifest.model_file, threads=threads)
    runner.activate()
    sha = next((f.sha256 for f in manifest.files if f.path == manifest.model_file), "")
    return LoadedBundle(path, manifest, runner, manifest.input_specs(), sha)


class ModelHost:
    """Holds the current :class:`LoadedBundle`; :meth:`swap` replaces it only with a healthy bundle."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self._current = bundle
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedBundle:
        return self._current

    def swap(self, path: Path, threads: int | None = None) -> LoadedBundle:
        """Load, verify and switch to ``path``; the old bundle keeps serving if that fails.

        Raises:
            EdgecError: the new bundle failed its health check (nothing changed).
        """
        new = load_bundle(path, threads)
        with self._lock:
            self._current = new
        return new
