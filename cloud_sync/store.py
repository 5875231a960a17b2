"""Object storage behind one small interface, over ``obstore``.

A store URL names where releases live:

- a plain path or ``file:///abs/path``: a local directory (the default, and what the demo uses);
- ``s3://bucket/prefix``: S3 or any S3-protocol server. Credentials and region come from the usual
  ``AWS_*`` environment variables; query options ``endpoint=`` (``http://`` turns on plain HTTP),
  ``region=`` and ``virtual_hosted_style_request=`` are passed to obstore;
- ``gs://bucket/prefix`` and ``az://container/prefix``: configured from ``GOOGLE_*`` / ``AZURE_*``.

Writes that must not lose a concurrent writer's work are conditional: :meth:`Store.put_new` creates an
object only if it does not exist (``If-None-Match: *``), :meth:`Store.put_if` replaces it only if it is
still the version that was read (``If-Match: <etag>``). obstore's local store has no compare-and-swap,
so a local directory serialises :meth:`Store.put_if` with an advisory file lock (``fcntl.flock``); that
protects publishers on the same machine, which is the only place a local directory is shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgec.core.errors import ConfigError, SyncError, brief

CONNECT_TIMEOUT = "3s"
REQUEST_TIMEOUT = "60s"
RETRIES = 2
RETRY_TIMEOUT = timedelta(seconds=10)
_S3_QUERY_KEYS = {"endpoint", "region", "virtual_hosted_style_request"}


class StoreUnavailable(SyncError):
    """The store could not be reached or answered with an error other than not-found or conflict.

    A sync error (exit 9), not an integrity error: nothing that was read failed a check.
    """


class Conflict(Exception):
    """A conditional write lost: the object already exists, or changed since it was read."""


class NotFound(KeyError):
    """No object at that key."""


@dataclass(frozen=True)
class ObjectMeta:
    """Size and version token of a stored object."""

    key: str
    size: int
    etag: str | None


class Store:
    """A bucket or directory of objects addressed by ``/``-separated keys.

    Args:
        url: the store URL it was opened from (for messages).
        backend: the obstore store.
        lock_dir: for local directories, where :meth:`put_if` takes its file locks.
    """

    def __init__(self, url: str, backend: Any, lock_dir: Path | None = None) -> None:
        self.url = url
        self._backend = backend
        self._lock_dir = lock_dir

    @property
    def is_local(self) -> bool:
        """True for a local directory."""
        return self._lock_dir is not None

    def get(self, key: str) -> bytes:
        """The whole object.

        Raises:
            NotFound: no object at ``key``.
            StoreUnavailable: the store failed.
        """
        import obstore

        with self._errors(key):
            return bytes(obstore.get(self._backend, key).bytes())

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and the version token that :meth:`put_if` compares against."""
        import obstore

        with self._errors(key):
            result = obstore.get(self._backend, key)
            data = bytes(result.bytes())
        return data, self._token(data, result.meta.get("e_tag"))

    def get_range(self, key: str, start: int, end: int, if_match: str | None = None) -> bytes:
        """Bytes ``[start, end)``; with ``if_match``, only while the object still has that ETag.

        Raises:
            Conflict: the object changed (its ETag is no longer ``if_match``).
        """
        import obstore

        options: dict[str, Any] = {"range": (start, end)}
        if if_match and not self.is_local:
            options["if_match"] = if_match
        with self._errors(key):
            return bytes(obstore.get(self._backend, key, options=options).bytes())  # type: ignore[arg-type]

    def head(self, key: str) -> ObjectMeta | None:
        """Size and ETag, or None when there is no such object."""
        import obstore

        try:
            with self._errors(key):
                meta = obstore.head(self._backend, key)
        except NotFound:
            return None
        return ObjectMeta(key, int(meta["size"]), meta.get("e_tag"))

    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) an object atomically."""
        import obstore

        with self._errors(key):
            obstore.put(self._backend, key, data, mode="overwrite")

    def put_new(self, key: str, data: bytes) -> bool:
        """Create the object only if nothing is at ``key``; False when something already was."""
        import obstore

        try:
            with self._errors(key):
                obstore.put(self._backend, key, data, mode="create")
        except Conflict:
            return False
        return True

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Replace the object only if it is still the version ``token`` (None: only if absent).

        Raises:
            Conflict: another writer got there first.
        """
        import obstore

        if token is None:
            if not self.put_new(key, data):
                raise Conflict(key)
            return
        if self.is_local:
            with self._local_lock(key):
                _, current = self.get_versioned(key)
                if current != token:
                    raise Conflict(key)
                self.put(key, data)
            return
        with self._errors(key):
            obstore.put(self._backend, key, data, mode={"e_tag": token})

    def list(self, prefix: str) -> list[ObjectMeta]:
        """Objects whose key starts with ``prefix`` (a folder, ending in ``/``), sorted by key."""
        import obstore

        found: list[ObjectMeta] = []
        with self._errors(prefix):
            for batch in obstore.list(self._backend, prefix.rstrip("/") or None):
                found.extend(ObjectMeta(m["path"], int(m["size"]), m.get("e_tag")) for m in batch)
        return sorted((m for m in found if m.key.startswith(prefix)), key=lambda m: m.key)

    def delete(self, key: str) -> None:
        """Remove an object (no error if it is already gone)."""
        import obstore

        with contextlib.suppress(NotFound), self._errors(key):
            obstore.delete(self._backend, key)

    def _token(self, data: bytes, etag: str | None) -> str:
        # Local ETags come from inode and mtime, which can repeat; the content hash cannot.
        if self.is_local or not etag:
            return "sha256:" + hashlib.sha256(data).hexdigest()
        return etag

    @contextlib.contextmanager
    def _local_lock(self, key: str) -> Iterator[None]:
        assert self._lock_dir is not None
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        path = self._lock_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError

        try:
            yield
        except (FileNotFoundError, NotFoundError):
            raise NotFound(key) from None
        except (AlreadyExistsError, PreconditionError):
            raise Conflict(key) from None
        except (Conflict, NotFound):
            raise
        except (BaseError, OSError) as exc:  # obstore's GenericError & co. (remote), OSError subclasses (local)
            text = brief(exc, None)
            if "412 Precondition Failed" in text or "409 Conflict" in text:
                raise Conflict(key) from None
            raise StoreUnavailable(f"store {self.url} failed on {key}: {brief(text, 240)}",
                                   hint="check the store URL, network and credentials") from None


