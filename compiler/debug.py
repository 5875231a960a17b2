"""``edgec debug``: rank a reduced-precision bundle's layers by the error they add, against its FP32 reference."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgec.compiler.bundle import bundle_path, load_manifest, read_checked_golden
from edgec.compiler.errors import ConfigError
from edgec.compiler.fidelity import LayerDivergence
from edgec.compiler.pipeline import check_layer_support, get_target

REPORT = "layers.json"
REPORT_BESIDE = "layers.debug.json"
"""Where the report goes when the bundle already carries a ``layers.json`` of its build (a listed,
hashed file that ``edgec verify`` checks, so it is never rewritten)."""


def reference_model(bundle: Path, reference: Path | None, name: str, target: str) -> Path:
    """The FP32 model file to compare with: ``reference`` (an fp32 bundle of the same target or its model
    file) or the sibling fp32 bundle ``NAME-TARGET-fp32``.

    Raises:
        ConfigError: no reference can be found, or it is not an fp32 model of the same target.
        IntegrityError: the reference bundle's ``model_file`` points outside it or at unlisted files.
    """
    candidate = reference if reference is not None else bundle.parent / f"{name}-{target}-fp32"
    if candidate.is_dir():
        manifest = load_manifest(candidate)
        if manifest.target != target or manifest.precision != "fp32":
            raise ConfigError(f"--reference {candidate} is a {manifest.target} {manifest.precision} bundle; "
                              f"expected an fp32 bundle of the {target} target")
        candidate = bundle_path(candidate, manifest, "model_file")
    if not candidate.is_file():
        raise ConfigError(f"no FP32 reference found at {candidate}; pass --reference FP32_BUNDLE "
                          f"(build one with: edgec build SOURCE --target {target} --precision fp32)")
    return candidate


def debug_bundle(bundle: Path, reference: Path | None = None) -> tuple[list[LayerDivergence], Path]:
    """Compute the ranking on the bundle's golden inputs and write it to ``bundle/layers.json`` atomically
    (``layers.debug.json`` when the build already wrote a ``layers.json``).

    Raises:
        ConfigError: not a bundle, or no reference.
        IntegrityError: ``model_file`` or ``golden`` is not a plain relative path to listed files inside the
            bundle (or is reached through a symlink), or the golden data cannot be read.
        UnsupportedError: the bundle's target has no per-layer comparison.
    """
    if not bundle.is_dir():
        raise ConfigError(f"bundle not found: {bundle}")
    manifest = load_manifest(bundle)
    target = get_target(manifest.target)
    check_layer_support(target, "edgec debug")
    target.check_available()
    model = bundle_path(bundle, manifest, "model_file")
    ref = reference_model(bundle, reference, manifest.name, manifest.target)
    if ref.suffix != model.suffix:
        raise ConfigError(f"--reference {ref} is not a {model.suffix} model like {model.name}")
    inputs, _ = read_checked_golden(bundle, manifest)
    layers = target.compare_layers(ref, model, inputs)
    text = json.dumps({"reference": str(ref), "samples": len(inputs), "layers": [d.to_json() for d in layers]}, indent=1, sort_keys=True)
    path = bundle / (REPORT_BESIDE if any(f.path == REPORT for f in manifest.files) else REPORT)
    fd, tmp = tempfile.mkstemp(dir=bundle, prefix=".layers-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)
    return layers, path
