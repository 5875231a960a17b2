"""The target export and the FP32 reference runs, through the stage cache.

An unchanged rebuild then costs the import of the source plus what must run again: parity is measured
anew on the bundle's model every time (the runtime runs the model the bundle ships; see
``benchmarks/rebuild_speed.py`` for what each stage costs).

Keys:
- **export**: the input artifact (format, digest, tensor specs), the target's name, its
  :meth:`~edgec.targets.base.Target.export_cache_key` (its export version and, for host-bound exports such
  as TensorRT engines, the host), its options, the precision request (precision, INT8 mode, nodes kept in
  float, calibration digest and method) and the toolchain versions. The entry holds the files the target
  wrote (under ``files/``) and its :class:`~edgec.targets.base.ExportResult` as JSON.
- **reference**: the importer, the model artifact (format, digest), a digest of the feeds and the toolchain
  versions; the entry holds the outputs as ``.npy`` arrays in an uncompressed ``outputs.npz``.

An entry may come from a store other machines write (``--cache-store``), so the reference outputs are read
with :mod:`edgec.runtime_shims.bounded_npz` within the entry file's own size (stored members never decode
to more than the file holds; a zip bomb or an ``.npy`` header claiming a huge shape is refused before
anything is allocated). An entry that cannot be read so is a miss: it is removed and the outputs computed
again.

Likewise an export entry is used only when :func:`read_export` accepts it, and only the files its result
lists are copied into the bundle: every listed name is a plain relative path (the rules of
:mod:`edgec.runtime_shims.bundle_files`) that is not one the build writes itself (manifest, golden data,
layer report, shims), at most :data:`MAX_FILES` of them, each a regular file under ``files/`` reached
without a symlink (copied without following one, so a file's size is the bytes the entry holds);
``model_file`` is a listed file or a folder of listed files; the tensor specs are well formed. Anything
else is a miss: the entry is removed and the model exported again (after a second bad entry, from a store
that keeps serving it, the export runs outside the cache).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.bundle_files import SHIM_DIR
from edgec.compiler.cache import StageCache, cache_key
from edgec.compiler.fidelity_stage import LAYERS
from edgec.compiler.importers.base import Importer
from edgec.core.bundle import GOLDEN, MANIFEST, write_npz
from edgec.core.errors import ExportError
from edgec.core.types import Feed, ModelArtifact, TensorSpec
from edgec.runtime_shims import bounded_npz, bundle_files
from edgec.targets.base import ExportResult, PrecisionRequest, Target

FILES = "files"
"""The entry's folder holding the files an export wrote into the bundle."""
OUTPUTS = "outputs.npz"
MAX_FILES = 10_000
"""Files an export entry may list (Core ML packages hold a handful; real exports a few)."""
MAX_TENSORS = 100_000
"""Inputs plus outputs an export entry may declare."""
MAX_RANK = 64
MAX_DIM = (1 << 31) - 1
RESERVED = (MANIFEST, GOLDEN, LAYERS)
"""Bundle files the build writes beside the target's (and everything under ``edgec_shim/``)."""

Log = Callable[[str], None]


def export_key(target: Target, artifact: ModelArtifact, request: PrecisionRequest, toolchain: dict[str, str]) -> str:
    """The cache key of ``target.export(artifact, ..., request, ...)`` (see the module docstring)."""
    calibration = request.calibration
    wanted = {
        "precision": request.precision, "int8_mode": request.int8_mode, "exclude": list(request.exclude),
        "calibration": [calibration.digest, calibration.method] if calibration is not None else None,
        "options": request.options_as(target.Options).model_dump(mode="json"),
        "data_shapes": [[name, list(shape)] for name, shape in request.data_shapes],
    }
    model = [artifact.format, artifact.digest, [s.to_json() for s in artifact.inputs], [s.to_json() for s in artifact.outputs]]
    return cache_key("export", target.name, target.export_cache_key(), model, wanted, toolchain)


