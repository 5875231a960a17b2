"""A publisher never signs on top of metadata older than it has seen (issue 16).

Anyone who can write to the store can put back an old copy of ``tuf/metadata/``. Devices refuse the
replayed files themselves, but a publisher that re-signed that old state (``publish``, ``release
refresh|promote|rollback``, ``rollout set|check``) would hand the whole fleet a freshly signed downgrade.
The publisher keeps the versions it has seen in its keys folder (``seen.json``), checks the store's
root against the trusted ``root.json`` there, and checks each role against the hashes and versions
that the role above it names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgec.cloud_sync.publish import pack_bundle
from edgec.cloud_sync.release import META
from edgec.cloud_sync.store import Store, open_store
from edgec.core.errors import EXIT_INTEGRITY
from tests.support.agent import active_bundle, run_agent
from tests.support.cli import assert_one_line_error, cli
from tests.support.stores import device_view
from tests.support.sync_fixtures import bundles, key_template, keys, moto_server, store_url  # noqa: F401 - fixtures


def saved_metadata(store: Store) -> dict[str, bytes]:
    """Every object under ``tuf/metadata/``: a copy of the metadata folder."""
    return {m.key: store.get(m.key) for m in store.list(META)}


def restore_metadata(store: Store, saved: dict[str, bytes]) -> None:
    """Put an old copy of the metadata folder back, as an attacker with write access would."""
    for meta in store.list(META):
        if meta.key not in saved:
            store.delete(meta.key)
    for key, data in saved.items():
        store.put(key, data)


def version(saved: dict[str, bytes], name: str) -> int:
    return int(json.loads(saved[META + name])["signed"]["version"])


def sha(bundle: Path) -> str:
    return hashlib.sha256(pack_bundle(bundle)).hexdigest()


def refused(result: tuple[int, str, str], *fragments: str) -> None:
    code, _, err = result
    assert_one_line_error(SimpleNamespace(returncode=code, stderr=err), EXIT_INTEGRITY, *fragments)


def fresh_keys(key_template: Path, folder: Path) -> Path:  # noqa: F811 - the fixture's value
    """A publisher that has never seen the store: the same keys, no record."""
    shutil.copytree(key_template, folder)
    assert not (folder / "seen.json").exists()
    return folder


def test_publish_refuses_a_store_whose_metadata_folder_was_restored_from_an_older_copy(
        store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> None:  # noqa: F811
    common = ["--store", store_url, "--keys", str(keys), "--channel", "stable", "--no-verify"]
    store = open_store(store_url)
    assert cli("publish", str(bundles["v1"]), *common)[0] == 0
    old = saved_metadata(store)
    assert cli("publish", str(bundles["v2"]), *common)[0] == 0
    new = saved_metadata(store)
    device = tmp_path / "device"
    assert device_view(store_url, keys, device)["current"] == sha(bundles["v2"])

    restore_metadata(store, old)
    refused(cli("publish", str(bundles["v3"]), *common), "timestamp", f"version {version(old, 'timestamp.json')}",
            f"version {version(new, 'timestamp.json')}")
    assert saved_metadata(store) == old  # nothing was signed on top of the old state
    assert not [m for m in store.list("tuf/targets/bundles/") if sha(bundles["v3"]) in m.key]  # nor uploaded
    from tuf.api.exceptions import BadVersionNumberError

    with pytest.raises(BadVersionNumberError):  # the device keeps refusing the replay: it stays on v2
        device_view(store_url, keys, device)

    restore_metadata(store, new)  # the operator puts the newer metadata back: publishing works again
    assert cli("publish", str(bundles["v3"]), *common)[0] == 0
    assert device_view(store_url, keys, device)["current"] == sha(bundles["v3"])


def test_every_resigning_command_refuses_a_rolled_back_store_and_the_agent_keeps_the_newer_release(
        tmp_path: Path, keys: Path, bundles: dict) -> None:  # noqa: F811
    url = str(tmp_path / "store")
    common = ["--store", url, "--keys", str(keys)]
    store = open_store(url)
    assert cli("publish", str(bundles["v1"]), "--channel", "stable", "--no-verify", *common)[0] == 0
    assert cli("publish", str(bundles["v2"]), "--channel", "stable", "--no-verify", "--percent", "50", *common)[0] == 0
    old = saved_metadata(store)  # v1 current, v2 rolling out to half the fleet
    assert cli("release", "promote", "--channel", "stable", *common)[0] == 0
    device = tmp_path / "device"
    assert run_agent(url, "dev-1", device, keys).returncode == 0
    assert active_bundle(device) == "tinyv2"

    restore_metadata(store, old)
    for command in (["release", "refresh"], ["release", "rollback", "--channel", "stable"],
                    ["release", "promote", "--channel", "stable"], ["rollout", "set", "--channel", "stable", "--percent", "0"],
                    ["rollout", "check", "--channel", "stable"],
                    ["publish", str(bundles["v3"]), "--channel", "stable", "--no-verify"]):
        refused(cli(*command, *common), "timestamp", "older than", str(keys / "seen.json"))
        assert saved_metadata(store) == old, command
    proc = run_agent(url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "BadVersionNumberError" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv2"


def test_publisher_refuses_a_store_whose_newer_root_was_deleted(tmp_path: Path, keys: Path, bundles: dict) -> None:  # noqa: F811
    url = str(tmp_path / "store")
    common = ["--store", url, "--keys", str(keys)]
    store = open_store(url)
    assert cli("publish", str(bundles["v1"]), "--channel", "stable", "--no-verify", *common)[0] == 0
    before_rotation = saved_metadata(store)
    assert cli("keys", "rotate", "--role", "timestamp", *common)[0] == 0
    restore_metadata(store, before_rotation)  # root v2 (which revoked the old timestamp key) is gone
    refused(cli("release", "refresh", *common), "root", "version 1", "version 2")
    assert saved_metadata(store) == before_rotation


@pytest.mark.parametrize("role", ["targets", "snapshot"])
def test_fresh_publisher_refuses_role_metadata_swapped_for_an_older_signed_copy(
        role: str, tmp_path: Path, keys: Path, key_template: Path, bundles: dict) -> None:  # noqa: F811
    url = str(tmp_path / "store")
    store = open_store(url)
    for name in ("v1", "v2"):
        assert cli("publish", str(bundles[name]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(keys))[0] == 0
    saved = saved_metadata(store)
    newest = max(int(k.rsplit("/", 1)[1].split(".")[0]) for k in saved if k.endswith(f".{role}.json"))
    store.put(META + f"{newest}.{role}.json", saved[META + f"{newest - 1}.{role}.json"])  # validly signed, older
    tampered = saved_metadata(store)
    newcomer = fresh_keys(key_template, tmp_path / "newcomer")
    refused(cli("publish", str(bundles["v3"]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(newcomer)),
            f"{newest}.{role}.json", "does not match")
    assert saved_metadata(store) == tampered


def test_publisher_refuses_to_recreate_a_repository_it_has_seen_in_an_emptied_store(
        tmp_path: Path, keys: Path, bundles: dict) -> None:  # noqa: F811
    url = str(tmp_path / "store")
    common = ["--store", url, "--keys", str(keys), "--channel", "stable", "--no-verify"]
    store = open_store(url)
    assert cli("publish", str(bundles["v1"]), *common)[0] == 0
    restore_metadata(store, {})
    refused(cli("publish", str(bundles["v2"]), *common), "no release repository", "timestamp version 2")
    assert saved_metadata(store) == {}


def test_publisher_refuses_a_store_rooted_in_another_root_than_its_trusted_root_json(
        tmp_path: Path, keys: Path, key_template: Path, bundles: dict) -> None:  # noqa: F811
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    url = str(tmp_path / "store")
    store = open_store(url)
    assert cli("publish", str(bundles["v1"]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(keys))[0] == 0
    root = Metadata.from_bytes(store.get(META + "1.root.json"))
    forged = copy.deepcopy(root)  # same online keys, but root keys the attacker holds
    attacker = CryptoSigner.generate_ed25519()
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    forged.signed.add_key(attacker.public_key, "root")
    forged.signed.roles["root"].threshold = 1
    forged.signatures.clear()
    forged.sign(attacker)
    store.put(META + "1.root.json", forged.to_bytes())
    tampered = saved_metadata(store)
    newcomer = fresh_keys(key_template, tmp_path / "newcomer")
    refused(cli("publish", str(bundles["v2"]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(newcomer)),
            "1.root.json", str(newcomer / "root.json"))
    assert saved_metadata(store) == tampered


def test_a_fresh_publisher_trusts_the_store_on_first_use_and_records_what_it_saw(
        tmp_path: Path, keys: Path, key_template: Path, bundles: dict) -> None:  # noqa: F811
    url = str(tmp_path / "store")
    store = open_store(url)
    assert cli("publish", str(bundles["v1"]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(keys))[0] == 0
    assert cli("publish", str(bundles["v2"]), "--channel", "stable", "--no-verify", "--store", url, "--keys", str(keys))[0] == 0
    newcomer = fresh_keys(key_template, tmp_path / "newcomer")
    code, out, err = cli("release", "refresh", "--store", url, "--keys", str(newcomer))
    assert code == 0, err
    record = newcomer / "seen.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    seen = json.loads(record.read_text())["stores"][str((tmp_path / "store").resolve())]
    saved = saved_metadata(store)
    assert seen == {"root": 1, "timestamp": version(saved, "timestamp.json"), "snapshot": 3, "targets": 3}
    assert not [p.name for p in newcomer.iterdir() if p.name.startswith(".seen")]  # no temp file left behind
