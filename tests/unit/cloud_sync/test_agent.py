"""The device agent as a separate process against a local store and moto's S3 server: updates,
kills at every state, refused metadata and objects, an unreachable store and a full disk.

The checks that build nothing; the builds are in tests/integration/cloud_sync/test_agent.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgec.cloud_sync import agent as agent_mod
from edgec.core.errors import IntegrityError


def test_unpack_rejects_archive_members_that_leave_the_slot(tmp_path: Path) -> None:
    for name in ("../evil.txt", "/abs.txt", "a/../../evil.txt"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        archive = tmp_path / "bad.tar"
        archive.write_bytes(buffer.getvalue())
        with pytest.raises(IntegrityError, match="not a plain relative file"):
            agent_mod.unpack(archive, tmp_path / "slots" / "a")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "slots" / "a").exists()
