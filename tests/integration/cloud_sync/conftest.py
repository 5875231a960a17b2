"""Fixtures for publishing and the device agent: moto's S3 server on 127.0.0.1 (real HTTP, started
here, not in-process patching), tiny bundles built once, fresh keys (defined in tests/support/sync_fixtures.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("obstore")
pytest.importorskip("tuf")

from tests.support.sync_fixtures import bundles, key_template, keys, moto_server, store_url  # noqa: E402, F401
