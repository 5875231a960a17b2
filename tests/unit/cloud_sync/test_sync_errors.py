"""A store that does not answer is a sync error (exit 9), not an integrity error: nothing failed a check.

The checks that build nothing; the builds are in tests/integration/cloud_sync/test_sync_errors.py."""

from __future__ import annotations

from edgec.core import errors


def test_store_unavailable_is_a_sync_error_and_not_an_integrity_error() -> None:
    from edgec.cloud_sync.store import StoreUnavailable

    assert issubclass(StoreUnavailable, errors.SyncError) and not issubclass(StoreUnavailable, errors.IntegrityError)
    assert StoreUnavailable("store s3://x failed on k: refused").one_line() == "edgec: sync error: store s3://x failed on k: refused"
