"""Stage cache: outputs of importers, passes, reference runs and target exports stored under a hash of
input, stage, options and data.

Like Olive's cache, each entry is a directory named by its key, written to a temporary directory and
renamed into place, so a crashed build never leaves a half entry that a later build would trust.

Rules that keep the cache safe while builds and ``edgec cache prune`` run at once:

1. An entry is complete when its ``entry.json`` exists; it is written last, before the rename.
2. A hit touches ``entry.json``: its mtime is the entry's last use, which pruning reads (least recently
   used first).
3. Entries being written live in ``.KEY-XXXX`` folders, which pruning leaves alone unless they are older
   than :data:`STALE_TEMP_S` (debris of a killed build).
4. Pruning first renames an entry to ``.trash-KEY-PID`` (one atomic step: a build that looks it up then sees
   a miss, never half an entry), then deletes it; entries used in the last :data:`IN_USE_S` seconds are kept,
   as a running build may still read their files.
5. An entry whose ``entry.json`` cannot be read (corrupt, a symlink, over :data:`META_MAX_BYTES`: entries
   may come from a store other machines write) is a miss; the fresh one replaces it as in rule 4 (renamed
   aside, then deleted), and so does :meth:`StageCache.discard` for an entry whose files turn out bad.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edgec.core.errors import InternalError

T = TypeVar("T")

META = "entry.json"
STAGE = "stage"
"""A file in each entry naming its kind of stage (``import``, ``pass``, ``reference``, ``export``)."""
STALE_TEMP_S = 24 * 3600
"""Temporary folders older than this are debris of a killed build (no build writes one entry for a day)."""
IN_USE_S = 3600
"""Entries used this recently are never pruned: a build that is still running may read their files."""
META_MAX_BYTES = 16 << 20
"""An ``entry.json`` larger than this is not read (rule 5; real ones hold a few KiB)."""


def default_cache_dir() -> Path:
    """``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec``, else ``~/.cache/edgec``; absolute (a relative
    variable is taken against the current directory now, not in a converter's worker)."""
    if env := os.environ.get("EDGEC_CACHE_DIR"):
        return Path(os.path.abspath(Path(env).expanduser()))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.path.abspath(Path(base).expanduser() / "edgec"))


