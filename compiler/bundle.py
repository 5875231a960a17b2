"""Bundles: a directory with the model files, ``manifest.json`` and ``golden.npz``.

The manifest lists every file with its sha256 and size, the tensor specs, provenance (source, passes,
calibration, toolchain versions), and parity against the FP32 reference. It is written with sorted
keys and no timestamps, and ``golden.npz`` is written with fixed zip dates, so rebuilding the same
inputs gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgec.compiler.errors import IntegrityError
from edgec.compiler.types import TensorSpec, sha256_file
from edgec.runtime_shims.measure import read_golden as read_golden  # one reader for host and device code

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"

Feed = dict[str, np.ndarray]


class FileEntry(BaseModel):
    """One file of the bundle."""

    model_config = ConfigDict(extra="allow")
    path: str
    sha256: str
    size: int


class BundleManifest(BaseModel):
    """The manifest; unknown fields are kept so newer manifests survive older tools."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    name: str
    target: str
    precision: str
    files: list[FileEntry]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    source: dict[str, Any]
    passes: list[dict[str, Any]]
    calibration: dict[str, Any] | None
    parity: dict[str, Any]
    toolchain: dict[str, str]
    model_file: str
    golden: str = GOLDEN
    target_details: dict[str, Any] = {}
    model_cost: dict[str, Any] | None = None
    """Params, MACs per sample and weight sparsity of the model (ONNX models)."""

    def model_bytes(self) -> int:
        """Size of the files the target wrote (the model), leaving out golden data, reports and shims."""
        return sum(f.size for f in self.files if f.path not in (self.golden, "layers.json") and not f.path.startswith("edgec_shim/"))

    def input_specs(self) -> tuple[TensorSpec, ...]:
        """Inputs as :class:`TensorSpec`."""
        return tuple(TensorSpec.from_json(i) for i in self.inputs)

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Outputs as :class:`TensorSpec`."""
        return tuple(TensorSpec.from_json(o) for o in self.outputs)

    def dumps(self) -> str:
        """Canonical JSON text (sorted keys, two-space indent, trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"


def file_entry(root: Path, relative: str) -> FileEntry:
    """Hash and size of ``root/relative``."""
    path = root / relative
    return FileEntry(path=relative, sha256=sha256_file(path), size=path.stat().st_size)


def load_manifest(bundle: Path) -> BundleManifest:
    """Read and validate ``bundle/manifest.json``.

    Raises:
        IntegrityError: missing, unreadable or malformed manifest, or a newer schema.
    """
    path = bundle / MANIFEST
    if not path.is_file():
        raise IntegrityError(f"{bundle} is not a bundle: {MANIFEST} not found")
    try:
        manifest = BundleManifest.model_validate_json(path.read_text())
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path} is not a valid edgec manifest: {' '.join(str(exc).split())[:200]}") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise IntegrityError(f"{path} has schema_version {manifest.schema_version}; this edgec reads up to {SCHEMA_VERSION}")
    return manifest


def check_files(bundle: Path, manifest: BundleManifest) -> None:
    """Every listed file exists with the recorded size and sha256.

    Raises:
        IntegrityError: naming the first file that does not match.
    """
    for entry in manifest.files:
        path = bundle / entry.path
        if not path.resolve().is_relative_to(bundle.resolve()):
            raise IntegrityError(f"manifest lists {entry.path}, which is outside the bundle")
        if not path.is_file():
            raise IntegrityError(f"{entry.path} is missing from {bundle}")
        if path.stat().st_size != entry.size:
            raise IntegrityError(f"{entry.path}: size {path.stat().st_size} != {entry.size} recorded in the manifest")
        if sha256_file(path) != entry.sha256:
            raise IntegrityError(f"{entry.path}: sha256 does not match the manifest (file changed or corrupt)")


def write_golden(path: Path, inputs: list[Feed], outputs: list[Feed]) -> None:
    """Write golden feeds as ``inputs/NAME`` and ``outputs/NAME`` arrays of shape ``(samples, ...)``."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, feeds in (("inputs", inputs), ("outputs", outputs)):
        for name in feeds[0]:
            arrays[f"{prefix}/{name}"] = np.stack([np.asarray(f[name]) for f in feeds])
    write_npz(path, arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` with fixed zip timestamps (``np.savez`` stamps the wall clock)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
