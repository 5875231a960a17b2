"""``edgec inspect``: interface, op counts, size and precision of a model file or a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.core.bundle import MANIFEST, bundle_path, load_manifest
from edgec.core.errors import ConfigError
from edgec.core.types import TensorSpec
from edgec.frameworks import onnx_utils
from edgec.runtime_shims import measure


def inspect_path(path: Path) -> dict[str, Any]:
    """A JSON-able description of a bundle directory or a model file.

    Raises:
        ConfigError: the path does not exist or is of an unknown kind.
        IntegrityError: a bundle whose manifest is malformed, or whose ``model_file`` is not a plain relative
            path to listed files inside it (or is reached through a symlink).
    """
    if path.is_dir() and (path / MANIFEST).is_file():
        return _inspect_bundle(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _inspect_onnx(path)
    if path.is_file() and path.suffix.lower() == ".pt2":
        return _inspect_pt2(path)
    if not path.exists():
        raise ConfigError(f"not found: {path} (expected a bundle directory, an .onnx or a .pt2 file)")
    raise ConfigError(f"cannot inspect {path}; expected a bundle directory, an .onnx or a .pt2 file")


def _inspect_onnx(path: Path) -> dict[str, Any]:
    model = onnx_utils.load_model(path)
    inputs, outputs = onnx_utils.graph_specs(model)
    return {
        "kind": "onnx",
        "path": str(path),
        "size": path.stat().st_size,
        "precision": onnx_utils.weight_precision(model),
        "parameters": onnx_utils.parameter_count(model),
        **_cost(model),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "ops": onnx_utils.op_counts(model),
    }


def _inspect_pt2(path: Path) -> dict[str, Any]:
    from edgec.compiler.importers.torch import TorchImporter

    artifact = TorchImporter()._load_pt2(path, None).artifact  # type: ignore[arg-type]
    return {
        "kind": "pt2",
        "path": str(path),
        "size": path.stat().st_size,
        "inputs": [s.to_json() for s in artifact.inputs],
        "outputs": [s.to_json() for s in artifact.outputs],
    }


def _inspect_bundle(path: Path) -> dict[str, Any]:
    manifest = load_manifest(path)
    info: dict[str, Any] = {
        "kind": "bundle",
        "path": str(path),
        "name": manifest.name,
        "target": manifest.target,
        "precision": manifest.precision,
        "size": sum(f.size for f in manifest.files),
        "files": [f.model_dump() for f in manifest.files],
        "inputs": manifest.inputs,
        "outputs": manifest.outputs,
        "parity": manifest.parity.get("outputs", {}),
        "golden_samples": manifest.parity.get("samples"),
        "passes": [p["name"] for p in manifest.passes],
    }
    model = bundle_path(path, manifest, "model_file")
    if model.suffix == ".onnx" and model.is_file():
        loaded = onnx_utils.load_model(model)
        info["ops"] = onnx_utils.op_counts(loaded)
        info.update(_cost(loaded))
    info["pruning"] = [{"pass": p["name"], "before": p["stats"]["before"], "after": p["stats"]["after"]}
                       for p in manifest.passes if p["name"].startswith("prune_")]
    return info


def _cost(model: Any) -> dict[str, Any]:
    from edgec.compiler import flops

    cost = flops.model_cost(model)
    return {"macs": cost.macs, "sparsity": cost.sparsity}


def format_text(info: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`inspect_path`'s result."""
    lines = [f"{info['kind']}: {info['path']}"]
    for key in ("name", "target", "precision", "parameters", "macs", "sparsity"):
        if key in info:
            lines.append(f"  {key}: {info[key]}")
    lines.append(f"  size: {info['size']:,} bytes")
    for role in ("inputs", "outputs"):
        lines.append(f"  {role}:")
        for spec in info[role]:
            s = TensorSpec.from_json(spec)
            lines.append(f"    {s.name}: {s.dtype}[{', '.join(str(d) for d in s.shape)}]")
    if info.get("parity"):
        lines.append("  parity vs FP32:")
        for name, m in info["parity"].items():
            top1 = measure.format_top1(m, info.get("golden_samples"))
            extra = f", {top1}" if top1 else ""
            lines.append(f"    {name}: max_abs {m['max_abs']:.3g}, cosine {m['cosine']:.6f}{extra}")
    for entry in info.get("pruning", []):
        b, a = entry["before"], entry["after"]
        lines.append(f"  pruning ({entry['pass']}): params {b['params']:,} -> {a['params']:,}, MACs {b['macs']:,} -> {a['macs']:,}, "
                     f"sparsity {b['sparsity']:.3f} -> {a['sparsity']:.3f}")
    if info.get("ops"):
        lines.append("  ops: " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()))
    return "\n".join(lines)
