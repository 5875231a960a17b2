"""Which files a bundle may name, and whether they are the files its manifest lists. Standard library only.

The compiler (``edgec verify``, ``inspect``, ``debug``, ``serve``, ``publish``), the device agent's
health check and the shim shipped inside every bundle all check bundles with this one module, so a
manifest cannot point a reader at a file the others do not check. The rules:

1. Every name, in ``files`` and in the fields a runner opens (:data:`NAMED_FIELDS`), is a plain
   relative POSIX path: no absolute path or drive, no ``..`` or ``.`` part, no empty part, no
   backslash, no NUL.
2. Nothing on the way to a file, below the bundle directory, is a symlink (the bundle directory itself
   may be one: a device's ``current`` link); listed files are regular files.
3. A named field names a listed file, or a directory (a Core ML ``model.mlpackage``) whose every file is
   listed and which holds no symlinks.
4. :func:`check_bundle` also compares every listed file's size and sha256.

Errors are :class:`BundleFileError` with a one-line message; each caller wraps it in its own error type.
"""

from __future__ import annotations

import hashlib
import ntpath
import os
import stat
from collections.abc import Mapping
from typing import Any

NAMED_FIELDS = ("model_file", "golden")
"""Manifest fields naming a file or directory that a runner or checker opens."""
DEFAULT_GOLDEN = "golden.npz"
BLOCK = 1 << 20


class BundleFileError(Exception):
    """A name in the manifest, or a file in the bundle, breaks the rules above (one-line message)."""


def plain_name(name: object, what: str) -> str:
    """``name`` if it is a plain relative path inside a bundle (rule 1).

    Raises:
        BundleFileError: ``what {name!r} is not a plain relative path inside the bundle``.
    """
    if not isinstance(name, str) or not _is_plain(name):
        raise BundleFileError(f"{what} {name!r} is not a plain relative path inside the bundle")
    return name


def _is_plain(name: str) -> bool:
    if not name or "\\" in name or "\0" in name or name.startswith("/") or ntpath.splitdrive(name)[0]:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def field_name(manifest: Mapping[str, Any], field: str) -> str:
    """The checked name a manifest field holds (``golden`` defaults to ``golden.npz``).

    Raises:
        BundleFileError: the field is missing or its value is not a plain relative path.
    """
    if field not in manifest and field != "golden":
        raise BundleFileError(f"the manifest has no {field} field")
    return plain_name(manifest.get(field, DEFAULT_GOLDEN), f"manifest field {field}")


