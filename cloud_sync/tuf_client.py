"""The device side of TUF: python-tuf's ``ngclient.Updater`` reading from a :class:`Store`.

The updater does every check of the TUF client workflow (root chain, thresholds, versions against
rollback, expiry, snapshot and target hashes); this module only supplies the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.cloud_sync.store import NotFound, Store

URL_PREFIX = "edgec-store:/"


def _fetcher_class() -> type:
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient.fetcher import FetcherInterface

    class StoreFetcher(FetcherInterface):  # type: ignore[misc]
        """Maps ``edgec-store:/<key>`` URLs to store reads; a missing object is HTTP 404 to the updater."""

        def __init__(self, store: Store) -> None:
            self.store = store

        def _fetch(self, url: str) -> Iterator[bytes]:
            key = url[len(URL_PREFIX):] if url.startswith(URL_PREFIX) else url
            try:
                return iter([self.store.get(key)])
            except NotFound:
                raise DownloadHTTPError(f"{key} not found in {self.store.url}", 404) from None

    return StoreFetcher


def open_updater(store: Store, metadata_dir: Path, trusted_root: bytes | None = None) -> Any:
    """An ``ngclient.Updater`` for the repository in ``store``.

    Args:
        store: where the repository lives.
        metadata_dir: the device's trusted metadata cache (created if missing).
        trusted_root: root metadata to trust when the cache has none yet.
    """
    from tuf.ngclient import Updater

    metadata_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = None if (metadata_dir / "root.json").is_file() else trusted_root
    return Updater(str(metadata_dir), URL_PREFIX + "tuf/metadata/", None, URL_PREFIX + "tuf/targets/",
                   fetcher=_fetcher_class()(store), bootstrap=bootstrap)


def fetch_target(updater: Any, store: Store, path: str) -> tuple[Any, bytes]:
    """A small target (a channel document): its TargetFile and its bytes, verified.

    Raises:
        LookupError: the target is not listed.
        tuf.api.exceptions.RepositoryError: bytes do not match the metadata.
    """
    from edgec.cloud_sync.release import target_key

    info = updater.get_targetinfo(path)
    if info is None:
        raise LookupError(f"{path} is not in the signed release metadata")
    try:
        data = store.get(target_key(path, info.hashes["sha256"]))
    except NotFound:
        raise LookupError(f"{path} is listed in the metadata but missing from {store.url}") from None
    info.verify_length_and_hashes(data)
    return info, data
