"""The agent's device directory: two slots, the ``current`` link, ``state.json``, and its repair.

``state.json`` records the committed, previous and trial releases, the releases that failed here and a
pending ``state_repaired`` note. It is written atomically, but a filesystem can still lose or damage it
(a power cut on a device without barriers, a full disk, a stray write). Then the slots are the truth:
each holds an unpacked bundle whose ``manifest.json`` lists every file with its sha256, and beside it
``slots/<slot>.release.json`` names the release it came from. :meth:`Device.repair` keeps a slot whose
files still verify (the one ``current`` points to first, else the newest release) instead of forgetting
what runs on the device. Standard library only, plus :mod:`edgec.cloud_sync.health` for the file check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgec.core.errors import EdgecError, brief

SLOTS = ("a", "b")
STATE_KEYS = ("committed", "previous", "trial", "failed", "last_report")
"""Keys every ``state.json`` written by the agent holds (``state_repaired`` came later and is optional)."""


def fresh_state() -> dict[str, Any]:
    """The state of a device that has never installed anything."""
    return {"committed": None, "previous": None, "trial": None, "failed": {}, "last_report": None, "state_repaired": None}


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_release(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or value.get("slot") not in SLOTS or not isinstance(value.get("bundle"), str):
        return False
    budget = value.get("latency_budget_ms")
    return isinstance(value.get("sha256"), (str, type(None))) and (
        budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool)))


def state_problem(data: object) -> str | None:
    """Why ``data`` (parsed ``state.json``) cannot be used as the agent's state; None when it can."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__} instead of an object"
    missing = [key for key in STATE_KEYS if key not in data]
    if missing:
        return "no " + ", ".join(missing)
    bad = [key for key in ("committed", "previous", "trial") if not _is_release(data[key])]
    failed = data["failed"]
    if not isinstance(failed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in failed.items()):
        bad.append("failed")
    bad += [key for key in ("last_report", "state_repaired") if not isinstance(data.get(key), (str, type(None)))]
    return f"wrong types in {', '.join(bad)}" if bad else None


class Device:
    """The device directory: slots, the ``current`` link and ``state.json``.

    Attributes:
        state: the state in use (a fresh one when ``state.json`` could not be used).
        problem: why ``state.json`` could not be used (None: it was fine, or the device is new);
            :meth:`repair` clears it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tuf_dir = root / "tuf"
        self.downloads = root / "downloads"
        self.slots = root / "slots"
        self.current = root / "current"
        self.state_file = root / "state.json"
        for folder in (root, self.downloads, self.slots):
            folder.mkdir(parents=True, exist_ok=True)
        self.state, self.problem = self._load()

    def _load(self) -> tuple[dict[str, Any], str | None]:
        try:
            text = self.state_file.read_bytes()
        except FileNotFoundError:
            # the first trial is recorded before `current` is ever created: a link without state lost it
            return fresh_state(), "state.json is missing" if self.current.is_symlink() else None
        except OSError as exc:
            return fresh_state(), f"state.json is unreadable ({exc.strerror})"
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return fresh_state(), f"state.json is not JSON ({brief(exc, 120)})"
        problem = state_problem(data)
        if problem:
            return fresh_state(), f"state.json has {problem}"
        return {**fresh_state(), **data}, None

    def save(self) -> None:
        """Write ``state.json`` atomically and durably."""
        tmp = self.root / "state.json.tmp"
        with open(tmp, "w") as handle:
            json.dump(self.state, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_file)
        fsync_dir(self.root)

    def active_slot(self) -> str | None:
        """Name of the slot ``current`` points to (None: no active bundle)."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def switch(self, slot: str | None) -> None:
        """Point ``current`` at ``slots/<slot>`` (or remove it) atomically."""
        if slot is None:
            self.current.unlink(missing_ok=True)
        else:
            tmp = self.root / "current.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(Path("slots") / slot, tmp)
            os.replace(tmp, self.current)
        fsync_dir(self.root)

    def inactive_slot(self) -> str:
        """The slot not holding the committed release."""
        committed = self.state.get("committed")
        return "b" if committed and committed["slot"] == "a" else "a"

    # -- what each slot holds ------------------------------------------------------------------------

    def _release_file(self, slot: str) -> Path:
        return self.slots / f"{slot}.release.json"

    def forget_slot(self, slot: str) -> None:
        """Drop the record of what ``slot`` holds (before its files are replaced)."""
        self._release_file(slot).unlink(missing_ok=True)
        fsync_dir(self.slots)

    def describe_slot(self, slot: str, release: dict[str, Any]) -> None:
        """Record which release ``slot`` holds (sha256, bundle, latency budget, publication time)."""
        tmp = self._release_file(slot).with_suffix(".tmp")
        tmp.write_text(json.dumps({k: release.get(k) for k in ("sha256", "bundle", "latency_budget_ms", "published")}))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self._release_file(slot))
        fsync_dir(self.slots)

    def _slot_release(self, slot: str, manifest: dict[str, Any]) -> dict[str, Any]:
        try:
            recorded = json.loads(self._release_file(slot).read_text())
        except (OSError, ValueError):
            recorded = None
        release = {"slot": slot, "sha256": None, "bundle": str(manifest.get("name") or f"slot {slot}"),
                   "latency_budget_ms": None, "published": ""}
        if isinstance(recorded, dict) and _is_release({**release, **recorded, "slot": slot}):
            release.update({k: v for k, v in recorded.items() if k in release and k != "slot"})
        return release

    def scan_slots(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The slots whose files verify, best first (the active one, then the newest release), and a note
        for each slot that does not verify."""
        from edgec.cloud_sync.health import verify_files

        active, candidates, notes = self.active_slot(), [], []
        for slot in SLOTS:
            path = self.slots / slot
            if not path.is_dir():
                continue
            try:
                manifest = verify_files(path)
            except (EdgecError, OSError) as exc:
                notes.append(f"slot {slot} does not verify ({getattr(exc, 'message', None) or exc})")
                continue
            release = self._slot_release(slot, manifest)
            rank = (slot == active, str(release["published"] or ""), (path / "manifest.json").stat().st_mtime)
            candidates.append((rank, release))
        ranked = [release for _, release in sorted(candidates, key=lambda c: c[0], reverse=True)]
        return ranked, notes

    def repair(self) -> str:
        """Rebuild the state from the slots after :attr:`problem`; returns the note to report.

        The best verified slot becomes the trial (the agent health-checks it next, as after an interrupted
        update) and ``current`` points at it; the second verified slot, if any, is what a failed check
        returns to. The damaged file is kept as ``state.json.corrupt``.
        """
        ranked, notes = self.scan_slots()
        kept = ranked[0] if ranked else None
        sha = f", sha {kept['sha256'][:12]}" if kept and kept["sha256"] else ""
        what = f"kept slot {kept['slot']} ({kept['bundle']}{sha}), its files verify" if kept else "no slot verifies"
        note = "; ".join([str(self.problem), what, *notes])
        if self.state_file.exists():
            os.replace(self.state_file, self.root / "state.json.corrupt")
        fallback = {k: ranked[1][k] for k in ("slot", "sha256", "bundle")} if len(ranked) > 1 else None
        trial = {k: kept[k] for k in ("slot", "sha256", "bundle", "latency_budget_ms")} if kept else None
        self.state = {**fresh_state(), "committed": fallback, "trial": trial, "state_repaired": note}
        self.save()
        self.switch(kept["slot"] if kept else None)
        self.problem = None
        return note
