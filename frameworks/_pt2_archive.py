"""Allow-list check of a ``.pt2`` archive, run before torch is asked to open it (stdlib only).

``torch.export.load`` does more than read a program: an ``aotinductor/`` member makes it extract and
``dlopen`` a shared object (whose constructor runs at once), and ``custom_obj_*`` / ``opaque_obj_*`` /
legacy ``*.pt`` members are unpickled. So before torch sees the file, every member must be one that
``torch.export.save`` writes for a plain program (torch 2.13; ``<root>`` is the archive's one top folder):

1. ``archive_format``, ``archive_version``, ``byteorder``, ``.data/version``, ``.data/serialization_id``;
2. ``models/model.json`` and ``data/sample_inputs/model.pt`` (required);
3. ``data/weights/model_weights_config.json`` and raw ``data/weights/weight_<N>`` payloads;
4. ``data/constants/model_constants_config.json`` and raw ``data/constants/tensor_<N>`` payloads;
5. ``extra/<name>`` files given to ``extra_files=``, which torch reads as UTF-8 text.

Every member is stored uncompressed (as torch writes them) so the bytes torch reads are bounded by the
file size; names are unique, under one root, without ``..``, absolute paths or backslashes; the member
count is bounded; and the weight/constant configs may not ask for pickled payloads. The zip itself must
be laid out as torch writes it (no comment, no data before the first member or around the central
directory, every local header naming its member) so that torch's zip reader sees the members checked here.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError

MAX_MEMBERS = 100_000
MAX_EXTRA_BYTES = 16 << 20
HINT = "save the program with torch.export.save(ep, path); AOTInductor packages and pickles are not accepted"

_ALLOWED = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_[0-9]+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_[0-9]+"
    r"|extra/[A-Za-z0-9_][A-Za-z0-9_.-]*"
)
_ROOT = re.compile(r"[^/\\\x00-\x1f]+")
_EOCD = struct.Struct("<4s8xLLH")  # end of central directory: signature, directory size and offset, comment
_LOCATOR64 = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4s36xQQ")  # zip64 end record: signature, directory size and offset
_PAYLOAD = re.compile(r"(weight|tensor)_[0-9]+")
_REQUIRED = ("archive_format", "archive_version", "models/model.json", "data/sample_inputs/model.pt")
_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
_SHARED_OBJECT = re.compile(r"\.(so(\.[0-9]+)*|dylib|dll|pyd)$", re.IGNORECASE)
_PICKLE = re.compile(r"\.(pt|pth|pkl|pickle|bin|ckpt)$|/(custom_obj|opaque_obj)_[^/]*$", re.IGNORECASE)


def check_pt2_archive(path: Path) -> None:
    """Refuse a ``.pt2`` whose members are not all on the allow-list of a plain ``torch.export.save``.

    Opens the file with :mod:`zipfile` only; nothing is extracted and torch is not imported.

    Raises:
        ExportError: naming the first refused member, or why the archive as a whole is refused.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            root = _check_layout(path, infos)
            _check_members(path, infos, root)
            _check_container(path, archive, infos)
            names = {info.filename[len(root) + 1:] for info in infos}
            _check_required(path, names)
            _check_extra(path, archive, [i for i in infos if i.filename.startswith(f"{root}/extra/")])
            for config in _CONFIGS:
                if config in names:
                    _check_config(path, archive.read(f"{root}/{config}"), config)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"could not read {path} as a torch.export .pt2 archive ({exc})", hint=HINT) from None


def _refuse(path: Path, name: str, why: str) -> ExportError:
    return ExportError(f"{path} holds member {name!r}, {why}; edgec refuses archive members that could load code",
                       hint=HINT)