def cache_key(*parts: Any) -> str:
    """Hex sha256 over a JSON rendering of ``parts`` (sorted keys, so dict order never matters)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class StageCache:
    """Directory-per-key cache; disabled caches run every stage in a scratch directory.

    Args:
        root: cache directory; created on first use.
        enabled: when False, :meth:`get_or_create` always produces into a fresh scratch directory.
        scratch: where to produce when disabled.
        remote: a second level shared by machines (a build farm's store, see :class:`RemoteEntries`): a
            local miss looks there before producing, and what is produced is copied there.
    """

    def __init__(self, root: Path, enabled: bool = True, scratch: Path | None = None,
                 remote: RemoteEntries | None = None) -> None:
        self.root = root
        self.enabled = enabled
        self.scratch = scratch
        self.remote = remote
        self.hits = 0
        self.misses = 0

    def get_or_create(self, key: str, produce: Callable[[Path], dict[str, Any]],
                      kind: str = "stage") -> tuple[Path, dict[str, Any], bool]:
        """Return ``(entry_dir, meta, hit)``; on a miss ``produce(dir)`` writes files and returns JSON meta.

        ``kind`` names the stage for ``edgec cache info``.
        """
        final = self.root / key[:2] / key
        if self.enabled and (meta := _read_hit(final)) is not None:
            self.hits += 1
            return final, meta, True
        if self.enabled and self.remote is not None and (meta := self._fetch(key, final)) is not None:
            self.hits += 1
            return final, meta, True
        self.misses += 1
        parent = final.parent if self.enabled else (self.scratch or Path(tempfile.gettempdir()))
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=parent))
        try:
            meta = produce(tmp)
            (tmp / STAGE).write_text(kind)
            (tmp / META).write_text(json.dumps(meta, sort_keys=True, indent=1))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not self.enabled:
            return tmp, meta, False
        stored = _install(tmp, final)
        if stored is None:  # final kept changing under us (ours stays in tmp, pruned by rule 3) or took ours
            return (tmp if tmp.is_dir() else final), meta, False
        if self.remote is not None:
            self.remote.store(key, final)
        return final, stored, False

    def get_checked(self, key: str, produce: Callable[[Path], dict[str, Any]],
                    check: Callable[[Path, dict[str, Any]], T | None], kind: str = "stage") -> tuple[T, bool] | None:
        """:meth:`get_or_create`, read by ``check(entry_dir, meta)``: ``(its value, hit)``. An entry ``check``
        refuses (None: corrupt, or poisoned in a shared store) is discarded (rule 5) and produced again once;
        None when that one is refused too (a store that keeps serving a bad entry)."""
        for _ in range(2):
            entry, meta, hit = self.get_or_create(key, produce, kind)
            if (value := check(entry, meta)) is not None:
                return value, hit
            self.discard(entry)
        return None

    def discard(self, entry: Path) -> bool:
        """Remove ``entry``, a folder :meth:`get_or_create` returned whose files turned out bad, so that its
        key is a miss from now on (rule 5); False when it is already gone.

        Raises:
            InternalError: ``entry`` is not a folder this cache put an entry in (a bug in the caller).
        """
        if entry.name.startswith("."):  # produced, not installed: in a shard, or in the scratch folder
            ours = entry.parent.parent == self.root or entry.parent == (self.scratch or Path(tempfile.gettempdir()))
        else:
            ours = entry.parent == self.root / entry.name[:2]
        if not ours:
            raise InternalError(f"StageCache.discard: {entry} is not an entry of the stage cache {self.root}")
        return _remove(entry)

    def _fetch(self, key: str, final: Path) -> dict[str, Any] | None:
        """The remote entry ``key``, downloaded beside ``final`` and renamed into place (rule 1); None on a miss."""
        assert self.remote is not None
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        try:
            return _install(tmp, final) if self.remote.fetch(key, tmp) else None
        except OSError:  # the remote level is best effort: a miss
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class RemoteEntries(Protocol):
    """A second level of the stage cache that machines share (a store; ``edgec build --cache-store``).

    Both methods are best effort: a store that fails is a miss, never a failed build.
    """

    def fetch(self, key: str, into: Path) -> bool:
        """Write the complete entry ``key`` (its ``entry.json`` included) into the empty folder ``into``;
        False when there is none."""

    def store(self, key: str, entry: Path) -> None:
        """Copy the complete local entry folder ``entry`` to the remote level under ``key``."""


def _install(tmp: Path, final: Path, tries: int = 3) -> dict[str, Any] | None:
    """Rename the complete folder ``tmp`` to ``final``; the meta of what is there then, or None if ``final``
    stayed unusable for ``tries`` attempts (``tmp`` is left as it is then).

    Another build may have stored the same key first: a readable entry is kept (theirs is as good as ours, and
    ``tmp`` is deleted); one whose meta cannot be read is discarded first (rule 5).
    """
    for _ in range(tries):
        try:
            os.replace(tmp, final)
        except OSError:
            if (stored := _read_hit(final)) is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return stored
            _remove(final)
            continue
        return _read_hit(final)
    return None


def _read_hit(entry: Path) -> dict[str, Any] | None:
    """The meta of a complete entry, touching it (rule 2); None when absent, pruned meanwhile (rule 4) or
    unreadable (rule 5: a symlink, not a JSON object, or over :data:`META_MAX_BYTES`)."""
    path = entry / META
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(size + 1) if size <= META_MAX_BYTES else b""  # read(n) allocates n bytes first
        meta = json.loads(data) if 0 < len(data) <= META_MAX_BYTES else None
        if not isinstance(meta, dict):
            return None
        os.utime(path, follow_symlinks=False)
    except (OSError, ValueError):
        return None
    return meta


# -- edgec cache info / prune --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One complete entry: its folder, stage kind, size in bytes and last use (epoch seconds)."""

    path: Path
    kind: str
    size: int
    used: float


@dataclass
class CacheInfo:
    """What ``edgec cache info`` shows: complete entries and the debris of killed builds or prunes."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)
    """Folders being written, or left by a killed build (``.KEY-XXXX``, ``.trash-*``)."""

    @property
    def size(self) -> int:
        """Bytes in complete entries."""
        return sum(e.size for e in self.entries)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """``{kind: {"entries": n, "bytes": b}}``, kinds sorted."""
        kinds: dict[str, dict[str, int]] = {}
        for entry in self.entries:
            row = kinds.setdefault(entry.kind, {"entries": 0, "bytes": 0})
            row["entries"] += 1
            row["bytes"] += entry.size
        return dict(sorted(kinds.items()))

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``edgec cache info --json``."""
        return {"path": str(self.root), "entries": len(self.entries), "bytes": self.size,
                "stages": self.by_kind(), "partial": len(self.partial)}


def scan(root: Path) -> CacheInfo:
    """The entries under ``root`` (an absent folder is an empty cache)."""
    info = CacheInfo(root)
    for folder in _entry_folders(root):
        if folder.name.startswith("."):
            info.partial.append(folder)
            continue
        try:
            used = (folder / META).stat().st_mtime
            kind = (folder / STAGE).read_text().strip() if (folder / STAGE).is_file() else "unknown"
        except OSError:  # not complete (rule 1), or pruned meanwhile
            continue
        info.entries.append(Entry(folder, kind, _tree_size(folder), used))
    return info


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed and kept."""

    removed: int
    freed: int
    kept: int
    kept_bytes: int
    in_use: int
    """Entries kept because they were used in the last :data:`IN_USE_S` seconds though the limits asked for them."""


def prune(root: Path, older_than: float | None = None, max_size: int | None = None,
          now: float | None = None, in_use_s: float = IN_USE_S) -> PruneResult:
    """Delete entries unused for ``older_than`` seconds, then least recently used ones until at most
    ``max_size`` bytes remain; entries used in the last ``in_use_s`` seconds are kept (rule 4), and stale
    temporary folders are removed (rule 3)."""
    now = time.time() if now is None else now
    info = scan(root)
    for folder in info.partial:
        _remove_stale(folder, now)
    doomed, in_use = _choose(sorted(info.entries, key=lambda e: e.used), older_than, max_size, now, in_use_s)
    removed = [e for e in doomed if _remove(e.path)]
    gone = {e.path for e in removed}
    kept = [e for e in info.entries if e.path not in gone]
    return PruneResult(len(removed), sum(e.size for e in removed), len(kept), sum(e.size for e in kept), in_use)


def _choose(entries: list[Entry], older_than: float | None, max_size: int | None, now: float,
            in_use_s: float) -> tuple[list[Entry], int]:
    """The entries to delete, least recently used first, and how many the limits wanted but are in use."""
    total = sum(e.size for e in entries)
    doomed, in_use = [], 0
    for entry in entries:
        old = older_than is not None and now - entry.used > older_than
        over = max_size is not None and total > max_size
        if not (old or over):
            continue
        if now - entry.used < in_use_s:
            in_use += 1
            continue
        doomed.append(entry)
        total -= entry.size
    return doomed, in_use


def _remove(entry: Path) -> bool:
    """Rename ``entry`` out of the way, then delete it (rule 4); False when it is already gone."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
    try:
        os.replace(entry, trash)
    except OSError:
        return False
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:  # a file or a link where an entry should be: removed, never followed
        trash.unlink(missing_ok=True)
    return True


def _remove_stale(folder: Path, now: float) -> None:
    try:
        stale = now - folder.stat().st_mtime > STALE_TEMP_S or folder.name.startswith(".trash-")
    except OSError:
        return
    if stale:
        shutil.rmtree(folder, ignore_errors=True)


def _entry_folders(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for shard in sorted(root.iterdir()):
        if shard.is_dir() and not shard.is_symlink() and len(shard.name) == 2:
            yield from (p for p in sorted(shard.iterdir()) if p.is_dir() and not p.is_symlink())


def _tree_size(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
    return total