def result_to_json(result: ExportResult) -> dict[str, Any]:
    """An :class:`ExportResult` as JSON (the entry's meta)."""
    return {"model_file": result.model_file, "files": list(result.files), "inputs": [s.to_json() for s in result.inputs],
            "outputs": [s.to_json() for s in result.outputs], "details": result.details}


def result_from_json(meta: dict[str, Any]) -> ExportResult:
    """Inverse of :func:`result_to_json`."""
    return ExportResult(meta["model_file"], tuple(meta["files"]), tuple(TensorSpec.from_json(s) for s in meta["inputs"]),
                        tuple(TensorSpec.from_json(s) for s in meta["outputs"]), meta["details"])


def cached_export(cache: StageCache, target: Target, artifact: ModelArtifact, request: PrecisionRequest,
                  toolchain: dict[str, str], staging: Path, work: Path, log: Log) -> tuple[ExportResult, bool]:
    """The target's files in ``staging``, exported now or copied from the cache.

    On a miss the target exports into the new entry and its files are copied from there, so a fresh build
    and a rebuild ship the same bytes.

    Returns:
        The export's result (read back from its JSON either way) and whether it was a hit.

    Raises:
        EdgecError: the target's export failed (nothing is stored).
    """
    def produce(entry: Path) -> dict[str, Any]:
        log(f"exporting for {target.name}")
        (entry / FILES).mkdir()
        return result_to_json(target.export(artifact, entry / FILES, request, work))

    def copied(entry: Path, meta: dict[str, Any]) -> ExportResult | None:
        if (result := read_export(entry, meta)) is not None:
            copy_files(entry / FILES, result.files, staging)
        return result

    found = cache.get_checked(export_key(target, artifact, request, toolchain), produce, copied, kind="export")
    if found is None:
        return _export_uncached(target, produce, staging, work), False
    if found[1]:
        log(f"export for {target.name}: cached")
    return found


def _export_uncached(target: Target, produce: Callable[[Path], dict[str, Any]], staging: Path, work: Path) -> ExportResult:
    """Export into a folder of ``work`` (the cache kept serving bad entries) and copy the listed files.

    Raises:
        ExportError: the target's own export breaks the rules of :func:`read_export` (a bug in the target).
    """
    entry = Path(tempfile.mkdtemp(prefix="export-", dir=work))
    result = read_export(entry, produce(entry))
    if result is None:
        raise ExportError(f"the {target.name} export wrote files a bundle cannot hold (a symlink, a name outside "
                          "its folder, or a model file it does not list)",
                          hint="report this as a bug in the target; build with --no-cache to see its files")
    copy_files(entry / FILES, result.files, staging)
    return result


def read_export(entry: Path, meta: dict[str, Any]) -> ExportResult | None:
    """The result an export entry holds, once its meta and files pass the checks of the module docstring;
    None when they do not (a poisoned or corrupt entry)."""
    try:
        result = result_from_json(checked_meta(meta))
        for name in result.files:
            bundle_files.regular_file(str(entry), f"{FILES}/{name}")
    except (bundle_files.BundleFileError, KeyError, TypeError, ValueError):
        return None
    return result


def checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` after checking its names and tensor specs (see the module docstring).

    Raises:
        BundleFileError: a name that is not plain, reserved, listed twice, or a model file not listed.
        ValueError: a field of the wrong type or size.
    """
    files, model = meta.get("files"), meta.get("model_file")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES or not isinstance(meta.get("details"), dict):
        raise ValueError(f"files must be a list of 1 to {MAX_FILES} names, details an object")
    names = [bundle_files.plain_name(name, "export entry file") for name in files]
    if len(set(names)) < len(names) or any(n in RESERVED or n.startswith(f"{SHIM_DIR}/") for n in names):
        raise bundle_files.BundleFileError("export entry lists a file twice, or one the build writes itself")
    model = bundle_files.plain_name(model, "export entry model_file")
    if model not in names and not any(n.startswith(f"{model}/") for n in names):
        raise bundle_files.BundleFileError(f"export entry model_file {model!r} is not among its files")
    inputs, outputs = meta.get("inputs"), meta.get("outputs")
    if not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) + len(outputs) <= MAX_TENSORS):
        raise ValueError(f"inputs and outputs must be lists of at most {MAX_TENSORS} tensor specs")
    if not all(_well_formed_spec(spec) for spec in (*inputs, *outputs)):
        raise ValueError("a tensor spec is malformed")
    return meta


def _well_formed_spec(spec: object) -> bool:
    """A :meth:`TensorSpec.to_json` object: a name, a dtype name and a list of dims (int, name or None)."""
    if not isinstance(spec, dict):
        return False
    name, shape, dtype = spec.get("name"), spec.get("shape"), spec.get("dtype")
    return (isinstance(name, str) and isinstance(dtype, str) and dtype.isidentifier() and isinstance(shape, list)
            and len(shape) <= MAX_RANK and all(_dim_ok(d) for d in shape))


def _dim_ok(dim: object) -> bool:
    if isinstance(dim, bool):
        return False
    return dim is None or isinstance(dim, str) or (isinstance(dim, int) and 0 <= dim <= MAX_DIM)


def copy_files(folder: Path, names: tuple[str, ...], staging: Path) -> None:
    """Copy each listed file (checked by :func:`read_export`) from ``folder`` into ``staging``, never
    following a symlink and never replacing a file.

    Raises:
        OSError: a file changed into something else since it was checked.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    for name in names:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        source = os.open(folder / name, os.O_RDONLY | nofollow)
        with os.fdopen(source, "rb") as reader:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                raise OSError(f"{folder / name} is not a regular file")
            target = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
            with os.fdopen(target, "wb") as writer:
                shutil.copyfileobj(reader, writer, bundle_files.BLOCK)


def feeds_digest(feeds: list[Feed]) -> str:
    """sha256 over each feed's names, dtypes, shapes and bytes, in order."""
    digest = hashlib.sha256()
    for index, feed in enumerate(feeds):
        for name, array in feed.items():
            array = np.ascontiguousarray(array)
            digest.update(f"{index}|{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def cached_reference(cache: StageCache, importer: Importer, artifact: ModelArtifact, feeds: list[Feed],
                     toolchain: dict[str, str]) -> list[Feed]:
    """``importer.reference(artifact, feeds)``, or its outputs stored by an earlier build.

    Raises:
        EdgecError: the source framework cannot run the model.
    """
    def produce(entry: Path) -> dict[str, Any]:
        outputs = importer.reference(artifact, feeds)
        write_npz(entry / OUTPUTS, {f"{i}/{name}": np.asarray(a) for i, feed in enumerate(outputs) for name, a in feed.items()})
        return {"names": [list(feed) for feed in outputs]}

    key = cache_key("reference", importer.name, artifact.format, artifact.digest, feeds_digest(feeds), toolchain)
    found = cache.get_checked(key, produce, lambda entry, meta: read_outputs(entry, meta, len(feeds)), kind="reference")
    return found[0] if found is not None else importer.reference(artifact, feeds)


def read_outputs(entry: Path, meta: dict[str, Any], count: int) -> list[Feed] | None:
    """The ``count`` output feeds a reference entry holds, read within the size of its ``outputs.npz``;
    None when the entry is not what :func:`cached_reference` writes (corrupt, a bomb, names that lie)."""
    names = meta.get("names")
    if not (isinstance(names, list) and len(names) == count
            and all(isinstance(feed, list) and all(isinstance(n, str) for n in feed) for feed in names)):
        return None
    path = entry / OUTPUTS
    try:
        if path.is_symlink():
            return None
        budget = bounded_npz.Budget(path.stat().st_size)  # members are stored: never more than the file holds
        stored = bounded_npz.read_npz(path, budget, f"stage cache entry {entry.name}",
                                      max_members=max(1, sum(len(feed) for feed in names)))
        return [{name: stored[f"{i}/{name}"] for name in feed} for i, feed in enumerate(names)]
    except (OSError, KeyError, bounded_npz.ArrayReadError):
        return None
