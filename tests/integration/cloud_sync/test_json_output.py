"""``edgec publish --json`` and ``edgec agent --json``: one JSON object (sorted keys) on stdout saying what was
published or what the agent did, matching the signed metadata and the device's state."""

from __future__ import annotations

import json
from pathlib import Path

from edgec.cloud_sync.publish import publish
from edgec.core.errors import EXIT_INTEGRITY
from tests.support.agent import run_agent, state
from tests.support.cli import cli
from tests.support.stores import device_view, repository


def _sorted_json(text: str) -> dict:
    data = json.loads(text)
    assert list(data) == sorted(data), list(data)
    return data


def test_publish_json_names_the_release_as_the_signed_channel_lists_it(store_url: str, keys: Path, bundles: dict,
                                                                        tmp_path: Path) -> None:
    signed = ["--store", store_url, "--keys", str(keys), "--channel", "stable"]
    code, out, err = cli("publish", str(bundles["v1"]), *signed, "--json")
    assert code == 0, err
    first = _sorted_json(out)
    doc = device_view(store_url, keys, tmp_path / "device")
    assert (first["sha256"], first["status"], first["percent"], first["release_number"]) == (doc["current"], "current", 100.0, 1)
    assert (first["bundle"], first["channel"], first["store"]) == (bundles["v1"].name, "stable", store_url)
    assert (first["model_target"], first["precision"]) == ("onnx", "fp32") and first["length"] > 0
    code, out, err = cli("publish", str(bundles["v2"]), *signed, "--percent", "25", "--json")
    assert code == 0, err
    second = _sorted_json(out)
    doc = device_view(store_url, keys, tmp_path / "device2")
    assert (second["status"], second["percent"], second["release_number"]) == ("rolling_out", 25.0, 2)
    assert doc["rollout"]["release"] == second["sha256"] != first["sha256"] == doc["current"]
    code, out, _ = cli("publish", str(bundles["v3"]), *signed)
    assert code == 0 and out.startswith("published ") and not out.lstrip().startswith("{")


def test_agent_json_prints_each_cycle_outcome_and_the_exit_code(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    v1 = publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    proc = run_agent(store_url, "dev-1", device, keys, "--json")
    assert proc.returncode == 0, proc.stderr
    outcome = _sorted_json(proc.stdout)
    assert outcome == {"device_id": "dev-1", "channel": "stable", "state": "committed", "release": v1.sha256,
                       "bundle": bundles["v1"].name, "number": 1, "latency_ms": outcome["latency_ms"], "error": None,
                       "exit_code": 0}
    assert outcome["latency_ms"] > 0 and state(device)["committed"]["sha256"] == v1.sha256
    proc = run_agent(store_url, "dev-1", device, keys, "--json", "--interval", "0.01", "--max-cycles", "2")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and [o["state"] for o in lines] == ["up_to_date", "up_to_date"], proc.stdout
    (keys / "root.json").write_text("{}")  # a trust anchor that cannot verify anything
    proc = run_agent(store_url, "dev-2", tmp_path / "dev2", keys, "--json")
    refused = _sorted_json(proc.stdout)
    assert proc.returncode == refused["exit_code"] == EXIT_INTEGRITY, (proc.returncode, proc.stdout, proc.stderr)
    assert refused["state"] == "refused" and refused["error"] and proc.stderr.strip().splitlines()[-1].startswith("edgec: ")


def test_standalone_agent_takes_the_same_flags_and_refuses_bad_ones_in_one_line(tmp_path: Path, keys: Path) -> None:
    proc = run_agent(str(tmp_path / "store"), "dev-1", tmp_path / "dev", keys, "--interval", "x")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip() == ("edgec: config error: invalid value for '--interval': 'x' is not a valid float "
                                   "(see 'edgec-agent --help')")
