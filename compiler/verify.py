"""``edgec verify``: file hashes first, then the golden inputs through the bundle's runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler import parity
from edgec.core.bundle import (
    BundleManifest,
    Feed,
    bundle_path,
    check_files,
    load_manifest,
    read_checked_golden,
)
from edgec.core.errors import (
    AccuracyGateError,
    ConfigError,
    EdgecError,
    IntegrityError,
    InternalError,
    brief,
    raise_if_bug,
)
from edgec.runtime_shims import measure
from edgec.runtime_shims.runners import open_runner
from edgec.targets.base import TARGETS, Target


@dataclass(frozen=True)
class VerifyReport:
    """What was checked and measured."""

    manifest: BundleManifest
    measured: dict[str, dict[str, Any]]
    files_checked: int
    shapes: list[dict[str, list[int]]] = field(default_factory=list)
    """The input shapes the golden samples were run at (more than one where the bundle keeps dims dynamic)."""

    def parity_summary(self) -> str:
        """``min cosine 0.999984, top-1 4/8 (5 near-ties)``: the worst cosine, then the top-1 counts of each
        class-score output (rows whose top class matches FP32's, and how many were near-ties), then the
        golden shapes where there are several (``at 2 input shapes: x 1x3x48x320, 1x3x48x640``)."""
        worst = min(m["cosine"] for m in self.measured.values())
        top1 = [text for m in self.measured.values() if (text := measure.format_top1(m))]
        shapes = [f"at {len(self.shapes)} input shapes: {_shapes_text(self.shapes)}"] if len(self.shapes) > 1 else []
        return ", ".join([f"min cosine {worst:.6f}", *top1, *shapes])


def golden_shapes(feeds: list[Feed]) -> list[dict[str, list[int]]]:
    """The distinct input shapes of ``feeds``, in order of first appearance."""
    seen: list[dict[str, list[int]]] = []
    for feed in feeds:
        shape = {name: [int(d) for d in np.shape(value)] for name, value in feed.items()}
        if shape not in seen:
            seen.append(shape)
    return seen


def _shapes_text(shapes: list[dict[str, list[int]]]) -> str:
    """``x 1x3x48x320, 1x3x48x640``: per input whose shape varies, its shapes."""
    names = [n for n in shapes[0] if len({tuple(s[n]) for s in shapes}) > 1]
    return "; ".join(f"{n} {', '.join('x'.join(map(str, s[n])) for s in shapes)}" for n in names)


def verify_bundle(bundle: Path, threads: int | None = None) -> VerifyReport:
    """Check a bundle's files and its parity against the golden outputs.

    Raises:
        ConfigError: the path is not a directory.
        IntegrityError: a file is missing or changed, a name the manifest gives points outside the bundle
            or at an unlisted file, the manifest is malformed, or the golden or model file cannot be read.
        AccuracyGateError: an output is outside the manifest's tolerance.
    """
    if not bundle.is_dir():
        raise ConfigError(f"bundle not found: {bundle} (expected a bundle directory holding manifest.json)")
    manifest = load_manifest(bundle)
    files = check_files(bundle, manifest)
    try:
        target = TARGETS.get(manifest.target)()
    except KeyError:
        raise IntegrityError(f"{bundle} is for target {manifest.target!r}, which this edgec does not know") from None
    if not manifest.parity.get("measured", True) and not target.measures_parity():
        return VerifyReport(manifest, {}, files)
    target.check_runtime()
    golden_in, golden_out = read_checked_golden(bundle, manifest)
    actual = run_golden(target, bundle, manifest, golden_in, threads)
    tolerance = manifest.parity.get("tolerance") or parity.default_tolerance(golden_out, manifest.precision)
    parts = {name: t for name, t in tolerance.items() if isinstance(t, dict) and "part_sizes" in t}
    measured = parity.compare(golden_out, actual, list(golden_out[0]), parts)
    failures = parity.check(measured, tolerance)
    shapes = golden_shapes(golden_in)
    if failures:
        where = f" (golden inputs at {len(shapes)} shapes: {_shapes_text(shapes)})" if len(shapes) > 1 else ""
        raise AccuracyGateError(f"{bundle.name}: parity check failed: {'; '.join(failures)}{where}")
    return VerifyReport(manifest, measured, files, shapes)


def run_golden(target: Target, bundle: Path, manifest: BundleManifest, golden_in: list[Feed],
               threads: int | None = None) -> list[Feed]:
    """The golden inputs through the bundle's runner.

    Raises:
        IntegrityError: the runtime cannot load the checked model file, or fails on the golden inputs.
    """
    bundle_path(bundle, manifest, "model_file")
    try:
        with open_runner(str(bundle), manifest.model_dump(mode="json"), threads, **target.runner_options) as runner:
            return [runner.infer(feed) for feed in golden_in]
    except (EdgecError, InternalError):
        raise
    except Exception as exc:  # the runtime's own errors: the files match the manifest, yet do not run
        raise_if_bug(exc, f"running {manifest.model_file} with the {manifest.target} runner")
        raise IntegrityError(f"{manifest.model_file} cannot be loaded and run on the golden inputs by the "
                             f"{manifest.target} runtime: {brief(exc, 200)}") from None