def _check_layout(path: Path, infos: list[zipfile.ZipInfo]) -> str:
    if not infos:
        raise ExportError(f"{path} is an empty archive; expected a torch.export .pt2", hint=HINT)
    if len(infos) > MAX_MEMBERS:
        raise ExportError(f"{path} holds {len(infos)} members; at most {MAX_MEMBERS} are accepted", hint=HINT)
    root = infos[0].filename.split("/", 1)[0]
    if not _ROOT.fullmatch(root) or root in (".", ".."):
        raise _refuse(path, infos[0].filename, "which is not under one plain top folder")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise _refuse(path, duplicate, "which appears twice in the archive")
    return root


def _check_members(path: Path, infos: list[zipfile.ZipInfo], root: str) -> None:
    size = path.stat().st_size
    total = 0
    for info in infos:
        name = info.filename
        inner = name[len(root) + 1:] if name.startswith(f"{root}/") else None
        if inner is None or not _ALLOWED.fullmatch(inner):
            raise _refuse(path, name, _why(name))
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size or info.flag_bits & 1:
            raise _refuse(path, name, "which is compressed or encrypted (torch.export.save stores members as is)")
        total += info.file_size
        if total > size or info.header_offset + info.file_size > size:
            raise _refuse(path, name, f"whose declared size ({info.file_size} bytes) runs past the {size}-byte file")


def _check_container(path: Path, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    size = path.stat().st_size
    tail_size = _EOCD.size + _LOCATOR64.size + _EOCD64.size
    with path.open("rb") as stream:
        stream.seek(max(size - tail_size, 0))
        tail = stream.read(tail_size)
    signature, cd_size, cd_offset, comment = _EOCD.unpack(tail[-_EOCD.size:])
    end = size - _EOCD.size
    if len(tail) == tail_size and tail[_EOCD64.size:_EOCD64.size + 4] == b"PK\x06\x07":  # zip64, as torch writes
        signature64, cd_size, cd_offset = _EOCD64.unpack(tail[:_EOCD64.size])
        end -= _LOCATOR64.size + _EOCD64.size
        signature = signature if signature64 == b"PK\x06\x06" else b""
    if signature != b"PK\x05\x06" or comment or cd_offset + cd_size != end:
        raise ExportError(f"{path} has bytes around its zip directory (a comment or appended data); "
                          "expected a .pt2 exactly as torch.export.save writes it", hint=HINT)
    if min(info.header_offset for info in infos) != 0:
        raise ExportError(f"{path} has bytes before its first member; expected a .pt2 as torch.export.save writes it",
                          hint=HINT)
    for info in infos:
        archive.open(info).close()  # zipfile checks that the local header names the same member


def _why(name: str) -> str:
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
        return "a path outside the archive's folder"
    if "/aotinductor/" in f"/{name}":
        return "an AOTInductor package (native code that torch would dlopen)"
    if _SHARED_OBJECT.search(name):
        return "a shared library"
    if _PICKLE.search(name):
        return "a pickle"
    return "which torch.export.save does not write for a plain program"


def _check_required(path: Path, names: set[str]) -> None:
    if "models/model.json" not in names:
        raise ExportError(f"{path} holds no exported program (no models/model.json)", hint=HINT)
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise ExportError(f"{path} lacks {', '.join(missing)}; expected an archive written by torch.export.save",
                          hint=HINT)


def _check_extra(path: Path, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        if info.file_size > MAX_EXTRA_BYTES or _SHARED_OBJECT.search(info.filename) or _PICKLE.search(info.filename):
            raise _refuse(path, info.filename, "an extra file that is too large or not text")
        try:
            archive.read(info).decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(path, info.filename, "an extra file that is not UTF-8 text (binary or native code)") from None


def _check_config(path: Path, raw: bytes, name: str) -> None:
    config: Any = json.loads(raw)
    entries = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(item, dict) for item in entries.values()):
        raise ExportError(f"{path}: {name} is not a torch.export payload config", hint=HINT)
    for fqn, item in entries.items():
        if item.get("use_pickle") or not _PAYLOAD.fullmatch(str(item.get("path_name", ""))):
            raise ExportError(f"{path} stores {fqn!r} as a pickled weight or object ({name}); "
                              "edgec refuses to unpickle model files", hint=HINT)
