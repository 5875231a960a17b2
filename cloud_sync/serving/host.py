"""The served model: a verified bundle and its runner, swappable while requests are in flight.

A :class:`LoadedBundle` is immutable; a swap replaces the host's reference to it, so a batch that
started on the old bundle finishes on it while new batches use the new one. A bundle served from a
store knows its :class:`Release`, so logs, ``/readyz``, response headers and metrics name the bundle
and release rather than the agent's slot (``a``/``b``) it was unpacked into.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.bundle import BundleManifest
from edgec.core.errors import EdgecError
from edgec.core.types import Feed, TensorSpec


@dataclass(frozen=True)
class Release:
    """The release a followed bundle came from, as the device agent committed it."""

    bundle: str
    """The bundle's name as published (its folder name when built), e.g. ``digits-onnx-int8``."""
    sha256: str | None
    """The release archive's sha256 (``edgec release list`` shows its first 12 characters)."""
    number: int | None
    """Its place in the channel, 1 for the first published (None: not known after a state repair)."""
    channel: str

    def describe(self) -> str:
        """``digits-onnx-int8 (release 3 of stable, sha 1a2b3c4d5e6f)``."""
        from edgec.cloud_sync.agent import describe_release

        return describe_release(self.bundle, self.sha256, self.number, self.channel)

    def to_json(self) -> dict[str, Any]:
        """The ``release`` object of ``/readyz``."""
        return {"bundle": self.bundle, "sha256": self.sha256, "number": self.number, "channel": self.channel}


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle that passed its health check, with an active runner."""

    path: Path
    manifest: BundleManifest
    runner: Any
    inputs: tuple[TensorSpec, ...]
    sha256: str
    release: Release | None = None
    """Where it came from when following a store (None: served from a bundle folder)."""

    @property
    def bundle_id(self) -> str:
        """The bundle's name, e.g. ``digits-onnx-int8``: the release's, else the folder's."""
        return self.release.bundle if self.release is not None else self.path.name

    @property
    def release_id(self) -> str:
        """The release's sha256 prefix (as ``edgec release list`` shows it); empty when not following."""
        return (self.release.sha256 or "")[:12] if self.release is not None else ""

    def describe(self) -> str:
        """The bundle's name, with the release when following a store (for logs)."""
        return self.release.describe() if self.release is not None else self.bundle_id

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


def load_bundle(path: Path, threads: int | None = None, release: Release | None = None) -> LoadedBundle:
    """Verify a bundle (hashes and golden parity) and activate its runner; ``release``: where it came from.

    Raises:
        EdgecError: the bundle fails verification or cannot run here.
    """
    from edgec.compiler.verify import verify_bundle
    from edgec.runtime_shims.runners import open_runner
    from edgec.targets.base import TARGETS

    report = verify_bundle(path, threads=threads)
    if not report.measured:
        raise EdgecError(f"{path.name} cannot run on this host ({report.manifest.target}); nothing to serve")
    manifest = report.manifest
    options = TARGETS.get(manifest.target).runner_options  # as verify ran it
    runner = open_runner(str(path), manifest.model_dump(mode="json"), threads, **options)
    runner.activate()
    sha = next((f.sha256 for f in manifest.files if f.path == manifest.model_file), "")
    return LoadedBundle(path, manifest, runner, manifest.input_specs(), sha, release)


class ModelHost:
    """Holds the current :class:`LoadedBundle`; :meth:`swap` replaces it only with a healthy bundle."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self._current = bundle
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedBundle:
        return self._current

    def swap(self, path: Path, threads: int | None = None, release: Release | None = None) -> LoadedBundle:
        """Load, verify and switch to ``path`` (from ``release``); the old bundle keeps serving if that fails.

        Raises:
            EdgecError: the new bundle failed its health check (nothing changed).
        """
        new = load_bundle(path, threads, release)
        with self._lock:
            self._current = new
        return new
