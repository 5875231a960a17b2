"""The device agent as a separate process against a local store and moto's S3 server: updates,
kills at every state, refused metadata and objects, an unreachable store and a full disk."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgec.cloud_sync import agent as agent_mod
from edgec.cloud_sync.health import HealthError, check_health, verify_files
from edgec.cloud_sync.publish import publish
from edgec.cloud_sync.release import META, target_key
from edgec.cloud_sync.store import open_store
from edgec.core.errors import EXIT_ACCURACY, EXIT_INTEGRITY, EXIT_SYNC
from tests.support.agent import BLOCKER, active_bundle, run_agent, state
from tests.support.stores import repository


def test_agent_installs_updates_and_reports_with_a_runtime_only_install(store_url: str, keys: Path, bundles: dict,
                                                                        tmp_path: Path) -> None:
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0, proc.stderr
    assert active_bundle(device) == "tinyv1"
    publish(bundles["v2"], repo, "stable", verify=False)
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0 and "committed" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv2"
    assert state(device)["previous"]["bundle"] == "tinyv2-onnx-fp32".replace("v2", "v1")
    report = json.loads(open_store(store_url).get("reports/dev-1.json"))
    assert report["state"] == "committed" and report["bundle"] == bundles["v2"].name and report["latency_ms"] > 0


def _outcome_lines(stderr: str) -> list[str]:
    """The agent's outcome lines (not its ``state ...`` progress lines)."""
    lines = [line.split(": ", 1)[1] for line in stderr.splitlines() if line.startswith("edgec-agent[")]
    return [line for line in lines if not line.startswith("state ")]


