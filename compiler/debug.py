"""``edgec debug``: rank a quantized bundle's layers by the error they add, against an FP32 reference."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgec.compiler.bundle import load_manifest, read_golden
from edgec.compiler.errors import ConfigError, UnsupportedError
from edgec.compiler.fidelity import LayerDivergence, layer_divergence

REPORT = "layers.json"


def reference_model(bundle: Path, reference: Path | None, name: str, target: str) -> Path:
    """The FP32 ONNX to compare with: ``reference`` (a bundle or .onnx) or the sibling fp32 bundle.

    Raises:
        ConfigError: no reference can be found.
    """
    candidate = reference if reference is not None else bundle.parent / f"{name}-{target}-fp32"
    if candidate.is_dir():
        manifest = load_manifest(candidate)
        candidate = candidate / manifest.model_file
    if not candidate.is_file() or candidate.suffix != ".onnx":
        raise ConfigError(f"no FP32 reference found at {candidate}; pass --reference FP32_BUNDLE_OR_ONNX")
    return candidate


def debug_bundle(bundle: Path, reference: Path | None = None) -> tuple[list[LayerDivergence], Path]:
    """Compute the ranking on the bundle's golden inputs and write it to ``bundle/layers.json`` atomically.

    Raises:
        ConfigError: not a bundle, or no reference.
        UnsupportedError: the bundle's model is not ONNX.
    """
    if not bundle.is_dir():
        raise ConfigError(f"bundle not found: {bundle}")
    manifest = load_manifest(bundle)
    model = bundle / manifest.model_file
    if model.suffix != ".onnx":
        raise UnsupportedError(f"edgec debug compares ONNX models; {bundle.name} holds {model.name} ({manifest.target})")
    ref = reference_model(bundle, reference, manifest.name, manifest.target)
    inputs, _ = read_golden(bundle / manifest.golden)
    layers = layer_divergence(ref, model, inputs)
    text = json.dumps({"reference": str(ref), "samples": len(inputs), "layers": [d.to_json() for d in layers]}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=bundle, prefix=".layers-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, bundle / REPORT)
    return layers, bundle / REPORT