def open_store(url: str | Path) -> Store:
    """Open a store from its URL (see the module docstring).

    Raises:
        ConfigError: unknown scheme or bad options.
        MissingDependencyError: obstore is not installed.
    """
    from edgec.core.errors import require

    require("obstore", "sync", "object storage")
    text = str(url)
    parts = urlsplit(text)
    if parts.scheme in ("", "file"):
        return _open_local(Path(parts.path if parts.scheme == "file" else text), text)
    if parts.scheme in ("s3", "s3a"):
        return _open_s3(parts, text)
    if parts.scheme in ("gs", "az", "azure", "abfs", "abfss"):
        return _open_generic(text)
    raise ConfigError(f"unsupported store URL {text!r}; expected a directory, file://, s3://, gs:// or az://")


def _open_local(root: Path, url: str) -> Store:
    from obstore.store import LocalStore

    root = root.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"store {url} is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    return Store(url, LocalStore(str(root), mkdir=True), lock_dir=root / ".edgec-locks")


def _client_options(endpoint: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
    if endpoint and endpoint.startswith("http://"):
        options["allow_http"] = True
    return options


def _open_s3(parts: Any, url: str) -> Store:
    from obstore.store import S3Store

    if not parts.netloc:
        raise ConfigError(f"store URL {url!r} names no bucket")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - _S3_QUERY_KEYS
    if unknown:
        raise ConfigError(f"unknown store option(s) {', '.join(sorted(unknown))} in {url!r}; expected {', '.join(sorted(_S3_QUERY_KEYS))}")
    endpoint = query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL")
    config: dict[str, Any] = {k: v for k, v in query.items() if k != "virtual_hosted_style_request"}
    if "virtual_hosted_style_request" in query:
        config["virtual_hosted_style_request"] = query["virtual_hosted_style_request"].lower() == "true"
    if endpoint:
        config["endpoint"] = endpoint
    backend = S3Store(parts.netloc, prefix=parts.path.strip("/") or None, config=config,  # type: ignore[arg-type]
                      client_options=_client_options(endpoint),  # type: ignore[arg-type]
                      retry_config={"max_retries": RETRIES, "retry_timeout": RETRY_TIMEOUT})
    return Store(url, backend)


def _open_generic(url: str) -> Store:
    from obstore.exceptions import BaseError
    from obstore.store import from_url

    try:
        backend = from_url(url, client_options=_client_options(None),  # type: ignore[call-overload]
                           retry_config={"max_retries": RETRIES, "retry_timeout": RETRY_TIMEOUT})
    except (BaseError, ValueError) as exc:  # GenericError: the URL or its configuration; ValueError: bad options
        raise ConfigError(f"cannot open store {url!r}: {brief(exc, 200)}") from None
    return Store(url, backend)