def _lstat(bundle: str, rel: str) -> os.stat_result | None:
    """lstat of ``bundle/rel`` after checking no part on the way is a symlink; None when it is missing.

    Raises:
        BundleFileError: a part (the file itself or a parent below ``bundle``) is a symlink or not a folder.
    """
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        try:
            info = os.lstat(os.path.join(bundle, sub))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BundleFileError(f"{sub} cannot be read: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            raise BundleFileError(f"{sub} is a symlink; bundles hold plain files")
        if depth < len(parts) and not stat.S_ISDIR(info.st_mode):
            raise BundleFileError(f"{sub} is not a folder, so {rel} is missing from the bundle")
    return info


def regular_file(bundle: str, rel: str) -> str:
    """``bundle/rel`` after checking it is a regular file reached without symlinks (``rel`` already plain).

    Raises:
        BundleFileError: missing, a symlink on the way, or not a regular file.
    """
    info = _lstat(bundle, rel)
    if info is None:
        raise BundleFileError(f"{rel} is missing from {bundle}")
    if not stat.S_ISREG(info.st_mode):
        raise BundleFileError(f"{rel} is not a regular file")
    return os.path.join(bundle, rel)


def listed_entries(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``files`` as path -> entry, after checking each entry's shape and path (rule 1).

    Raises:
        BundleFileError: not a list, a malformed or duplicate entry, or a path that is not plain.
    """
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BundleFileError("the manifest has no files list")
    entries: dict[str, Mapping[str, Any]] = {}
    for number, entry in enumerate(files, 1):
        if not _well_formed(entry):
            raise BundleFileError(f"manifest files entry {number} is malformed: "
                                  "expected path, sha256 (64 hex digits) and size (bytes)")
        path = plain_name(entry["path"], f"manifest files entry {number} path")
        if path in entries:
            raise BundleFileError(f"the manifest lists {path} twice")
        entries[path] = entry
    return entries


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, Mapping):
        return False
    size, digest = entry.get("size"), entry.get("sha256")
    return (isinstance(entry.get("path"), str) and isinstance(size, int) and not isinstance(size, bool) and size >= 0
            and isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))


def named_path(bundle: str, manifest: Mapping[str, Any], field: str,
               entries: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``bundle/NAME`` for a manifest field, after rules 1-3 (names and listing; hashes are not read).

    Raises:
        BundleFileError: naming the field, or the file that breaks a rule.
    """
    name = field_name(manifest, field)
    listed = listed_entries(manifest) if entries is None else entries
    if name in listed:
        return regular_file(bundle, name)
    members = {path for path in listed if path.startswith(name + "/")}
    info = _lstat(bundle, name) if members else None
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise BundleFileError(f"manifest field {field} {name!r} is not listed in the manifest's files")
    _check_folder(bundle, name, members)
    return os.path.join(bundle, name)


def _check_folder(bundle: str, folder: str, members: set[str]) -> None:
    """Every file below ``bundle/folder`` is listed; nothing below it is a symlink or special file."""
    for top, dirs, files in os.walk(os.path.join(bundle, folder)):
        rel_top = os.path.relpath(top, bundle).replace(os.sep, "/")
        for name in sorted(dirs + files):
            rel = f"{rel_top}/{name}"
            mode = os.lstat(os.path.join(top, name)).st_mode
            if stat.S_ISLNK(mode):
                raise BundleFileError(f"{rel} is a symlink; bundles hold plain files")
            if not stat.S_ISDIR(mode) and rel not in members:
                raise BundleFileError(f"{rel} is not listed in the manifest's files")


def check_named(bundle: str, manifest: Mapping[str, Any], fields: tuple[str, ...] = NAMED_FIELDS) -> dict[str, str]:
    """Rules 1-3 for the named fields, without reading any hash: field -> path in the bundle.

    Raises:
        BundleFileError: naming the first field or file that breaks a rule.
    """
    entries = listed_entries(manifest)
    return {field: named_path(bundle, manifest, field, entries) for field in fields}


def sha256_of(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks without following a symlink.

    Raises:
        OSError: the file cannot be opened or read.
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_entry(bundle: str, path: str, entry: Mapping[str, Any]) -> None:
    """One listed file: a regular file reached without symlinks, with the recorded size and sha256.

    Raises:
        BundleFileError: naming the file and what does not match.
    """
    full = regular_file(bundle, path)
    size = os.stat(full).st_size
    if size != entry["size"]:
        raise BundleFileError(f"{path}: size {size} != {entry['size']} recorded in the manifest")
    try:
        digest = sha256_of(full)
    except OSError as exc:
        raise BundleFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if digest != entry["sha256"]:
        raise BundleFileError(f"{path}: sha256 does not match the manifest (file changed or corrupt)")


def check_bundle(bundle: str, manifest: Mapping[str, Any], fields: tuple[str, ...] = NAMED_FIELDS) -> int:
    """All four rules: the named fields first, then every listed file's size and sha256.

    Returns:
        How many listed files were checked.

    Raises:
        BundleFileError: naming the first field or file that breaks a rule.
    """
    entries = listed_entries(manifest)
    for field in fields:
        named_path(bundle, manifest, field, entries)
    for path, entry in entries.items():
        check_entry(bundle, path, entry)
    return len(entries)
