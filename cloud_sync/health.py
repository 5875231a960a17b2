"""Bundle checks that run on a device: file names and hashes (the one check that ``edgec verify`` and the
shim use too, :mod:`edgec.runtime_shims.bundle_files`), golden parity through the bundle's runner, and
latency against a budget. numpy, the runtime shims and the standard library only: it reads
``manifest.json`` and ``golden.npz`` directly and never imports the compiler.

Parity uses the same measures and tolerance as ``edgec verify`` (``manifest["parity"]["tolerance"]``,
per output ``max_abs`` and ``min_cosine``), computed here again so a device needs no compiler.
"""

from __future__ import annotations

import json
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import IntegrityError, brief, is_edgec_bug
from edgec.runtime_shims import bundle_files
from edgec.runtime_shims.base import Runner, RunnerError
from edgec.runtime_shims.measure import check_tolerance, compare_samples, parts_in, read_golden
from edgec.runtime_shims.runners import open_runner


class HealthError(Exception):
    """The bundle is intact but does not work here (parity, latency or the runtime failed)."""


@dataclass(frozen=True)
class Health:
    """What the health check measured."""

    latency_ms: float
    parity: dict[str, dict[str, float]] = field(default_factory=dict)


def sha256_path(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    return bundle_files.sha256_of(str(path))


def load_manifest(bundle: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict.

    Raises:
        IntegrityError: missing, a symlink, or not JSON.
    """
    path = bundle / "manifest.json"
    if path.is_symlink():
        raise IntegrityError(f"{bundle.name}: manifest.json is a symlink; bundles hold plain files")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{bundle}: unreadable manifest.json ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise IntegrityError(f"{bundle}: manifest.json has no file list")
    return manifest


def verify_files(bundle: Path) -> dict[str, Any]:
    """The names a runner opens are plain, listed files inside the bundle, and every listed file is there
    with its recorded size and sha256 (see :mod:`edgec.runtime_shims.bundle_files`).

    Raises:
        IntegrityError: naming the manifest field or the first file that does not match.
    """
    manifest = load_manifest(bundle)
    try:
        bundle_files.check_bundle(str(bundle), manifest)
    except bundle_files.BundleFileError as exc:
        raise IntegrityError(f"{bundle.name}: {exc}") from None
    return manifest


def make_runner(bundle: Path, manifest: dict[str, Any], threads: int | None = None, trust_engine: bool = False) -> Runner:
    """The bundle's runner, from the runtime shim module that declares its target (as on any device).

    ``trust_engine``: the bundle's origin was verified, so a prebuilt native engine it carries may be loaded
    (see :func:`edgec.runtime_shims.runners.open_model`).

    Raises:
        HealthError: this device has no runner for the bundle's target.
    """
    try:
        return open_runner(str(bundle), manifest, threads, trust_engine=trust_engine)
    except RunnerError as exc:
        raise HealthError(f"this device has no runner for {str(manifest.get('target'))!r} bundles ({exc})") from None


def check_health(bundle: Path, latency_budget_ms: float | None = None, threads: int | None = None,
                 trust_engine: bool = False) -> Health:
    """Run the golden inputs through the bundle's runner; check parity and median latency.

    ``trust_engine``: the bundle came from a release whose signed metadata was verified (the agent's case),
    so its prebuilt engine (TensorRT's ``model.plan``) may be loaded; False builds engines from the ONNX.

    Raises:
        IntegrityError: files do not match the manifest, a name it gives is not a listed file inside the
            bundle, or the golden data cannot be read.
        HealthError: parity outside tolerance, latency over budget, or the runtime failed.
    """
    manifest = verify_files(bundle)
    golden_in, golden_out = _golden(bundle, manifest)
    tolerance = manifest.get("parity", {}).get("tolerance", {})
    try:
        with make_runner(bundle, manifest, threads, trust_engine) as runner:
            runner.infer(golden_in[0])  # warm-up, not timed
            actual, times = [], []
            for feed in golden_in:
                start = time.perf_counter()
                actual.append(runner.infer(feed))
                times.append((time.perf_counter() - start) * 1000)
    except HealthError:
        raise
    except Exception as exc:  # any failure means the bundle does not run here: the agent rolls back rather than crash
        if is_edgec_bug(exc):  # with a trial slot live; a bug in edgec's runner code still shows its traceback
            traceback.print_exc()
        raise HealthError(f"the runtime failed: {type(exc).__name__}: {brief(exc, 200)}") from None
    measured = {name: compare_samples([o[name] for o in golden_out], [a[name] for a in actual], parts_in(tolerance.get(name)))
                for name in golden_out[0]}  # samples may differ in shape (dynamic dims checked at two sizes)
    latency = float(np.median(times))
    failures = check_tolerance(measured, tolerance)
    if failures:
        raise HealthError("golden parity failed: " + "; ".join(failures))
    if latency_budget_ms is not None and latency > latency_budget_ms:
        raise HealthError(f"median latency {latency:.3f} ms is over the budget of {latency_budget_ms:g} ms")
    return Health(latency, measured)


def _golden(bundle: Path, manifest: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The checked golden file's samples (inputs, outputs).

    Raises:
        IntegrityError: the file is not readable golden data.
    """
    name = bundle_files.field_name(manifest, "golden")  # checked by verify_files
    try:
        golden_in, golden_out = read_golden(bundle / name)
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise IntegrityError(f"{bundle.name}: {name} cannot be read as golden data: {brief(exc, 200)}") from None
    if not golden_in or not golden_out:
        raise IntegrityError(f"{bundle.name}: {name} cannot be read as golden data: it holds no samples")
    return golden_in, golden_out
