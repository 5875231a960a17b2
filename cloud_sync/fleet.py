"""Device reports in the store and the fleet summary built from them. Standard library only.

After each update attempt an agent replaces ``reports/<device_id>.json`` with a small JSON object:
``device_id``, ``channel``, ``state`` (committed, up_to_date, rolled_back, failed, refused,
download_failed), ``release`` (sha256 the report is about), ``bundle``, ``active`` (sha256 running now, or
null), ``latency_ms``, ``error``, ``failed`` (sha256 -> reason for every release that failed its health
check on this device), ``state_repaired`` (null, or how the agent rebuilt an unreadable ``state.json``
from the slot that still verified) and ``time``. Reports are not signed: they feed the rollout's abort rule and the fleet view,
never a device's choice of what to install.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from edgec.cloud_sync import rollout
from edgec.cloud_sync.names import check_device_id
from edgec.cloud_sync.store import NotFound, Store

REPORTS = "reports/"


def report_key(device_id: str) -> str:
    """Store key of a device's latest report.

    Raises:
        ConfigError: the id could leave ``reports/`` or is not a device id.
    """
    return f"{REPORTS}{check_device_id(device_id, flag=None)}.json"


def write_report(store: Store, report: dict[str, Any]) -> None:
    """Replace the device's latest report."""
    store.put(report_key(report["device_id"]), (json.dumps(report, sort_keys=True) + "\n").encode())


def read_reports(store: Store) -> list[dict[str, Any]]:
    """Every device's latest report (malformed ones are skipped)."""
    reports = []
    for meta in store.list(REPORTS):
        try:
            report = json.loads(store.get(meta.key))
        except (NotFound, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("device_id"), str):
            reports.append(report)
    return reports


def summarize(channels: dict[str, dict[str, Any]], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per channel: current release, rollout, devices per active bundle, report states, failures, state repairs."""
    summary: dict[str, Any] = {}
    names = sorted(set(channels) | {str(r.get("channel")) for r in reports})
    for name in names:
        doc = channels.get(name) or rollout.empty_channel(name)
        mine = [r for r in reports if r.get("channel") == name]
        bundles = {r["sha256"]: r["bundle"] for r in doc["releases"]}
        evaluation = rollout.evaluate(doc, reports)
        summary[name] = {
            "current": _describe(doc, doc.get("current")),
            "rollout": {**doc["rollout"], "bundle": bundles.get(doc["rollout"]["release"])} if doc.get("rollout") else None,
            "devices": len(mine),
            "versions": dict(Counter(bundles.get(r.get("active"), r.get("active") or "none") for r in mine)),
            "states": dict(Counter(str(r.get("state")) for r in mine)),
            "failures": [f for r in sorted(mine, key=lambda r: r["device_id"]) for f in _failures(r, bundles)],
            "abort": evaluation.__dict__ if evaluation else None,
            "state_repairs": [{"device_id": r["device_id"], "note": r["state_repaired"]}
                              for r in sorted(mine, key=lambda r: r["device_id"]) if r.get("state_repaired")],
        }
    return summary


def _failures(report: dict[str, Any], bundles: dict[str, str]) -> list[dict[str, Any]]:
    """Releases this device rolled back (kept in every later report) and its latest failed attempt."""
    failed = dict(report.get("failed") or {})
    if report.get("state") in rollout.FAILED_STATES and report.get("release") not in failed:
        failed[report.get("release")] = report.get("error")
    found = [{"device_id": report["device_id"], "state": "rolled_back", "bundle": bundles.get(sha, report.get("bundle")),
              "error": reason} for sha, reason in failed.items()]
    if report.get("state") in rollout.ATTEMPT_FAILURES:
        found.append({"device_id": report["device_id"], "state": report["state"], "bundle": report.get("bundle"),
                      "error": report.get("error")})
    return found


def _describe(doc: dict[str, Any], sha: str | None) -> dict[str, Any] | None:
    record = rollout.release(doc, sha)
    return {"sha256": sha, "bundle": record["bundle"]} if record else None


def format_text(summary: dict[str, Any]) -> str:
    """Human-readable fleet status."""
    lines = []
    for name, info in summary.items():
        current = info["current"]
        lines.append(f"channel {name}: current {current['bundle'] + ' ' + current['sha256'][:12] if current else 'none'}")
        ro = info["rollout"]
        if ro:
            lines.append(f"  rollout {ro['bundle']} {ro['release'][:12]}: {ro['percent']:g}% {ro['state']}"
                         + (f" ({ro['reason']})" if ro.get("reason") else ""))
        if info["abort"]:
            a = info["abort"]
            lines.append(f"  abort rule: {a['reason']}{' -> HALT' if a['halt'] and ro and ro['state'] == 'active' else ''}")
        lines.append(f"  devices {info['devices']}: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["versions"].items())))
        lines.append("  states: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["states"].items())))
        for failure in info["failures"]:
            lines.append(f"  {failure['state']} {failure['device_id']} ({failure['bundle']}): {failure['error']}")
        for repair in info["state_repairs"]:
            lines.append(f"  state repaired {repair['device_id']}: {repair['note']}")
    return "\n".join(lines) if lines else "no channels and no device reports"
