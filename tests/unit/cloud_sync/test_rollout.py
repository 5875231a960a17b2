"""Staged rollouts: deterministic cohorts, the abort rule evaluated from device reports in the store,
and the fleet summary.

The checks that build nothing; the builds are in tests/integration/cloud_sync/test_rollout.py."""

from __future__ import annotations

from edgec.cloud_sync import rollout


def test_cohorts_are_deterministic_and_raising_the_percentage_only_adds_devices() -> None:
    doc = rollout.empty_channel("stable")
    doc["releases"] = [{"sha256": "a" * 64}, {"sha256": "b" * 64}]
    doc["current"] = "a" * 64
    devices = [f"dev-{i:04d}" for i in range(2000)]

    def on_candidate(percent: float) -> set[str]:
        doc["rollout"] = {"release": "b" * 64, "percent": percent, "state": "active", "abort": {}}
        return {d for d in devices if rollout.select(doc, d, "a" * 64)["sha256"] == "b" * 64}

    ten, fifty = on_candidate(10), on_candidate(50)
    assert 150 <= len(ten) <= 250  # 10% of 2000, binomial spread
    assert 900 <= len(fifty) <= 1100
    assert ten <= fifty
    assert on_candidate(10) == ten  # same devices every time
    other = {d for d in devices if rollout.cohort("stable", "c" * 64, d) < 10}
    assert other != ten  # a new candidate draws a new cohort


def test_halted_rollout_keeps_devices_on_the_candidate_and_takes_no_new_ones() -> None:
    doc = rollout.empty_channel("stable")
    doc["releases"] = [{"sha256": "a" * 64}, {"sha256": "b" * 64}]
    doc["current"] = "a" * 64
    doc["rollout"] = {"release": "b" * 64, "percent": 100, "state": "halted", "abort": {}}
    assert rollout.select(doc, "dev-1", "b" * 64)["sha256"] == "b" * 64
    assert rollout.select(doc, "dev-2", "a" * 64)["sha256"] == "a" * 64


def test_devices_that_cannot_download_or_verify_the_candidate_halt_its_rollout() -> None:
    """A release whose bundle is missing from the store or does not verify never runs anywhere: counting only
    health-check roll-backs, its rollout widened to every device without one failure counted."""
    doc = rollout.empty_channel("stable")
    doc["releases"] = [{"sha256": "a" * 64}, {"sha256": "b" * 64}]
    doc["current"] = "a" * 64
    doc["rollout"] = {"release": "b" * 64, "percent": 20, "state": "active", "abort": {}}
    states = ["download_failed", "refused", "failed", "download_failed", "committed", "committed"]
    reports = [{"device_id": f"dev-{i}", "channel": "stable", "state": state, "release": "b" * 64,
                "active": "b" * 64 if state == "committed" else "a" * 64} for i, state in enumerate(states)]
    reports.append({"device_id": "dev-x", "channel": "stable", "state": "download_failed", "release": "a" * 64})
    found = rollout.evaluate(doc, reports)
    assert found is not None and (found.reporting, found.failures) == (6, 4) and found.halt
