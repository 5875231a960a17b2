"""What a build farm keeps in a store, and how a cell's inputs travel to a worker on another machine.

Rules:
1. A bundle lives at ``STORE/NAME/`` and is complete when its ``manifest.json`` exists: every other file is
   uploaded first and the manifest, which lists each file's sha256 and size, last (``If-None-Match: *``,
   so two farms never both publish one bundle). A killed or failed upload leaves no manifest, so no bundle:
   :func:`bundle_exists` and :func:`fetch_bundle` see nothing, and the next upload removes the debris.
   Replacing a bundle (``--force``) deletes its manifest first: readers see the old bundle or none, then the
   new one, never a mix.
2. A stage-cache entry lives at ``CACHE/KEY[:2]/KEY/`` and is complete when its ``.edgec-entry.json``
   (each file's sha256) exists, written last; a download that does not match it is a miss. Whoever can
   write the store writes these entries, so a download is bounded: the marker is at most
   :data:`MARKER_MAX_BYTES` and lists at most :data:`ENTRY_MAX_FILES` plain relative names (the rules of
   :mod:`edgec.runtime_shims.bundle_files`), each written as a new regular file of the fresh folder and read
   in :data:`CHUNK` ranges (memory stays bounded whatever size an object has). An upload sends regular
   files only, never what a symlink in the entry points at.
3. A :class:`Parcel` carries a cell's shared inputs (the :class:`~edgec.compiler.pipeline.Prepared` stages)
   to a worker: the objects pickled, and every existing file or folder they name packed in a tar beside them,
   so the worker needs nothing from the driver's disk. Paths are swapped for references while pickling
   (``persistent_id``) and for the unpacked copies while unpickling. A parcel is made by the driver and read
   by the farm's own workers, inside the cluster's trust boundary (Ray pickles every task argument too);
   never read one from anywhere else.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from edgec.cloud_sync.store import Conflict, NotFound, Store, open_store
from edgec.core.bundle import MANIFEST, BundleManifest
from edgec.core.errors import IntegrityError, SyncError, brief
from edgec.runtime_shims import bundle_files

ENTRY_MARKER = ".edgec-entry.json"
MARKER_MAX_BYTES = 4 << 20
"""A stage-cache entry's marker larger than this is a miss (a real one holds ~100 bytes a file)."""
ENTRY_MAX_FILES = 10_000
CHUNK = 16 << 20
"""Bytes of a stage-cache entry's file read from the store at once."""


# -- bundles (rule 1) ----------------------------------------------------------------------------------


def bundle_url(store: Store, name: str) -> str:
    """Where a bundle is, for people: ``s3://bucket/prefix/NAME`` (the URL's options left out)."""
    return f"{store.url.split('?', 1)[0].rstrip('/')}/{name}"


def bundle_exists(store: Store, name: str) -> bool:
    """Whether a complete bundle ``name`` is in the store (its manifest exists).

    Raises:
        StoreUnavailable: the store failed.
    """
    return store.head(f"{name}/{MANIFEST}") is not None


def upload_bundle(store: Store, name: str, folder: Path, force: bool) -> str:
    """Upload the bundle ``folder`` as ``name`` (rule 1); returns :func:`bundle_url`.

    Raises:
        SyncError: the store failed, or another build published the bundle since the driver checked (without
            ``force``); what this call uploaded is removed.
    """
    prefix = f"{name}/"
    if bundle_exists(store, name):
        if not force:
            raise SyncError(f"bundle {bundle_url(store, name)} appeared while this cell was building",
                            hint="another build published it; pass --force to replace it")
        store.delete(prefix + MANIFEST)  # from here on the old bundle is gone, never half replaced
    for meta in store.list(prefix):  # the old bundle's files, or the debris of a killed upload
        store.delete(meta.key)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    uploaded: list[str] = []
    try:
        for rel in (f for f in files if f != MANIFEST):
            store.put(prefix + rel, (folder / rel).read_bytes())
            uploaded.append(prefix + rel)
        if not store.put_new(prefix + MANIFEST, (folder / MANIFEST).read_bytes()):
            raise SyncError(f"bundle {bundle_url(store, name)} was published by another build meanwhile")
    except BaseException:
        _delete_quietly(store, uploaded)
        raise
    return bundle_url(store, name)


