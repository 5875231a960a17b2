"""``edgec debug``: rank a reduced-precision bundle's layers by the error they add, against its FP32 reference."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgec.compiler.pipeline import check_layer_support, get_target
from edgec.core.bundle import bundle_path, load_manifest, read_checked_golden
from edgec.core.errors import ConfigError
from edgec.frameworks.fidelity import LayerDivergence

REPORT_SUFFIX = ".layers.json"
"""The report is ``<bundle name>.layers.json`` in the working directory (or ``--out``). Never inside the
bundle: a bundle is immutable (every file in it is listed and hashed in its manifest). Nor in the folder
holding the bundles, where ``edgec bench bundles/*`` would take it for one."""


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


def report_path(bundle: Path, out: Path | None) -> Path:
    """Where the report goes: ``out``, or ``<bundle name>.layers.json`` in the working directory.

    Raises:
        ConfigError: the path is inside the bundle, or is a directory.
    """
    bundle = bundle.resolve()
    path = (out if out is not None else Path(f"{bundle.name}{REPORT_SUFFIX}")).absolute()
    if path.resolve().is_relative_to(bundle):
        where = f"--out {out}" if out is not None else f"the working directory {path.parent}"
        raise ConfigError(f"{where} is inside the bundle {bundle}; bundles are immutable, pass --out PATH outside it")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; pass --out FILE, e.g. --out {path / (bundle.name + REPORT_SUFFIX)}")
    return path


def write_report(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename).

    Raises:
        ConfigError: the folder cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    except OSError as exc:
        raise ConfigError(f"cannot write the layer report to {path} ({exc.strerror}); pass --out PATH") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def debug_bundle(bundle: Path, reference: Path | None = None, out: Path | None = None) -> tuple[list[LayerDivergence], Path]:
    """Compute the ranking on the bundle's golden inputs and write it atomically to ``out`` (default:
    ``<bundle name>.layers.json`` in the working directory). The bundle itself is not touched.

    Raises:
        ConfigError: not a bundle, no reference, or ``out`` inside the bundle or not writable.
        IntegrityError: ``model_file`` or ``golden`` is not a plain relative path to listed files inside the
            bundle (or is reached through a symlink), or the golden data cannot be read.
        UnsupportedError: the bundle's target has no per-layer comparison.
    """
    if not bundle.is_dir():
        raise ConfigError(f"bundle not found: {bundle}")
    manifest = load_manifest(bundle)
    path = report_path(bundle, out)
    target = get_target(manifest.target)
    tools = check_layer_support(target, "edgec debug")
    target.check_available()
    model = bundle_path(bundle, manifest, "model_file")
    ref = reference_model(bundle, reference, manifest.name, manifest.target)
    if ref.suffix != model.suffix:
        raise ConfigError(f"--reference {ref} is not a {model.suffix} model like {model.name}")
    inputs, _ = read_checked_golden(bundle, manifest)
    layers = tools.compare_layers(ref, model, inputs)
    text = json.dumps({"bundle": str(bundle.resolve()), "reference": str(ref), "samples": len(inputs),
                       "layers": [d.to_json() for d in layers]}, indent=1, sort_keys=True)
    write_report(path, text)
    return layers, path
