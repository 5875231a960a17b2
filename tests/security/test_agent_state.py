# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
"""A device whose ``state.json`` is lost or damaged keeps running the bundle in a slot that still verifies.

Attack / accident: a power cut or a full disk truncates ``state.json`` (or something writes garbage into it).
Before the hardening the agent then treated the device as new: it removed ``current`` and downloaded the
release again into the very slot it was running, so with the store out of reach the device ran nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgec.cloud_sync.publish import publish
from edgec.cloud_sync.store import open_store
from tests.support.agent import active_bundle, run_agent, state
from tests.support.stores import S3_ENV, free_port, repository  # noqa: F401 - fixtures
from tests.support.sync_fixtures import bundles, key_template, keys  # noqa: F401 - fixtures


def _installed(tmp_path: Path, keys: Path, bundles: dict, *names: str) -> tuple[str, Path, list]:
    """A local store and a device that committed each of ``names`` in turn."""
    store_url, device = str(tmp_path / "store"), tmp_path / "dev"
    repo, published = repository(store_url, keys), []
    for name in names:
        published.append(publish(bundles[name], repo, "stable", verify=False))
        proc = run_agent(store_url, "dev-1", device, keys)
        assert proc.returncode == 0, proc.stderr
    return store_url, device, published


def _dead_store() -> str:
    return f"s3://fleet/releases?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"


def test_truncated_state_keeps_the_verified_slot_without_downloading_again(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url, device, (v1,) = _installed(tmp_path, keys, bundles, "v1")
    link, model = os.readlink(device / "current"), (device / "current" / "model.onnx").stat().st_ino
    text = (device / "state.json").read_text()
    (device / "state.json").write_text(text[: len(text) // 2])
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0 and "state health" in proc.stderr and "committed" in proc.stderr, proc.stderr
    assert "state.json is not JSON" in proc.stderr and "kept slot a" in proc.stderr, proc.stderr
    assert "state download" not in proc.stderr, proc.stderr
    assert os.readlink(device / "current") == link
    assert (device / "current" / "model.onnx").stat().st_ino == model  # the running files were never replaced
    assert active_bundle(device) == "tinyv1"  # files verify and golden parity holds
    assert state(device)["committed"] == {"slot": "a", "sha256": v1.sha256, "bundle": v1.record["bundle"]}
    report = json.loads(open_store(store_url).get("reports/dev-1.json"))
    assert "state.json" in report["state_repaired"] and "slot a" in report["state_repaired"], report
    assert report["active"] == v1.sha256
    proc = run_agent(store_url, "dev-1", device, keys)  # the slot still knows its release: nothing to fetch
    assert proc.returncode == 0 and "up_to_date" in proc.stderr and "state download" not in proc.stderr, proc.stderr


def test_truncated_state_with_the_store_unreachable_keeps_current_and_reports_later(tmp_path: Path, keys: Path,
                                                                                   bundles: dict) -> None:
    store_url, device, _ = _installed(tmp_path, keys, bundles, "v1")
    (device / "state.json").write_text('{"committed": {"slot": "a", "sha')
    proc = run_agent(_dead_store(), "dev-1", device, keys, env=S3_ENV)
    assert proc.returncode == 0 and "committed" in proc.stderr and "could not write the report" in proc.stderr, proc.stderr
    assert "state.json is not JSON" in proc.stderr and "kept slot a" in proc.stderr, proc.stderr
    assert os.readlink(device / "current") == "slots/a"
    assert active_bundle(device) == "tinyv1"
    assert state(device)["state_repaired"], state(device)  # kept until a report reaches the store
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0 and "up_to_date" in proc.stderr and "state download" not in proc.stderr, proc.stderr
    report = json.loads(open_store(store_url).get("reports/dev-1.json"))
    assert "kept slot a" in report["state_repaired"], report
    assert state(device)["state_repaired"] is None


def test_garbage_state_and_a_corrupted_current_slot_fall_back_to_the_slot_that_verifies(tmp_path: Path, keys: Path,
                                                                                      bundles: dict) -> None:
    store_url, device, (v1, v2) = _installed(tmp_path, keys, bundles, "v1", "v2")
    assert os.readlink(device / "current") == "slots/b"
    (device / "state.json").write_text(json.dumps({"committed": "b", "previous": [], "trial": 3, "failed": [],
                                                   "last_report": None}))
    model = device / "slots" / "b" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_agent(_dead_store(), "dev-1", device, keys, env=S3_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "wrong types in committed, previous, trial, failed" in proc.stderr, proc.stderr
    assert "kept slot a" in proc.stderr and "slot b" in proc.stderr and "model.onnx" in proc.stderr, proc.stderr
    assert os.readlink(device / "current") == "slots/a"
    assert active_bundle(device) == "tinyv1"
    assert state(device)["committed"] == {"slot": "a", "sha256": v1.sha256, "bundle": v1.record["bundle"]}
    # with the store back, the channel's release is installed again into the slot that failed
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0 and "committed" in proc.stderr, proc.stderr
    assert os.readlink(device / "current") == "slots/b" and active_bundle(device) == "tinyv2"
    report = json.loads(open_store(store_url).get("reports/dev-1.json"))
    assert report["state"] == "committed" and report["active"] == v2.sha256
    assert "slot b" in report["state_repaired"] and "kept slot a" in report["state_repaired"], report


def test_missing_state_with_an_installed_slot_is_repaired_not_treated_as_a_new_device(tmp_path: Path, keys: Path,
                                                                                     bundles: dict) -> None:
    _, device, _ = _installed(tmp_path, keys, bundles, "v1")
    (device / "state.json").unlink()
    proc = run_agent(_dead_store(), "dev-1", device, keys, env=S3_ENV)
    assert proc.returncode == 0 and "state.json is missing" in proc.stderr and "kept slot a" in proc.stderr, proc.stderr
    assert os.readlink(device / "current") == "slots/a" and active_bundle(device) == "tinyv1"
