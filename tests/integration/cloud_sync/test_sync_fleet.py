# ruff: noqa: F811 - the fixtures imported below are parameters of the test
"""A small fleet against moto's S3 server over HTTP: eight agents with different device ids, a staged
rollout at 50%, then a release that fails its health check everywhere and halts at its threshold."""

from __future__ import annotations

import json
from pathlib import Path

from edgec.cloud_sync import rollout
from edgec.cloud_sync.health import check_health
from edgec.core.errors import EXIT_ACCURACY
from tests.support.cli import cli  # noqa: F401 - fixtures
from tests.support.stores import MotoServer  # noqa: F401 - fixtures
from tests.support.sync_fixtures import bundles, key_template, keys, moto_server  # noqa: F401 - fixtures

DEVICES = [f"edge-{i:02d}" for i in range(12)]
"""Twelve devices: the 50% cohort of a release (a hash of channel, release and device, and the release id changes
with every build of edgec's code) holds none or all of them with probability 2 in 4096."""


def active(root: Path) -> str:
    check_health(root / "current")
    return str(json.loads((root / "current" / "manifest.json").read_text())["name"])


def run_fleet(store: str, keys: Path, tmp_path: Path) -> dict[str, int]:
    codes = {}
    for device in DEVICES:
        code, _, err = cli("agent", "--store", store, "--device-id", device, "--root", str(tmp_path / device),
                           "--trusted-root", str(keys / "root.json"), "--once")
        codes[device] = code
    return codes


def test_staged_rollout_and_a_failing_release_across_a_fleet(moto_server: MotoServer, keys: Path, bundles: dict,
                                                            tmp_path: Path) -> None:
    store = moto_server.new_bucket()
    common = ["--store", store, "--keys", str(keys), "--channel", "stable"]
    assert cli("publish", str(bundles["v1"]), *common)[0] == 0
    assert set(run_fleet(store, keys, tmp_path).values()) == {0}
    assert {active(tmp_path / d) for d in DEVICES} == {"tinyv1"}

    code, out, err = cli("publish", str(bundles["v2"]), *common, "--percent", "50")
    assert code == 0, err
    code, out, _ = cli("release", "list", "--store", store, "--json")
    v2 = json.loads(out)["channels"]["stable"]["rollout"]["release"]
    expected = {d for d in DEVICES if rollout.cohort("stable", v2, d) < 50}
    assert 0 < len(expected) < len(DEVICES)  # a staged rollout: some devices take v2, others keep v1
    run_fleet(store, keys, tmp_path)
    assert {d for d in DEVICES if active(tmp_path / d) == "tinyv2"} == expected
    assert cli("release", "promote", "--store", store, "--keys", str(keys), "--channel", "stable")[0] == 0
    run_fleet(store, keys, tmp_path)
    assert {active(tmp_path / d) for d in DEVICES} == {"tinyv2"}

    # v3 is fine on the build host but over its latency budget on every device
    code, _, err = cli("publish", str(bundles["v3"]), *common, "--percent", "60", "--latency-budget-ms", "0.000001",
                       "--abort-failure-rate", "0.5", "--abort-min-devices", "2")
    assert code == 0, err
    codes = run_fleet(store, keys, tmp_path)
    tried = {d for d, c in codes.items() if c == EXIT_ACCURACY}
    assert len(tried) >= 2 and {active(tmp_path / d) for d in DEVICES} == {"tinyv2"}  # rolled back everywhere
    code, out, _ = cli("rollout", "check", "--store", store, "--keys", str(keys), "--channel", "stable")
    assert code == 0 and "HALTED" in out and f"{len(tried)} of {len(tried)}" in out
    run_fleet(store, keys, tmp_path)  # halted: nobody else takes v3
    assert {active(tmp_path / d) for d in DEVICES} == {"tinyv2"}

    code, out, _ = cli("fleet", "status", "--store", store, "--json")
    stable = json.loads(out)["stable"]
    assert stable["rollout"]["state"] == "halted" and stable["devices"] == len(DEVICES)
    assert stable["versions"] == {"tinyv2-onnx-fp32": len(DEVICES)}
    assert sorted(f["device_id"] for f in stable["failures"]) == sorted(tried)
    assert all("over the budget" in f["error"] for f in stable["failures"])
