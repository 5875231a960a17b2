"""Publishing against a local directory and moto's S3 server over HTTP: content-addressed bundles,
signed TUF metadata that a real ngclient accepts, conditional writes under racing publishers, an
interrupted publish, promote/rollback, expiry refresh and key rotation."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from edgec.cloud_sync import publish as publish_mod
from edgec.cloud_sync.release import META, target_key
from edgec.cloud_sync.store import Conflict, open_store
from edgec.core import errors
from tests.support.cli import cli
from tests.support.stores import device_view, repository


def test_publish_uploads_bundle_by_sha256_and_a_device_verifies_the_release(store_url: str, keys: Path,
                                                                              bundles: dict, tmp_path: Path) -> None:
    code, out, err = cli("publish", str(bundles["v1"]), "--store", store_url, "--channel", "stable", "--keys", str(keys))
    assert code == 0, err
    archive = publish_mod.pack_bundle(bundles["v1"])
    sha = hashlib.sha256(archive).hexdigest()
    assert sha[:12] in out
    store = open_store(store_url)
    stored = store.get(target_key(f"bundles/{bundles['v1'].name}-{sha[:16]}.tar", sha))
    assert hashlib.sha256(stored).hexdigest() == sha
    doc = device_view(store_url, keys, tmp_path / "device")
    assert doc["current"] == sha
    assert doc["releases"][0]["bundle"] == bundles["v1"].name
    assert doc["releases"][0]["length"] == len(archive)


def test_bundle_archive_is_deterministic(bundles: dict) -> None:
    first = publish_mod.pack_bundle(bundles["v1"])
    assert first == publish_mod.pack_bundle(bundles["v1"])
    assert first != publish_mod.pack_bundle(bundles["v2"])


def test_conditional_writes_refuse_stale_and_duplicate_writers(store_url: str) -> None:
    store = open_store(store_url)
    assert store.put_new("meta/x.json", b"one")
    assert not store.put_new("meta/x.json", b"two")
    data, token = store.get_versioned("meta/x.json")
    assert data == b"one"
    store.put_if("meta/x.json", b"three", token)
    with pytest.raises(Conflict):
        store.put_if("meta/x.json", b"four", token)
    assert store.get("meta/x.json") == b"three"


def test_two_racing_publishers_both_land(store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> None:
    repository(store_url, keys)  # initialised once, then two independent publishers race
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def publisher(names: list[str], channel: str) -> None:
        try:
            repo = repository(store_url, keys)
            barrier.wait()
            for name in names:
                publish_mod.publish(bundles[name], repo, channel, percent=100, verify=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=publisher, args=(["v1", "v2"], "stable")),
               threading.Thread(target=publisher, args=(["v3", "v1"], "beta"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    stable = device_view(store_url, keys, tmp_path / "d1", "stable")
    beta = device_view(store_url, keys, tmp_path / "d2", "beta")
    assert [r["bundle"] for r in stable["releases"]] == [bundles["v1"].name, bundles["v2"].name]
    assert [r["bundle"] for r in beta["releases"]] == [bundles["v3"].name, bundles["v1"].name]


def test_racing_publishers_on_one_channel_keep_every_release(store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> None:
    repository(store_url, keys)
    barrier = threading.Barrier(3)

    def publisher(name: str) -> None:
        repo = repository(store_url, keys)
        barrier.wait()
        publish_mod.publish(bundles[name], repo, "stable", percent=100, verify=False)

    threads = [threading.Thread(target=publisher, args=(name,)) for name in ("v1", "v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    doc = device_view(store_url, keys, tmp_path / "device")
    assert sorted(r["bundle"] for r in doc["releases"]) == sorted(bundles[n].name for n in ("v1", "v2", "v3"))
    assert len(doc["history"]) == 2  # each later publish made the one before it history


def test_publish_interrupted_between_upload_and_metadata_changes_nothing_and_rerun_completes(
        store_url: str, keys: Path, bundles: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = repository(store_url, keys)
    publish_mod.publish(bundles["v1"], repo, "stable", verify=False)
    store = open_store(store_url)
    timestamp_before = store.get(META + "timestamp.json")

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed after the upload")

    monkeypatch.setattr(repo, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        publish_mod.publish(bundles["v2"], repo, "stable", verify=False)
    sha2 = hashlib.sha256(publish_mod.pack_bundle(bundles["v2"])).hexdigest()
    uploaded = [m.key for m in store.list("tuf/targets/bundles/") if sha2 in m.key]
    assert len(uploaded) == 1  # the archive is there ...
    assert store.get(META + "timestamp.json") == timestamp_before  # ... but no metadata names it
    assert device_view(store_url, keys, tmp_path / "d1")["current"] != sha2
    monkeypatch.undo()
    publish_mod.publish(bundles["v2"], repository(store_url, keys), "stable", verify=False)
    assert device_view(store_url, keys, tmp_path / "d2")["current"] == sha2
    assert [m.key for m in store.list("tuf/targets/bundles/") if sha2 in m.key] == uploaded


def test_promote_rollback_and_rollout_commands(store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> None:
    common = ["--store", store_url, "--keys", str(keys)]
    assert cli("publish", str(bundles["v1"]), "--channel", "stable", *common)[0] == 0
    code, out, err = cli("publish", str(bundles["v2"]), "--channel", "stable", "--percent", "10", *common)
    assert code == 0 and "rolling out to 10%" in out, err
    assert cli("rollout", "set", "--channel", "stable", "--percent", "50", *common)[0] == 0
    doc = device_view(store_url, keys, tmp_path / "d1")
    sha1, sha2 = (r["sha256"] for r in doc["releases"])
    assert doc["current"] == sha1 and doc["rollout"]["release"] == sha2 and doc["rollout"]["percent"] == 50
    assert cli("release", "promote", "--channel", "stable", *common)[0] == 0
    doc = device_view(store_url, keys, tmp_path / "d2")
    assert doc["current"] == sha2 and doc["rollout"] is None
    code, out, _ = cli("release", "rollback", "--channel", "stable", *common)
    assert code == 0 and bundles["v1"].name in out
    assert device_view(store_url, keys, tmp_path / "d3")["current"] == sha1


def test_refresh_renews_an_expired_timestamp(tmp_path: Path, keys: Path, bundles: dict) -> None:
    from tuf.api.exceptions import ExpiredMetadataError

    from edgec.cloud_sync.release import now

    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    publish_mod.publish(bundles["v1"], repo, "stable", verify=False)
    from datetime import timedelta

    repo.refresh_timestamp(expires=now() - timedelta(seconds=5))
    with pytest.raises(ExpiredMetadataError):
        device_view(store_url, keys, tmp_path / "d1")
    code, out, err = cli("release", "refresh", "--store", store_url, "--keys", str(keys), "--expires-hours", "2")
    assert code == 0 and "expires" in out, err
    assert device_view(store_url, keys, tmp_path / "d1")["current"]


@pytest.mark.parametrize("role", ["timestamp", "targets", "root"])
def test_key_rotation_is_followed_by_devices_holding_the_old_root(role: str, tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    publish_mod.publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "device"
    before = device_view(store_url, keys, device)  # trusts root v1 from now on
    code, out, err = cli("keys", "rotate", "--role", role, "--store", store_url, "--keys", str(keys))
    assert code == 0 and "root is now version 2" in out, err
    assert list(keys.glob("*.pem.retired"))
    publish_mod.publish(bundles["v2"], repository(store_url, keys), "stable", verify=False)
    after = device_view(store_url, keys, device)
    assert after["current"] != before["current"]
    assert (device / "root_history" / "2.root.json").is_file() or (device / "root.json").read_bytes() == open_store(store_url).get(META + "2.root.json")


def test_cli_bad_input_is_one_line_with_the_family_exit_code(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    code, _, err = cli("publish", str(tmp_path / "nope"), "--store", store_url, "--channel", "stable", "--keys", str(keys))
    assert code == errors.EXIT_CONFIG and "not a bundle directory" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("publish", str(bundles["v1"]), "--store", store_url, "--channel", "../x", "--keys", str(keys))
    assert code == errors.EXIT_CONFIG and "bad channel name" in err
    code, _, err = cli("publish", str(bundles["v1"]), "--store", store_url, "--channel", "s", "--keys", str(tmp_path / "nokeys"))
    assert code == errors.EXIT_CONFIG and "keys init" in err, err
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file() and ".edgec-locks" not in p.parts]
    code, _, err = cli("keys", "init", "--keys", str(keys))
    assert code == errors.EXIT_CONFIG and "already holds keys" in err
    code, _, err = cli("release", "promote", "--channel", "stable", "--store", str(tmp_path / "empty"), "--keys", str(keys))
    assert code == errors.EXIT_CONFIG and "no release repository" in err
    code, _, err = cli("publish", str(bundles["v1"]), "--store", "ftp://x/y", "--channel", "s", "--keys", str(keys))
    assert code == errors.EXIT_CONFIG and "unsupported store URL" in err


def test_publish_refuses_a_bundle_whose_files_do_not_match_its_manifest(tmp_path: Path, keys: Path, bundles: dict) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundles["v1"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    model = broken / manifest["model_file"]
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)
    store_url = str(tmp_path / "store")
    code, _, err = cli("publish", str(broken), "--store", store_url, "--channel", "stable", "--keys", str(keys))
    assert code == errors.EXIT_INTEGRITY, err
    assert not list((tmp_path / "store").rglob("*.tar"))
