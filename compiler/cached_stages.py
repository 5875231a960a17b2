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
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.cache import StageCache, cache_key
from edgec.compiler.cache import _remove as remove_entry
from edgec.compiler.importers.base import Importer
from edgec.core.bundle import write_npz
from edgec.core.types import Feed, ModelArtifact, TensorSpec
from edgec.runtime_shims import bounded_npz
from edgec.targets.base import ExportResult, PrecisionRequest, Target

FILES = "files"
"""The entry's folder holding the files an export wrote into the bundle."""
OUTPUTS = "outputs.npz"

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

    entry, meta, hit = cache.get_or_create(export_key(target, artifact, request, toolchain), produce, kind="export")
    if hit:
        log(f"export for {target.name}: cached")
    shutil.copytree(entry / FILES, staging, dirs_exist_ok=True, symlinks=True)
    return result_from_json(meta), hit


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
    for _ in range(2):  # a bad local entry is removed and produced again; a bad remote one comes back once
        entry, meta, _ = cache.get_or_create(key, produce, kind="reference")
        outputs = read_outputs(entry, meta, len(feeds))
        if outputs is not None:
            return outputs
        remove_entry(entry)
    return importer.reference(artifact, feeds)


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
