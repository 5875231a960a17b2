"""What a publisher has seen of each store's release metadata, kept beside its keys. Standard library only.

Anyone who can write to the store can put back an older copy of ``tuf/metadata/``. Devices refuse the
replayed files, but a publisher that re-signed that old state would hand the fleet a freshly signed
downgrade. So every publisher records, per store, the highest version of each role it has verified or
written (``<keys>/seen.json``, mode 0600, replaced atomically under a lock on the keys folder), and
:meth:`SeenRecord.check` refuses a store whose metadata went backwards. A publisher with no record for
a store trusts what it finds there on first use, and records it.

Callers read the record *before* they read the store, and check against that: a version recorded
meanwhile by a concurrent publisher sharing the keys folder was committed after the read began, so
it is no sign of a rollback.

The record looks like ``{"schema": 1, "stores": {"<store id>": {"root": 2, "timestamp": 9,
"snapshot": 7, "targets": 7}}}``; the store id is the absolute directory of a local store, otherwise
its URL (query options sorted).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgec.core.errors import ConfigError, IntegrityError

RECORD = "seen.json"
SCHEMA = 1
ROLE_ORDER = ("root", "timestamp", "snapshot", "targets")


def store_id(url: str) -> str:
    """A stable name for a store, whatever spelling of its URL was used."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return str(Path(parts.path if parts.scheme == "file" else url).expanduser().resolve())
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), query, ""))


@dataclass(frozen=True)
class SeenRecord:
    """The versions one publisher (one keys folder) has seen in one store.

    Args:
        folder: the keys folder that holds the record.
        url: the store's URL, as given (for messages).
    """

    folder: Path
    url: str

    @property
    def path(self) -> Path:
        """The record file."""
        return self.folder / RECORD

    def versions(self) -> dict[str, int]:
        """The highest version of each role seen in this store (empty: never seen it).

        Raises:
            IntegrityError: the record file is not what edgec writes.
        """
        stores = self._read().get("stores", {})
        found = stores.get(store_id(self.url), {})
        if not isinstance(found, dict) or not all(isinstance(v, int) for v in found.values()):
            raise self._corrupt("the entry of this store is not a map of role versions")
        return dict(found)

    def check(self, found: dict[str, int], seen: dict[str, int]) -> None:
        """Refuse metadata older than what this publisher has seen in the store.

        Args:
            found: the version of each role the store holds now (verified signatures).
            seen: :meth:`versions`, read before the store was.

        Raises:
            IntegrityError: a role's version went backwards.
        """
        for role in ROLE_ORDER:
            if role in seen and role in found and found[role] < seen[role]:
                raise IntegrityError(
                    f"{self.url}: the store's {role} metadata (version {found[role]}) is older than the version "
                    f"{seen[role]} this publisher has seen (recorded in {self.path}); refusing to sign on top of it",
                    hint=self._hint())

    def check_absent(self, seen: dict[str, int]) -> None:
        """Refuse to create a new repository in a store where this publisher has seen one.

        Args:
            seen: :meth:`versions`, read before the store was found empty.

        Raises:
            IntegrityError: the record names this store.
        """
        if seen:
            raise IntegrityError(
                f"{self.url} holds no release repository, but this publisher has seen one there (timestamp version "
                f"{seen.get('timestamp')}, recorded in {self.path}); refusing to create a new one", hint=self._hint())

    def record(self, found: dict[str, int]) -> None:
        """Remember ``found`` (each role's version only ever grows), atomically, under a lock.

        Raises:
            ConfigError: the keys folder cannot be written.
            IntegrityError: the record file is not what edgec writes.
        """
        try:
            with self._locked():
                data = self._read()
                stores = data.setdefault("stores", {})
                entry = stores.setdefault(store_id(self.url), {})
                for role, version in found.items():
                    entry[role] = max(int(entry.get(role, 0)), version)
                data["schema"] = SCHEMA
                self._write(data)
        except OSError as exc:
            raise ConfigError(f"cannot record the metadata versions seen in {self.url} in {self.path}: {exc.strerror or exc}",
                              hint="the keys folder must be writable: edgec keeps there what it has seen, to refuse a rolled-back store") from None

    # -- internals -----------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"schema": SCHEMA, "stores": {}}
        except (OSError, ValueError) as exc:
            raise self._corrupt(str(exc)) from None
        if not isinstance(data, dict) or not isinstance(data.get("stores"), dict):
            raise self._corrupt("expected an object with 'stores'")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(prefix=".seen-", suffix=".tmp", dir=self.folder)  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _corrupt(self, why: str) -> IntegrityError:
        return IntegrityError(f"{self.path} is not the record of seen metadata versions that edgec writes: {why}",
                              hint="delete it to trust every store again on first use")

    def _hint(self) -> str:
        return (f"someone may have put back old metadata: restore the newest tuf/metadata/ objects; if the store "
                f"was reset on purpose, remove its entry from {self.path}")
