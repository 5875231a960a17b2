"""Staged rollouts: deterministic cohorts, the abort rule evaluated from device reports in the store,
and the fleet summary."""

from __future__ import annotations

import json
from pathlib import Path

from edgec.cloud_sync.fleet import write_report
from edgec.cloud_sync.publish import channels, publish
from edgec.cloud_sync.store import open_store
from tests.support.cli import cli
from tests.support.stores import repository


def _report(store_url: str, device: str, state: str, release: str, active: str, error: str | None = None) -> None:
    write_report(open_store(store_url), {"device_id": device, "channel": "stable", "state": state, "release": release,
                                         "bundle": "tinyv2-onnx-fp32", "active": active, "latency_ms": 0.1,
                                         "error": error, "time": "2026-01-01T00:00:00+00:00"})


def test_rollout_check_halts_only_past_the_failure_rate_with_enough_devices(store_url: str, keys: Path, bundles: dict) -> None:
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    v2 = publish(bundles["v2"], repo, "stable", percent=50, abort={"max_failure_rate": 0.25, "min_devices": 4}, verify=False)
    v1 = v2.doc["current"]
    common = ["--channel", "stable", "--store", store_url, "--keys", str(keys)]
    _report(store_url, "d1", "rolled_back", v2.sha256, v1, "golden parity failed")
    _report(store_url, "d2", "rolled_back", v2.sha256, v1, "golden parity failed")
    _report(store_url, "d3", "committed", v2.sha256, v2.sha256)
    code, out, _ = cli("rollout", "check", *common)
    assert code == 0 and "continues" in out and "2 of 3" in out  # 67% failing, but only 3 devices reported
    _report(store_url, "d4", "committed", v2.sha256, v2.sha256)
    code, out, _ = cli("rollout", "check", *common)
    assert code == 0 and "HALTED" in out and "2 of 4" in out
    doc = channels(repository(store_url, keys))["stable"]
    assert doc["rollout"]["state"] == "halted" and "2 of 4" in doc["rollout"]["reason"]
    assert cli("rollout", "set", "--resume", *common)[0] == 0
    assert channels(repository(store_url, keys))["stable"]["rollout"]["state"] == "active"


def test_rollout_check_does_not_halt_below_the_failure_rate(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    v2 = publish(bundles["v2"], repo, "stable", percent=100, verify=False)
    assert v2.doc["current"] == v2.sha256  # 100% goes straight to current: nothing to abort
    v3 = publish(bundles["v3"], repo, "stable", percent=60, abort={"max_failure_rate": 0.2, "min_devices": 5}, verify=False)
    for i in range(5):
        _report(store_url, f"d{i}", "rolled_back" if i == 0 else "committed", v3.sha256, v3.sha256)
    code, out, _ = cli("rollout", "check", "--channel", "stable", "--store", store_url, "--keys", str(keys))
    assert code == 0 and "1 of 5" in out and "continues" in out


def test_fleet_status_summarises_versions_states_and_failures(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    v1 = publish(bundles["v1"], repo, "stable", verify=False)
    v2 = publish(bundles["v2"], repo, "stable", percent=50, verify=False)
    _report(store_url, "d1", "committed", v2.sha256, v2.sha256)
    _report(store_url, "d2", "up_to_date", v1.sha256, v1.sha256)
    _report(store_url, "d3", "rolled_back", v2.sha256, v1.sha256, "median latency 0.2 ms is over the budget")
    code, out, err = cli("fleet", "status", "--store", store_url, "--json")
    assert code == 0, err
    stable = json.loads(out)["stable"]
    assert stable["devices"] == 3
    assert stable["versions"] == {bundles["v1"].name: 2, bundles["v2"].name: 1}
    assert stable["states"] == {"committed": 1, "up_to_date": 1, "rolled_back": 1}
    assert stable["failures"] == [{"device_id": "d3", "state": "rolled_back", "bundle": "tinyv2-onnx-fp32",
                                   "error": "median latency 0.2 ms is over the budget"}]
    assert stable["rollout"]["percent"] == 50 and stable["abort"]["failures"] == 1
    code, text, _ = cli("fleet", "status", "--store", store_url)
    assert "channel stable" in text and "rolled_back d3" in text and "50% active" in text
