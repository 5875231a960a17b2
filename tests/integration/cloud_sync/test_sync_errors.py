"""A store that does not answer is a sync error (exit 9), not an integrity error: nothing failed a check."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.core import errors
from tests.support.cli import cli
from tests.support.stores import S3_ENV, free_port


def _dead_s3() -> str:
    return f"s3://fleet/releases?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"


def test_publish_to_an_s3_store_on_a_closed_port_is_a_one_line_sync_error(
        bundles: dict[str, Path], keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    dead = _dead_s3()
    code, out, err = cli("publish", str(bundles["v1"]), "--store", dead, "--channel", "stable", "--keys", str(keys))
    assert code == errors.EXIT_SYNC == 9, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("edgec: sync error: store ") and "127.0.0.1" in lines[0], lines[0]
    assert "check the store URL, network and credentials" in lines[0], lines[0]