def _delete_quietly(store: Store, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except SyncError:  # the store is failing: the debris stays invisible without a manifest (rule 1)
            return


def fetch_bundle(store_url: str | Path, name: str, dest: Path) -> Path:
    """Download the complete bundle ``name`` into ``dest/name``, each file checked against the manifest.

    Raises:
        IntegrityError: no complete bundle ``name`` (no manifest), a bad manifest, or a file that does not
            match it; nothing is left in ``dest`` then.
        StoreUnavailable: the store failed.
    """
    store = open_store(store_url)
    try:
        manifest_bytes = store.get(f"{name}/{MANIFEST}")
    except NotFound:
        raise IntegrityError(f"{bundle_url(store, name)} is not a complete bundle: no {MANIFEST}") from None
    final = dest / name
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.fetch-", dir=dest))
    try:
        (staging / MANIFEST).write_bytes(manifest_bytes)
        manifest = BundleManifest.model_validate_json(manifest_bytes)
        for rel in bundle_files.listed_entries(manifest.model_dump(mode="json")):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(store.get(f"{name}/{rel}"))
        bundle_files.check_bundle(str(staging), manifest.model_dump(mode="json"))
        staging.rename(final)
    except (bundle_files.BundleFileError, NotFound, ValueError) as exc:
        raise IntegrityError(f"{bundle_url(store, name)} does not match its manifest: {brief(exc, 200)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# -- the stage cache in a store (rule 2) ---------------------------------------------------------------


class StoreEntries:
    """A stage cache's second level in a store (:class:`edgec.compiler.cache.RemoteEntries`).

    Args:
        store: the store, at the cache's prefix.
    """

    def __init__(self, store: Store) -> None:
        self.backing = store

    def fetch(self, key: str, into: Path) -> bool:
        """Download the complete entry ``key`` into the empty folder ``into`` (rule 2); False when absent,
        incomplete, failing, or breaking a bound."""
        prefix = f"{key[:2]}/{key}/"
        try:
            files = self._marker(prefix)
            for rel, digest in files.items():
                bundle_files.plain_name(rel, "cache entry file")
                (into / rel).parent.mkdir(parents=True, exist_ok=True)
                if not self._download(prefix + rel, into / rel, digest):
                    return False
        except (NotFound, SyncError, OSError, ValueError, KeyError, TypeError, AttributeError,
                bundle_files.BundleFileError):
            return False
        return True

    def _marker(self, prefix: str) -> dict[str, str]:
        """The entry's ``{file: sha256}``, read within :data:`MARKER_MAX_BYTES` and :data:`ENTRY_MAX_FILES`.

        Raises:
            NotFound: no marker (an incomplete entry).
            ValueError: a marker over a bound, or not ``{"files": {name: sha256}}``.
        """
        meta = self.backing.head(prefix + ENTRY_MARKER)
        if meta is None:
            raise NotFound(prefix + ENTRY_MARKER)
        if meta.size > MARKER_MAX_BYTES:
            raise ValueError(f"marker of {meta.size} bytes")
        data = self.backing.get_range(prefix + ENTRY_MARKER, 0, meta.size)
        files = json.loads(data)["files"]
        if not isinstance(files, dict) or len(files) > ENTRY_MAX_FILES:
            raise ValueError(f"marker files is not an object of at most {ENTRY_MAX_FILES} names")
        return files

    def _download(self, key: str, dest: Path, digest: str) -> bool:
        """Write the object ``key`` into the new file ``dest`` in :data:`CHUNK` ranges; whether its sha256 is
        ``digest``."""
        meta = self.backing.head(key)
        if meta is None:
            return False
        sha, offset = hashlib.sha256(), 0
        with open(dest, "xb") as handle:  # a new file: never one written before or through a link
            while offset < meta.size:
                chunk = self.backing.get_range(key, offset, min(offset + CHUNK, meta.size), if_match=meta.etag)
                if not chunk:
                    return False  # the object became shorter than it was
                sha.update(chunk)
                handle.write(chunk)
                offset += len(chunk)
        return sha.hexdigest() == digest

    def store(self, key: str, entry: Path) -> None:
        """Upload the local entry folder ``entry``, its marker last; nothing when the store already has it."""
        prefix = f"{key[:2]}/{key}/"
        try:
            if self.backing.head(prefix + ENTRY_MARKER) is not None:
                return
            files = {}
            for path in sorted(p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()):
                data = path.read_bytes()
                rel = path.relative_to(entry).as_posix()
                self.backing.put(prefix + rel, data)
                files[rel] = hashlib.sha256(data).hexdigest()
            self.backing.put_new(prefix + ENTRY_MARKER, json.dumps({"files": files}, sort_keys=True).encode())
        except (SyncError, Conflict, OSError):  # best effort: the next build produces it again
            return


# -- parcels (rule 3) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    """Pickled objects whose paths point into ``files`` (a tar of the files and folders they named)."""

    state: bytes
    files: bytes

    @property
    def size(self) -> int:
        """Bytes the parcel takes in the object store."""
        return len(self.state) + len(self.files)


class _Packer(pickle.Pickler):
    """Pickles objects, replacing each path that exists with ``(unit, relative path)`` and packing the unit."""

    def __init__(self, handle: io.BytesIO, unit_of: Callable[[Path], Path]) -> None:
        super().__init__(handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.unit_of = unit_of
        self.units: list[Path] = []

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, PurePath) or not Path(obj).exists():
            return None
        path = Path(obj).resolve()
        unit = self.unit_of(path)
        if unit not in self.units:
            self.units.append(unit)
        return ("path", self.units.index(unit), path.relative_to(unit).as_posix())


class _Unpacker(pickle.Unpickler):
    def __init__(self, handle: io.BytesIO, root: Path) -> None:
        super().__init__(handle)
        self.root = root

    def persistent_load(self, pid: Any) -> Any:
        kind, unit, rel = pid
        if kind != "path":
            raise pickle.UnpicklingError(f"unknown reference {kind!r}")
        folder = next((self.root / str(unit)).iterdir())
        return folder if rel == "." else folder / rel


def pack(obj: Any, unit_of: Callable[[Path], Path] = lambda p: p) -> Parcel:
    """``obj`` and every existing file or folder it names (rule 3).

    Args:
        unit_of: for a named path, the file or folder that travels with it (a stage-cache entry travels whole,
            so the files beside a model go too); default the path itself.
    """
    handle = io.BytesIO()
    packer = _Packer(handle, unit_of)
    packer.dump(obj)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for index, unit in enumerate(packer.units):
            tar.add(str(unit), arcname=f"{index}/{unit.name}")
    return Parcel(handle.getvalue(), archive.getvalue())


def unpack(parcel: Parcel, into: Path) -> Any:
    """The objects of ``parcel``, their paths pointing at the copies unpacked into the folder ``into``."""
    with tarfile.open(fileobj=io.BytesIO(parcel.files), mode="r") as tar:
        tar.extractall(into, filter="data")
    return _Unpacker(io.BytesIO(parcel.state), into).load()


def entry_unit(roots: tuple[Path, ...]) -> Callable[[Path], Path]:
    """A ``unit_of`` for :func:`pack`: a path inside a stage-cache entry (``ROOT/KEY[:2]/KEY/...``) or a
    scratch entry (``SCRATCH/.KEY-XXXX/...``) travels as its whole entry; an ``.onnx`` file elsewhere whose
    weights are external data travels with its folder; any other path as itself."""
    resolved = tuple(r.resolve() for r in roots)

    def unit_of(path: Path) -> Path:
        for root in resolved:
            if root in path.parents:
                depth = 1 if path.relative_to(root).parts[0].startswith(".") else 2
                return root.joinpath(*path.relative_to(root).parts[:depth])
        return path.parent if path.suffix == ".onnx" and _has_external_data(path) else path

    return unit_of


def _has_external_data(path: Path) -> bool:
    """Whether an ONNX file keeps tensors in other files (read without loading them)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ours to judge here: the worker's stages report a model they cannot read
        return False
    return any(uses_external_data(t) for t in model.graph.initializer)


def tar_folder(folder: Path) -> bytes:
    """A folder's files as tar bytes (a bundle on its way back to the driver)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(str(path), arcname=path.relative_to(folder).as_posix(), recursive=False)
    return archive.getvalue()


def untar(data: bytes, into: Path) -> None:
    """Unpack :func:`tar_folder` bytes into the existing folder ``into`` (plain files and folders only)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(into, filter="data")

