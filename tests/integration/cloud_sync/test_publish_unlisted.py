"""``edgec publish`` ships a bundle's listed, hashed files only: a file the manifest does not list (an editor's
backup, a note, anything dropped into the folder) was packed into the release and reached every device unhashed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from edgec.cloud_sync import publish as publish_mod
from edgec.core.errors import EXIT_INTEGRITY
from tests.support.cli import cli


def test_publish_refuses_a_bundle_holding_a_file_its_manifest_does_not_list(bundles: dict, keys: Path,
                                                                           tmp_path: Path) -> None:
    bundle = tmp_path / bundles["v1"].name
    shutil.copytree(bundles["v1"], bundle)
    (bundle / "notes.txt").write_text("not part of the build\n")
    store = tmp_path / "store"
    code, out, err = cli("publish", str(bundle), "--store", str(store), "--channel", "stable", "--keys", str(keys))
    assert code == EXIT_INTEGRITY and "notes.txt" in err and "does not list" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not store.exists() or not any(p.name.endswith(".tar") for p in store.rglob("*"))  # nothing uploaded


def test_the_archive_is_the_same_with_or_without_python_caches(bundles: dict, tmp_path: Path) -> None:
    bundle = tmp_path / bundles["v1"].name
    shutil.copytree(bundles["v1"], bundle)
    (bundle / "edgec_shim" / "__pycache__").mkdir()
    (bundle / "edgec_shim" / "__pycache__" / "base.cpython-311.pyc").write_bytes(b"\0" * 16)
    packed = publish_mod.pack_bundle(bundle)
    assert hashlib.sha256(packed).digest() == hashlib.sha256(publish_mod.pack_bundle(bundles["v1"])).digest()