def test_agent_names_the_bundle_and_release_it_committed_kept_or_rolled_back(tmp_path: Path, keys: Path,
                                                                            bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    v1 = publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0, proc.stderr
    assert _outcome_lines(proc.stderr) == [f"committed tinyv1-onnx-fp32 (release 1 of stable, sha {v1.sha256[:12]})"]
    assert state(device)["committed"] == {"slot": "a", "sha256": v1.sha256, "bundle": "tinyv1-onnx-fp32", "number": 1}
    proc = run_agent(store_url, "dev-1", device, keys)
    assert _outcome_lines(proc.stderr) == [f"up_to_date tinyv1-onnx-fp32 (release 1 of stable, sha {v1.sha256[:12]})"]
    v2 = publish(bundles["v2"], repo, "stable", latency_budget_ms=1e-6, verify=False)  # no device is that fast
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_ACCURACY
    [line] = _outcome_lines(proc.stderr)
    assert line.startswith(f"rolled_back tinyv2-onnx-fp32 (release 2 of stable, sha {v2.sha256[:12]}): "), line


def test_sigkill_at_each_state_keeps_a_verified_bundle_and_the_next_run_completes(tmp_path: Path, keys: Path,
                                                                                  bundles: dict) -> None:
    from edgec.cloud_sync import rollout
    from edgec.cloud_sync.publish import change_channel

    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    shas = {"tinyv1": publish(bundles["v1"], repo, "stable", verify=False).sha256}
    device = tmp_path / "dev"
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    shas["tinyv2"] = publish(bundles["v2"], repo, "stable", verify=False).sha256
    wanted = "tinyv2"
    for point in (s for s in agent_mod.STATES if s != "rollback"):
        killed = run_agent(store_url, "dev-1", device, keys, env={agent_mod.FAILPOINT_ENV: point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        assert active_bundle(device) in shas, point  # whatever the moment, the active slot verifies
        done = run_agent(store_url, "dev-1", device, keys)
        assert done.returncode == 0, (point, done.stderr)
        assert active_bundle(device) == wanted and state(device)["trial"] is None, point
        wanted = "tinyv1" if wanted == "tinyv2" else "tinyv2"  # the next state is killed on the way back
        change_channel(repo, "stable", lambda doc, sha=shas[wanted]: rollout.rollback(doc, sha))


def test_sigkill_during_rollback_of_a_failing_bundle_ends_on_the_old_bundle(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    publish(bundles["v2"], repo, "stable", latency_budget_ms=1e-6, verify=False)  # no device is that fast
    killed = run_agent(store_url, "dev-1", device, keys, env={agent_mod.FAILPOINT_ENV: "rollback"})
    assert killed.returncode == -signal.SIGKILL
    done = run_agent(store_url, "dev-1", device, keys)
    assert done.returncode == EXIT_ACCURACY and "over the budget" in done.stderr, done.stderr
    assert active_bundle(device) == "tinyv1"
    again = run_agent(store_url, "dev-1", device, keys)  # a failed release is not retried in a loop
    assert again.returncode == 0 and "skipped" in again.stderr


@pytest.mark.slow
def test_hundred_random_sigkills_never_leave_the_device_without_a_verified_bundle(tmp_path: Path, keys: Path,
                                                                                  bundles: dict) -> None:
    import random

    from edgec.cloud_sync import rollout
    from edgec.cloud_sync.publish import change_channel

    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    v1 = publish(bundles["v1"], repo, "stable", verify=False).sha256
    v2 = publish(bundles["v2"], repo, "stable", verify=False).sha256
    device = tmp_path / "dev"
    args = [sys.executable, "-c", BLOCKER, "--store", store_url, "--device-id", "dev-1", "--root", str(device),
            "--trusted-root", str(keys / "root.json")]
    start = time.perf_counter()
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    cycle = time.perf_counter() - start
    rng = random.Random(1234)
    kills, runs, wanted = 0, 0, v2
    while kills < 100 and runs < 300:
        runs += 1
        if runs % 7 == 0:  # flip the channel between the two releases now and then
            wanted = v1 if wanted == v2 else v2
            change_channel(repo, "stable", lambda doc, sha=wanted: rollout.rollback(doc, sha))
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.0, cycle * 1.2))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if runs % 10 == 0:
            assert active_bundle(device) in ("tinyv1", "tinyv2")  # files and golden parity
        else:  # the files of the active slot match its manifest (parity was checked when they were)
            assert verify_files(device / "current")["name"] in ("tinyv1", "tinyv2")
    assert kills >= 100
    final = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr
    assert {"tinyv1": v1, "tinyv2": v2}[active_bundle(device)] == wanted


def test_corrupted_object_bytes_are_refused_without_touching_the_active_slot(store_url: str, keys: Path, bundles: dict,
                                                                             tmp_path: Path) -> None:
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    v2 = publish(bundles["v2"], repo, "stable", verify=False)
    store = open_store(store_url)
    key = target_key(v2.target_path, v2.sha256)
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0xFF
    store.put(key, bytes(data))
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "refused" in proc.stderr and "LengthOrHashMismatch" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"
    assert not list((device / "downloads").glob("*.part"))
    assert json.loads(store.get("reports/dev-1.json"))["state"] == "refused"


def _metadata_attack_setup(tmp_path: Path, keys: Path, bundles: dict) -> tuple[str, object, Path]:
    store_url = str(tmp_path / "store")
    repo = repository(store_url, keys)
    publish(bundles["v1"], repo, "stable", verify=False)
    device = tmp_path / "dev"
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    return store_url, repo, device


def test_tampered_metadata_is_refused(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url, repo, device = _metadata_attack_setup(tmp_path, keys, bundles)
    publish(bundles["v2"], repo, "stable", verify=False)
    store = open_store(store_url)
    doc = json.loads(store.get(META + "timestamp.json"))
    doc["signed"]["version"] += 5  # not re-signed
    store.put(META + "timestamp.json", json.dumps(doc).encode())
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "UnsignedMetadataError" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"


def test_replayed_old_metadata_is_refused_as_a_rollback_attack(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url, repo, device = _metadata_attack_setup(tmp_path, keys, bundles)
    store = open_store(store_url)
    old = store.get(META + "timestamp.json")
    publish(bundles["v2"], repo, "stable", verify=False)
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    store.put(META + "timestamp.json", old)  # an attacker serves the older, validly signed timestamp
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "BadVersionNumberError" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv2"


def test_expired_timestamp_is_refused_until_refreshed(tmp_path: Path, keys: Path, bundles: dict) -> None:
    from datetime import timedelta

    from edgec.cloud_sync.release import now

    store_url, repo, device = _metadata_attack_setup(tmp_path, keys, bundles)
    publish(bundles["v2"], repo, "stable", verify=False)
    repo.refresh_timestamp(expires=now() - timedelta(seconds=1))
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "ExpiredMetadataError" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"
    repo.refresh_timestamp()
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    assert active_bundle(device) == "tinyv2"


def test_new_root_signed_below_threshold_is_refused(tmp_path: Path, keys: Path, bundles: dict) -> None:
    import copy

    store_url, repo, device = _metadata_attack_setup(tmp_path, keys, bundles)
    root = repo.latest_root()
    forged = copy.deepcopy(root)
    forged.signed.version += 1
    forged.signatures.clear()
    one_key = repo.keyring.for_role(root.signed, "root")[0]
    forged.sign(one_key)  # 1 of the 2 required root signatures
    open_store(store_url).put(META + "2.root.json", forged.to_bytes())
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == EXIT_INTEGRITY and "UnsignedMetadataError" in proc.stderr and "1/2" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"


def test_unreachable_store_backs_off_instead_of_crash_looping(tmp_path: Path, keys: Path) -> None:
    from tests.support.stores import S3_ENV, free_port

    dead = f"s3://fleet/releases?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    start = time.perf_counter()
    proc = run_agent(dead, "dev-1", tmp_path / "dev", keys, "--interval", "0.1", "--max-cycles", "4", env=S3_ENV)
    elapsed = time.perf_counter() - start
    assert proc.returncode == EXIT_SYNC, proc.stderr  # a network outage, not a file that failed a check
    waits = [float(line.split("retrying in ")[1].split()[0]) for line in proc.stderr.splitlines() if "retrying in" in line]
    assert waits == [0.2, 0.4, 0.8], proc.stderr
    assert "Traceback" not in proc.stderr and elapsed < 50
    assert not (tmp_path / "dev" / "current").exists()


def test_disk_full_during_download_fails_cleanly(tmp_path: Path, keys: Path, bundles: dict) -> None:
    store_url, repo, device = _metadata_attack_setup(tmp_path, keys, bundles)
    v2 = publish(bundles["v2"], repo, "stable", verify=False)
    limit = v2.record["length"] // 2

    def small_disk() -> None:  # writes past `limit` bytes fail with EFBIG, as a full filesystem would
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = run_agent(store_url, "dev-1", device, keys, preexec=small_disk)
    assert proc.returncode == EXIT_INTEGRITY and "disk full" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"
    assert not list((device / "downloads").glob("*.part"))
    assert run_agent(store_url, "dev-1", device, keys).returncode == 0
    assert active_bundle(device) == "tinyv2"


def test_download_resumes_from_a_partial_file(store_url: str, keys: Path, bundles: dict, tmp_path: Path) -> None:
    repo = repository(store_url, keys)
    v1 = publish(bundles["v1"], repo, "stable", verify=False)
    store = open_store(store_url)
    key = target_key(v1.target_path, v1.sha256)
    device = tmp_path / "dev"
    (device / "downloads").mkdir(parents=True)
    half = v1.record["length"] // 2
    (device / "downloads" / f"{v1.sha256}.part").write_bytes(store.get(key)[:half])
    (device / "downloads" / f"{v1.sha256}.etag").write_text(store.head(key).etag or "")
    proc = run_agent(store_url, "dev-1", device, keys)
    assert proc.returncode == 0 and f"resuming download at byte {half} of {v1.record['length']}" in proc.stderr, proc.stderr
    assert active_bundle(device) == "tinyv1"




def test_health_check_agrees_with_edgec_verify_and_catches_bad_golden_outputs(bundles: dict, tmp_path: Path) -> None:
    import shutil

    import numpy as np

    from edgec.compiler.verify import verify_bundle
    from edgec.core.bundle import file_entry, load_manifest, read_golden, write_golden

    assert check_health(bundles["v1"]).parity == verify_bundle(bundles["v1"]).measured
    broken = tmp_path / "broken"
    shutil.copytree(bundles["v1"], broken)
    golden_in, golden_out = read_golden(broken / "golden.npz")
    write_golden(broken / "golden.npz", golden_in, [{k: -v for k, v in o.items()} for o in golden_out])
    manifest = load_manifest(broken)
    manifest.files = [file_entry(broken, f.path) for f in manifest.files]
    (broken / "manifest.json").write_text(manifest.dumps())
    with pytest.raises(HealthError, match="golden parity failed"):
        check_health(broken)
    assert np.isfinite(check_health(bundles["v1"]).latency_ms)
