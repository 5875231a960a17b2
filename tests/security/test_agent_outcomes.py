# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
"""An update attempt that fails on the store's side is a failed attempt: non-zero exit, a report, the bundle kept.

Before the hardening a deleted bundle object and one overwritten during the download ended as
``no_release`` with exit 0 and no report (the fleet never heard of it), and a targets file whose length no
longer matched the signed snapshot was reported as an unreachable store (again: no report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgec.cloud_sync import agent as agent_mod
from edgec.cloud_sync.publish import publish
from edgec.cloud_sync.release import META, target_key
from edgec.cloud_sync.store import Store, open_store
from edgec.core.errors import EXIT_INTEGRITY
from tests.support.agent import active_bundle, run_agent
from tests.support.stores import repository
from tests.support.sync_fixtures import bundles, key_template, keys, moto_server, store_url  # noqa: F401 - fixtures


def _device_on_v1(store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> tuple[Any, Path]:
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0, proc.stderr
    return repo, device


def _tuf_bytes(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _report(store_url: str) -> dict:
    return json.loads(open_store(store_url).get("reports/dev-1.json"))


def test_deleted_bundle_object_is_a_reported_download_failure(store_url: str, keys: Path, bundles: dict,
                                                              tmp_path: Path) -> None:
    repo, device = _device_on_v1(store_url, keys, bundles, tmp_path)
    v2 = publish(bundles["v2"], repo, "stable", verify=False)
    open_store(store_url).delete(target_key(v2.target_path, v2.sha256))
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgec: integrity error: agent download_failed") and "missing from the store" in last, last
    report = _report(store_url)
    assert report["state"] == "download_failed" and report["release"] == v2.sha256 and "missing" in report["error"]
    assert active_bundle(device) == "tinyv1"


class OverwrittenMidDownload:
    """The store, except that the bundle object is replaced by other bytes right after the first range read."""

    def __init__(self, store: Store, key: str, replacement: bytes) -> None:
        self.store, self.key, self.replacement, self.done = store, key, replacement, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_range(self, key: str, start: int, end: int, if_match: str | None = None) -> bytes:
        data = self.store.get_range(key, start, end, if_match=if_match)
        if key == self.key and not self.done:
            self.done = True
            self.store.put(key, self.replacement)
        return data


@pytest.mark.parametrize("replacement", ["shorter", "same_length"])
def test_bundle_overwritten_during_the_download_is_a_reported_download_failure(
        store_url: str, keys: Path, bundles: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], replacement: str) -> None:
    import edgec.cloud_sync.store as store_mod

    repo, device = _device_on_v1(store_url, keys, bundles, tmp_path)
    v2 = publish(bundles["v2"], repo, "stable", verify=False)
    key = target_key(v2.target_path, v2.sha256)
    size = len(open_store(store_url).get(key))
    other = b"\x00" * (size // 3 if replacement == "shorter" else size)
    monkeypatch.setattr(agent_mod, "CHUNK", 4096)
    monkeypatch.setattr(store_mod, "open_store", lambda url: OverwrittenMidDownload(open_store(url), key, other))
    code = agent_mod.main(["--store", store_url, "--device-id", "dev-1", "--root", str(device)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == EXIT_INTEGRITY, last
    assert last.startswith("edgec: integrity error: agent download_failed") and "changed during the download" in last, last
    report = _report(store_url)
    assert report["state"] == "download_failed" and report["release"] == v2.sha256, report
    assert active_bundle(device) == "tinyv1"
    assert not list((device / "downloads").glob("*.part"))


def test_targets_metadata_longer_than_signed_is_refused_and_reported_not_unreachable(tmp_path: Path, keys: Path,
                                                                                    bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo, device = _device_on_v1(store_url, keys, bundles, tmp_path)
    v2 = publish(bundles["v2"], repo, "stable", verify=False)
    store = open_store(store_url)
    latest = max((m.key for m in store.list(META) if m.key.endswith(".targets.json")),
                 key=lambda k: int(k[len(META):].split(".")[0]))
    raw = store.get(latest)
    doc = json.loads(raw)
    assert _tuf_bytes(doc) == raw  # re-serialised exactly as python-tuf wrote it
    doc["signed"]["targets"][v2.target_path]["length"] *= 1000
    store.put(latest, _tuf_bytes(doc))  # not re-signed, and longer than the snapshot says
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "unreachable" not in proc.stderr, proc.stderr
    assert "refused" in proc.stderr and "DownloadLengthMismatchError" in proc.stderr, proc.stderr
    report = _report(store_url)
    assert report["state"] == "refused" and "DownloadLengthMismatchError" in report["error"], report
    assert active_bundle(device) == "tinyv1"
