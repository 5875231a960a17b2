"""``edgec verify``: file hashes first, then the golden inputs through the bundle's runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.compiler import parity
from edgec.compiler.bundle import BundleManifest, check_files, load_manifest, read_golden
from edgec.compiler.errors import AccuracyGateError, ConfigError, IntegrityError
from edgec.targets.base import TARGETS


@dataclass(frozen=True)
class VerifyReport:
    """What was checked and measured."""

    manifest: BundleManifest
    measured: dict[str, dict[str, Any]]
    files_checked: int


def verify_bundle(bundle: Path, threads: int | None = None) -> VerifyReport:
    """Check a bundle's files and its parity against the golden outputs.

    Raises:
        ConfigError: the path is not a directory.
        IntegrityError: a file is missing, changed, or the manifest is malformed.
        AccuracyGateError: an output is outside the manifest's tolerance.
    """
    if not bundle.is_dir():
        raise ConfigError(f"bundle not found: {bundle} (expected a bundle directory holding manifest.json)")
    manifest = load_manifest(bundle)
    check_files(bundle, manifest)
    try:
        target = TARGETS.get(manifest.target)()
    except KeyError:
        raise IntegrityError(f"{bundle} is for target {manifest.target!r}, which this edgec does not know") from None
    if not manifest.parity.get("measured", True) and not target.measures_parity():
        return VerifyReport(manifest, {}, len(manifest.files))
    target.check_runtime()
    golden_in, golden_out = read_golden(bundle / manifest.golden)
    with target.runner(bundle, manifest.model_file, threads=threads) as runner:
        actual = [runner.infer(feed) for feed in golden_in]
    measured = parity.compare(golden_out, actual, list(golden_out[0]))
    tolerance = manifest.parity.get("tolerance") or parity.default_tolerance(golden_out, manifest.precision)
    failures = parity.check(measured, tolerance)
    if failures:
        raise AccuracyGateError(f"{bundle.name}: parity check failed: {'; '.join(failures)}")
    return VerifyReport(manifest, measured, len(manifest.files))
