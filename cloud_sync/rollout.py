"""Channels, staged rollouts, device cohorts and the abort rule. Standard library only (the device
agent imports this module).

A channel document (``channels/<name>.json``, a signed TUF target) holds:

- ``releases``: every release published to the channel, oldest first (sha256 of the bundle archive,
  its TUF target path, bundle name, target, precision, optional ``latency_budget_ms``);
- ``current``: the sha256 every device runs when no rollout applies to it; ``history``: earlier
  values of ``current`` (for rollback);
- ``rollout``: the candidate being rolled out, or null: ``{"release", "percent", "state"
  ("active" | "halted"), "abort": {"max_failure_rate", "min_devices"}, "reason"}``.

A device's cohort is a number in [0, 100) derived from sha256(channel, candidate, device id): the same
device always lands in the same place for a given candidate, and raising the percentage only adds
devices. While a rollout is active, devices below ``percent`` get the candidate; once halted, devices
already running the candidate keep it and no other device takes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SCHEMA = 1
FAILED_STATES = ("rolled_back",)
"""Report states of a release that ran on the device and failed its health check."""
ATTEMPT_FAILURES = ("failed", "refused", "download_failed")
"""Report states of an update attempt that failed before the health check (the release never ran there): a
report about the candidate in one of them counts against the rollout too, or a release whose bundle is
missing from the store or does not verify would widen to every device without one failure counted."""
SUCCESS_STATES = ("committed", "up_to_date")
DEFAULT_ABORT = {"max_failure_rate": 0.2, "min_devices": 5}


def empty_channel(name: str) -> dict[str, Any]:
    """A channel with no releases."""
    return {"schema": SCHEMA, "channel": name, "releases": [], "current": None, "history": [], "rollout": None}


def dumps(doc: dict[str, Any]) -> bytes:
    """Canonical bytes of a channel document (sorted keys)."""
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()


def release(doc: dict[str, Any], sha256: str | None) -> dict[str, Any] | None:
    """The release record with that sha256 (or None)."""
    return next((r for r in doc["releases"] if r["sha256"] == sha256), None) if sha256 else None


def find_release(doc: dict[str, Any], ref: str) -> dict[str, Any] | None:
    """A release by sha256 prefix (at least 6 characters) or by bundle name (the newest one)."""
    matches = [r for r in doc["releases"] if len(ref) >= 6 and r["sha256"].startswith(ref)]
    matches = matches or [r for r in doc["releases"] if r["bundle"] == ref]
    return matches[-1] if matches else None


def cohort(channel: str, candidate: str, device_id: str) -> float:
    """The device's place in [0, 100) for this candidate; deterministic."""
    digest = hashlib.sha256(f"{channel}\0{candidate}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def select(doc: dict[str, Any], device_id: str, active_sha: str | None) -> dict[str, Any] | None:
    """The release this device should run (None: the channel has none)."""
    ro = doc.get("rollout")
    if ro:
        in_cohort = cohort(doc["channel"], ro["release"], device_id) < ro["percent"]
        if (ro["state"] == "active" and in_cohort) or (ro["state"] == "halted" and active_sha == ro["release"]):
            return release(doc, ro["release"])
    return release(doc, doc.get("current"))


# -- publisher-side changes (pure functions on a copy of the document) -----------------------------

def add_release(doc: dict[str, Any], record: dict[str, Any], percent: float, abort: dict[str, Any]) -> None:
    """Add a release: the channel's first becomes current, later ones start a rollout at ``percent``."""
    if release(doc, record["sha256"]) is None:
        doc["releases"].append(record)
    if doc["current"] is None or doc["current"] == record["sha256"]:
        doc["current"] = record["sha256"]
        doc["rollout"] = None
    elif percent >= 100:
        _make_current(doc, record["sha256"])
    else:
        doc["rollout"] = {"release": record["sha256"], "percent": percent, "state": "active", "abort": abort, "reason": None}


def set_rollout(doc: dict[str, Any], percent: float | None, abort: dict[str, Any] | None, resume: bool) -> None:
    """Change the rollout's percentage or abort rule; ``resume`` re-activates a halted rollout."""
    ro = doc.get("rollout")
    if not ro:
        raise ValueError(f"channel {doc['channel']!r} has no rollout in progress (publish a release first)")
    if percent is not None:
        ro["percent"] = percent
    if abort:
        ro["abort"] = {**ro["abort"], **abort}
    if resume:
        ro["state"], ro["reason"] = "active", None


def promote(doc: dict[str, Any], ref: str | None) -> dict[str, Any]:
    """Make the rollout's candidate (or the release ``ref``) current for every device."""
    sha = _resolve(doc, ref) if ref else (doc["rollout"] or {}).get("release")
    if not sha:
        raise ValueError(f"channel {doc['channel']!r} has no rollout to promote; name a release")
    _make_current(doc, sha)
    return release(doc, sha) or {}


def rollback(doc: dict[str, Any], ref: str | None) -> dict[str, Any]:
    """Cancel the rollout, or (without one) go back to the previous current release (or ``ref``)."""
    if ref:
        sha = _resolve(doc, ref)
        _make_current(doc, sha, remember=False)
    elif doc.get("rollout"):
        doc["rollout"] = None
        sha = doc["current"]
    elif doc["history"]:
        sha = doc["history"].pop()
        doc["current"] = sha
    else:
        raise ValueError(f"channel {doc['channel']!r} has no earlier release to roll back to")
    return release(doc, sha) or {}


def _make_current(doc: dict[str, Any], sha: str, remember: bool = True) -> None:
    if doc["current"] and doc["current"] != sha and remember:
        doc["history"].append(doc["current"])
    doc["current"] = sha
    doc["rollout"] = None


def _resolve(doc: dict[str, Any], ref: str) -> str:
    found = find_release(doc, ref)
    if found is None:
        raise ValueError(f"channel {doc['channel']!r} has no release {ref!r}")
    return str(found["sha256"])


# -- the abort rule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """Device reports about a rollout's candidate, and whether they trip its abort rule."""

    release: str
    reporting: int
    failures: int
    failure_rate: float
    halt: bool
    reason: str


def evaluate(doc: dict[str, Any], reports: list[dict[str, Any]]) -> Evaluation | None:
    """Apply the rollout's abort rule to the devices' latest reports (None: no rollout).

    A device counts when its latest report on this channel is about the candidate or says it runs it;
    it failed when the candidate is among the releases it reports as failed (``failed``), or the report
    is about the candidate with a state in :data:`FAILED_STATES` or :data:`ATTEMPT_FAILURES`. The rollout halts when at least ``min_devices`` devices report
    and the failure rate exceeds ``max_failure_rate``.
    """
    ro = doc.get("rollout")
    if not ro:
        return None
    candidate, reporting, failures = ro["release"], 0, 0
    for r in reports:
        if r.get("channel") != doc["channel"]:
            continue
        if candidate in (r.get("failed") or {}) or (r.get("release") == candidate and r.get("state") in (*FAILED_STATES, *ATTEMPT_FAILURES)):
            reporting, failures = reporting + 1, failures + 1
        elif r.get("active") == candidate or (r.get("release") == candidate and r.get("state") in SUCCESS_STATES):
            reporting += 1
    rate = failures / reporting if reporting else 0.0
    abort = {**DEFAULT_ABORT, **ro.get("abort", {})}
    halt = reporting >= abort["min_devices"] and rate > abort["max_failure_rate"]
    reason = (f"{failures} of {reporting} reporting devices failed ({rate:.0%} > {abort['max_failure_rate']:.0%}, "
              f"minimum {abort['min_devices']} devices)")
    return Evaluation(candidate, reporting, failures, rate, halt, reason)


def halt(doc: dict[str, Any], reason: str) -> None:
    """Stop the rollout: no new device takes the candidate."""
    if doc.get("rollout"):
        doc["rollout"]["state"] = "halted"
        doc["rollout"]["reason"] = reason
