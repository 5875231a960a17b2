"""Bundles: a directory with the model files, ``manifest.json`` and ``golden.npz``.

The manifest lists every file with its sha256 and size, the tensor specs, provenance (source, passes,
calibration, toolchain versions), and parity against the FP32 reference. It is written with sorted
keys and no timestamps, and ``golden.npz`` is written deflated with fixed zip dates, so rebuilding the same
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

from edgec.core.errors import IntegrityError, brief
from edgec.core.types import Feed, TensorSpec, sha256_file
from edgec.runtime_shims import bundle_files
from edgec.runtime_shims.measure import read_golden as read_golden  # one reader for host and device code

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"



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
        IntegrityError: missing, unreadable or malformed manifest, a symlinked one, or a newer schema.
    """
    path = bundle / MANIFEST
    if path.is_symlink():
        raise IntegrityError(f"{path} is a symlink; bundles hold plain files")
    if not path.is_file():
        raise IntegrityError(f"{bundle} is not a bundle: {MANIFEST} not found")
    try:
        manifest = BundleManifest.model_validate_json(path.read_text())
    except (ValidationError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise IntegrityError(f"{path} is not a valid edgec manifest: {brief(exc, 200)}") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise IntegrityError(f"{path} has schema_version {manifest.schema_version}; this edgec reads up to {SCHEMA_VERSION}")
    return manifest


def check_files(bundle: Path, manifest: BundleManifest) -> int:
    """The names a runner opens are plain, listed files inside the bundle, and every listed file exists
    with the recorded size and sha256 (see :mod:`edgec.runtime_shims.bundle_files`).

    Returns:
        How many files were checked.

    Raises:
        IntegrityError: naming the manifest field or the first file that does not match.
    """
    try:
        return bundle_files.check_bundle(str(bundle), manifest.model_dump(mode="json"))
    except bundle_files.BundleFileError as exc:
        raise IntegrityError(str(exc)) from None


def bundle_path(bundle: Path, manifest: BundleManifest, field: str) -> Path:
    """The file or folder a manifest field names (``model_file``, ``golden``), after checking that it is a
    plain relative path to listed files inside the bundle, reached without symlinks (hashes are not read).

    Raises:
        IntegrityError: naming the field or the file that breaks a rule.
    """
    try:
        return Path(bundle_files.named_path(str(bundle), manifest.model_dump(mode="json"), field))
    except bundle_files.BundleFileError as exc:
        raise IntegrityError(str(exc)) from None


def read_checked_golden(bundle: Path, manifest: BundleManifest) -> tuple[list[Feed], list[Feed]]:
    """The golden inputs and outputs of a bundle, from its checked ``golden`` name.

    Raises:
        IntegrityError: the name breaks a rule, or the file is not readable golden data.
    """
    path = bundle_path(bundle, manifest, "golden")
    try:
        inputs, outputs = read_golden(path)
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise IntegrityError(f"{manifest.golden} cannot be read as golden data: {brief(exc, 200)}") from None
    if not inputs or not outputs:
        raise IntegrityError(f"{manifest.golden} cannot be read as golden data: it holds no samples")
    return inputs, outputs


def write_golden(path: Path, inputs: list[Feed], outputs: list[Feed]) -> None:
    """Write golden feeds as ``inputs/NAME`` and ``outputs/NAME`` arrays of shape ``(samples, ...)``, deflated
    (what ``np.savez_compressed`` writes, with fixed zip dates: a rebuild gives the same bytes).

    Samples of another shape (a model with dynamic dims, checked at a second size) go into groups of their
    own, ``inputs@1/NAME`` and ``outputs@1/NAME`` and so on, in the order their shapes first appear; readers
    that know only ``inputs/NAME`` check the first group (:func:`read_golden` reads them all, in order).
    """
    arrays: dict[str, np.ndarray] = {}
    for number, members in enumerate(shape_groups(inputs, outputs)):
        tag = "" if number == 0 else f"@{number}"
        for prefix, feeds in (("inputs", inputs), ("outputs", outputs)):
            for name in feeds[0]:
                arrays[f"{prefix}{tag}/{name}"] = np.stack([np.asarray(feeds[i][name]) for i in members])
    write_npz(path, arrays, compress=True)


def shape_groups(inputs: list[Feed], outputs: list[Feed]) -> list[list[int]]:
    """Sample indices grouped by the shapes of their inputs and outputs, groups in order of first appearance."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, (given, taken) in enumerate(zip(inputs, outputs)):
        key = tuple((n, np.shape(v)) for feed in (given, taken) for n, v in feed.items())
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """An ``.npz`` with fixed zip timestamps (``np.savez`` stamps the wall clock); ``compress``: deflated
    members at zlib's default level, as ``np.savez_compressed`` writes them."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = method  # a ZipInfo does not take the archive's compression
            archive.writestr(info, buffer.getvalue())
