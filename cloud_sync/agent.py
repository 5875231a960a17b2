"""The device agent: verified over-the-air updates with atomic activation, health check and rollback.

Runs with a device's runtime-only install (numpy, the target runtime, python-tuf, obstore): it imports
nothing from the compiler except its dependency-free error classes. ``edgec agent`` or
``python -m edgec.cloud_sync.agent``.

Device directory (``--root``)::

    tuf/            trusted TUF metadata (python-tuf ngclient's cache)
    downloads/      <sha256>.part (+ .etag, the validator for resuming)
    slots/a, slots/b  unpacked bundles; at most one is active
    slots/<slot>.release.json  the release a slot holds (sha256, bundle, latency budget)
    current         symlink to the active slot, replaced atomically (rename + directory fsync)
    state.json      committed / previous / trial releases and releases that failed here

One cycle: refresh TUF metadata -> select the release for the channel and this device's cohort ->
download with resume (HTTP Range + ETag validator) -> verify length and sha256 against the signed
metadata -> unpack into the inactive slot (regular files only, no path may leave the slot) -> check
the files against the manifest -> record the trial, switch ``current`` -> health check (golden parity
through the bundle's runner, median latency within the release's budget) -> commit, or switch back
and record the failure. A report goes to the store after every attempt.

A kill at any point leaves ``current`` on a slot whose files were verified; the next start finishes
an interrupted trial (health check, then commit or roll back) before doing anything else. A lost or
damaged ``state.json`` is rebuilt from the slots (see :mod:`edgec.cloud_sync.device`): the slot that
still verifies keeps running, is health-checked again, and the repair is logged and reported.

Every attempt that fails is reported and exits non-zero with ``--once``: ``refused`` (signed metadata
or bundle bytes that do not verify), ``download_failed`` (the store answered, but an object the metadata
names is missing or was replaced during the download), ``failed`` (unpacking or a full disk),
``rolled_back`` (health check). Only ``unreachable`` (the store did not answer) is not reported; it
exits with the sync code (9), the others with the integrity (8) or accuracy (7) code.
Fault injection for tests: ``EDGEC_AGENT_FAILPOINT=<state>`` sends the agent SIGKILL on entering it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from edgec.cloud_sync.device import Device, fsync_dir
from edgec.cloud_sync.names import check_channel, check_device_id
from edgec.core.errors import (
    EXIT_ACCURACY,
    EXIT_INTEGRITY,
    EXIT_SYNC,
    ConfigError,
    EdgecError,
    IntegrityError,
    SyncError,
    brief,
)

STATES = ("refresh", "select", "download", "verify", "unpack", "precheck", "switch", "health", "commit", "rollback", "report")
FAILPOINT_ENV = "EDGEC_AGENT_FAILPOINT"
CHUNK = 256 * 1024
MAX_BACKOFF = 300.0
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class AgentConfig:
    """Validated agent options."""

    store_url: str
    device_id: str
    root: Path
    channel: str = "stable"
    trusted_root: Path | None = None
    interval: float | None = None
    max_cycles: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        """Device id and channel become store keys: checked however the config is built.

        Raises:
            ConfigError: either could leave its folder in the store.
        """
        check_device_id(self.device_id)
        check_channel(self.channel)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AgentConfig:
        """From ``edgec agent`` arguments.

        Raises:
            ConfigError: bad device id, channel, interval or trusted root.
        """
        check_device_id(args.device_id)
        check_channel(args.channel)
        if args.interval is not None and args.interval <= 0:
            raise ConfigError(f"--interval must be positive, got {args.interval}")
        if args.trusted_root is not None and not args.trusted_root.is_file():
            raise ConfigError(f"--trusted-root {args.trusted_root} not found")
        if args.trusted_root is None and not (args.root / "tuf" / "root.json").is_file():
            raise ConfigError(f"{args.root} has no trusted metadata yet", hint="pass --trusted-root root.json (from 'edgec keys init') on first run")
        return cls(args.store, args.device_id, args.root, args.channel, args.trusted_root, args.interval, args.max_cycles, args.threads)


def printable(text: object, limit: int = 128) -> str:
    """``text`` safe for one log line or an HTTP header value: visible ASCII and spaces, bounded."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text)[:limit])


def describe_release(bundle: object, sha256: object, number: object, channel: str) -> str:
    """``digits-onnx-int8 (release 3 of stable, sha 1a2b3c4d5e6f)``: what a device or server runs.

    ``number`` is the release's place in the channel's list (``edgec release list``, oldest first); the
    sha256 prefix is what ``edgec release promote|rollback`` accept.
    """
    parts = [f"release {number} of {channel}"] if isinstance(number, int) and not isinstance(number, bool) else []
    parts += [f"sha {printable(sha256, 12)}"] if isinstance(sha256, str) and sha256 else []
    return printable(bundle) + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class Outcome:
    """How one cycle ended."""

    state: str
    release: str | None = None
    bundle: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    number: int | None = None
    """The release's place in the channel (1: the first published)."""

    def line(self, channel: str) -> str:
        """``committed digits-onnx-int8 (release 3 of stable, sha 1a2b3c4d5e6f)``, then the error if any."""
        text = self.state
        if self.bundle:
            text += " " + describe_release(self.bundle, self.release, self.number, channel)
        return text + (f": {self.error}" if self.error else "")


def _about(chosen: dict[str, Any]) -> dict[str, Any]:
    """The fields of an :class:`Outcome` that name the release ``chosen``."""
    return {"release": chosen["sha256"], "bundle": chosen["bundle"], "number": chosen.get("number")}


def log(device_id: str, message: str) -> None:
    """One line on stderr, flushed (tests and supervisors read it)."""
    print(f"edgec-agent[{device_id}]: {message}", file=sys.stderr, flush=True)


def enter(device_id: str, state: str) -> None:
    """Log a state and honour the fault-injection failpoint."""
    log(device_id, f"state {state}")
    if os.environ.get(FAILPOINT_ENV) == state:
        os.kill(os.getpid(), signal.SIGKILL)


def unpack(archive: Path, dest: Path) -> None:
    """Extract a bundle archive into ``dest`` (replaced) via a temporary folder.

    Raises:
        IntegrityError: a member that is not a plain file or folder, or a path leaving the slot.
    """
    tmp = dest.with_name(dest.name + ".tmp")
    for old in (tmp, dest):
        shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive, "r:") as tar:
        members = tar.getmembers()
        for member in members:
            path = PurePosixPath(member.name)
            if not (member.isfile() or member.isdir()) or path.is_absolute() or ".." in path.parts:
                raise IntegrityError(f"bundle archive member {member.name!r} is not a plain relative file")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members were checked above
            tar.extractall(tmp, members=members)
    for extracted in sorted(tmp.rglob("*")):
        if extracted.is_file():
            with open(extracted, "rb") as handle:
                os.fsync(handle.fileno())
    os.rename(tmp, dest)
    fsync_dir(dest.parent)


class DownloadFailed(Exception):
    """The store answered, but the object the signed metadata names is missing or was replaced meanwhile."""


def download(store: Any, key: str, sha256: str, length: int, folder: Path, device_id: str) -> Path:
    """Fetch ``key`` into ``folder/<sha256>.part``, resuming a previous partial download.

    The object's ETag is kept beside the part file; when it changed, the download restarts from 0,
    and every range read asks for that ETag (``If-Match``). A local store has no ``If-Match``: there the
    object's size and ETag are compared again after the last read.

    Raises:
        DownloadFailed: the object is missing, or was replaced or deleted during the download.
        StoreUnavailable: the store did not answer (the part file is kept for resuming).
    """
    part, validator = folder / f"{sha256}.part", folder / f"{sha256}.etag"
    meta = store.head(key)
    if meta is None:
        raise DownloadFailed(f"{key} is named by the signed metadata but missing from the store")
    etag = meta.etag or ""
    if not validator.is_file() or validator.read_text() != etag:
        part.unlink(missing_ok=True)
        validator.write_text(etag)
    offset = part.stat().st_size if part.is_file() else 0
    if offset > length:
        part.unlink()
        offset = 0
    if offset:
        log(device_id, f"resuming download at byte {offset} of {length}")
    _fetch_into(store, key, meta, part, offset, min(length, meta.size))
    return part


def _fetch_into(store: Any, key: str, meta: Any, part: Path, offset: int, end: int) -> None:
    from edgec.cloud_sync.store import Conflict, StoreUnavailable

    etag = meta.etag or None
    try:
        with open(part, "ab") as handle:
            while offset < end:
                chunk = store.get_range(key, offset, min(offset + CHUNK, end), if_match=etag)
                if not chunk:
                    raise Conflict(key)  # the object became shorter than it was
                handle.write(chunk)
                offset += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if store.head(key) != meta:
            raise Conflict(key)
    except (Conflict, StoreUnavailable) as exc:
        if isinstance(exc, StoreUnavailable) and store.head(key) == meta:
            raise  # the store failed, the object is unchanged: resume from here next time
        part.unlink(missing_ok=True)
        (part.parent / f"{part.stem}.etag").unlink(missing_ok=True)
        raise DownloadFailed(f"{key} changed during the download (replaced or deleted in the store); "
                             "the partial download was discarded") from None
    except OSError:
        part.unlink(missing_ok=True)
        raise


class Agent:
    """One device's update logic over a store.

    Args:
        config: validated options.
        store: the opened store.
    """

    def __init__(self, config: AgentConfig, store: Any) -> None:
        self.config = config
        self.store = store
        self.device = Device(config.root)
        self.recovered = False

    def log(self, message: str) -> None:
        log(self.config.device_id, message)

    # -- one cycle -----------------------------------------------------------------------------------

    def cycle(self) -> Outcome:
        """Recover if needed, then one update attempt; reports the outcome."""
        outcome = self._guarded(self._recover) if not self.recovered else None
        self.recovered = True
        if outcome is None:
            outcome = self._guarded(self._update)
        self.log(outcome.line(self.config.channel))
        self._report(outcome)
        return outcome

    def _guarded(self, step: Any) -> Outcome:
        """Run ``step``; the errors an attempt can meet become its outcome (by exception type, not message)."""
        from tuf.api.exceptions import (
            DownloadError,
            DownloadHTTPError,
            DownloadLengthMismatchError,
            RepositoryError,
        )

        from edgec.cloud_sync.store import StoreUnavailable

        try:
            return step()  # type: ignore[no-any-return]
        except (RepositoryError, DownloadLengthMismatchError) as exc:  # signed metadata that does not verify
            return Outcome("refused", error=f"release metadata refused ({type(exc).__name__}): {exc}")
        except DownloadHTTPError as exc:  # the store answered: that metadata file is not there
            return Outcome("download_failed", error=f"release metadata missing from the store ({exc})")
        except (DownloadError, StoreUnavailable) as exc:  # SlowRetrievalError included: no answer in time
            cause = exc.__cause__ or exc
            return Outcome("unreachable", error=brief(cause, 240))
        except LookupError as exc:
            return Outcome("no_release", error=str(exc).strip("'\""))
        except IntegrityError as exc:
            return Outcome("failed", error=exc.message)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                return Outcome("failed", error=f"disk full while writing to {self.device.root}: {exc.strerror}")
            raise

    def _update(self) -> Outcome:
        from tuf.api.exceptions import LengthOrHashMismatchError

        from edgec.cloud_sync.release import target_key
        from edgec.cloud_sync.tuf_client import open_updater

        cfg = self.config
        enter(cfg.device_id, "refresh")
        trusted = cfg.trusted_root.read_bytes() if cfg.trusted_root else None
        updater = open_updater(self.store, self.device.tuf_dir, trusted)
        updater.refresh()
        enter(cfg.device_id, "select")
        chosen = self._select(updater)
        if isinstance(chosen, Outcome):
            return chosen
        info = updater.get_targetinfo(chosen["target"])
        if info is None or info.hashes.get("sha256") != chosen["sha256"]:
            return Outcome("refused", **_about(chosen), error="channel names a release the signed targets do not list")
        enter(cfg.device_id, "download")
        key = target_key(info.path, chosen["sha256"])
        try:
            part = download(self.store, key, chosen["sha256"], info.length, self.device.downloads, cfg.device_id)
            enter(cfg.device_id, "verify")
            self._verify_download(info, part)
        except DownloadFailed as exc:
            return Outcome("download_failed", **_about(chosen), error=str(exc))
        except LengthOrHashMismatchError as exc:
            return Outcome("refused", **_about(chosen), error=f"bundle refused ({type(exc).__name__}): {exc}")
        return self._install(chosen, part)

    def _select(self, updater: Any) -> dict[str, Any] | Outcome:
        """The release this device should run, from the signed channel document, or why there is none."""
        from edgec.cloud_sync import rollout
        from edgec.cloud_sync.tuf_client import fetch_target

        cfg, state = self.config, self.device.state
        path = f"channels/{check_channel(cfg.channel)}.json"
        if updater.get_targetinfo(path) is None:
            return Outcome("no_release", error=f"channel {cfg.channel!r} is not in the signed release metadata")
        try:
            _, data = fetch_target(updater, self.store, path)
        except LookupError as exc:  # listed in the signed metadata, but the store has no such object
            return Outcome("download_failed", error=str(exc).strip("'\""))
        active, doc = (state["committed"] or {}).get("sha256"), json.loads(data)
        chosen: dict[str, Any] | None = rollout.select(doc, cfg.device_id, active)
        if chosen is None:
            return Outcome("no_release", error=f"channel {cfg.channel!r} has no release")
        chosen = {**chosen, "number": doc["releases"].index(chosen) + 1}
        if chosen["sha256"] == active:
            return Outcome("up_to_date", **_about(chosen))
        if chosen["sha256"] in state["failed"]:
            return Outcome("skipped", **_about(chosen), error=state["failed"][chosen["sha256"]])
        return chosen

    def _verify_download(self, info: Any, part: Path) -> None:
        from tuf.api.exceptions import LengthOrHashMismatchError

        try:
            with open(part, "rb") as handle:
                info.verify_length_and_hashes(handle)
        except LengthOrHashMismatchError:
            part.unlink(missing_ok=True)
            raise

    def _install(self, chosen: dict[str, Any], part: Path) -> Outcome:
        from edgec.cloud_sync.health import verify_files

        cfg, device = self.config, self.device
        slot = device.inactive_slot()
        enter(cfg.device_id, "unpack")
        if (device.state.get("previous") or {}).get("slot") == slot:
            device.state["previous"] = None
            device.save()
        device.forget_slot(slot)
        unpack(part, device.slots / slot)
        enter(cfg.device_id, "precheck")
        verify_files(device.slots / slot)
        device.describe_slot(slot, chosen)
        enter(cfg.device_id, "switch")
        device.state["trial"] = {"slot": slot, "sha256": chosen["sha256"], "bundle": chosen["bundle"],
                                 "latency_budget_ms": chosen.get("latency_budget_ms"), "number": chosen["number"]}
        device.save()
        device.switch(slot)
        outcome = self._health_and_settle()
        part.unlink(missing_ok=True)
        (part.parent / f"{chosen['sha256']}.etag").unlink(missing_ok=True)
        return outcome

    def _health_and_settle(self) -> Outcome:
        from edgec.cloud_sync.health import HealthError, check_health

        cfg, device = self.config, self.device
        trial = device.state["trial"]
        enter(cfg.device_id, "health")
        try:
            # the slot was unpacked from an archive whose length and sha256 TUF-signed metadata vouched for
            health = check_health(device.current, trial.get("latency_budget_ms"), cfg.threads, trust_engine=True)
        except (HealthError, IntegrityError) as exc:
            reason = exc.message if isinstance(exc, EdgecError) else str(exc)
            enter(cfg.device_id, "rollback")
            committed = device.state["committed"]
            device.switch(committed["slot"] if committed else None)
            if trial["sha256"]:  # None: a slot kept by a repair, from before slots recorded their release
                device.state["failed"][trial["sha256"]] = reason
            device.state["trial"] = None
            device.save()
            return Outcome("rolled_back", trial["sha256"], trial["bundle"], error=reason, number=trial.get("number"))
        enter(cfg.device_id, "commit")
        device.state["previous"] = device.state["committed"]
        known = ("slot", "sha256", "bundle", "number") if trial.get("number") is not None else ("slot", "sha256", "bundle")
        device.state["committed"] = {k: trial[k] for k in known}  # a trial kept by a repair has no number
        device.state["trial"] = None
        device.save()
        return Outcome("committed", trial["sha256"], trial["bundle"], latency_ms=round(health.latency_ms, 4), number=trial.get("number"))

    def _recover(self) -> Outcome | None:
        """Finish what a killed run left: a damaged state, an interrupted trial, or ``current`` out of place."""
        device = self.device
        if device.problem:
            self.log(f"repairing the device state: {device.repair()}")
            return self._health_and_settle() if device.state["trial"] else None
        active, trial, committed = device.active_slot(), device.state.get("trial"), device.state.get("committed")
        if trial and active == trial["slot"]:
            self.log(f"recovering: trial of {trial['bundle']} was interrupted; checking it again")
            return self._health_and_settle()
        if trial:
            device.state["trial"] = None
            device.save()
        wanted = committed["slot"] if committed else None
        if active != wanted:
            self.log(f"recovering: current pointed at {active}, committed slot is {wanted}")
            device.switch(wanted)
        return None

    # -- reports -------------------------------------------------------------------------------------

    def _report(self, outcome: Outcome) -> None:
        from edgec.cloud_sync.fleet import write_report
        from edgec.cloud_sync.store import StoreUnavailable

        state = self.device.state
        repaired = state.get("state_repaired")
        if outcome.state == "unreachable" or (outcome.state in ("skipped", "no_release") and not repaired):
            return
        committed = state.get("committed") or {}
        report = {"device_id": self.config.device_id, "channel": self.config.channel, "state": outcome.state,
                  "release": outcome.release, "bundle": outcome.bundle, "active": committed.get("sha256"),
                  "latency_ms": outcome.latency_ms, "error": outcome.error, "failed": dict(state["failed"]),
                  "state_repaired": repaired}
        fingerprint = json.dumps(report, sort_keys=True)
        if outcome.state == "up_to_date" and fingerprint == self.device.state.get("last_report"):
            return
        enter(self.config.device_id, "report")
        try:
            write_report(self.store, {**report, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        except StoreUnavailable as exc:
            self.log(f"could not write the report: {exc.message}")
            return
        state["last_report"], state["state_repaired"] = fingerprint, None  # a repair is reported once
        self.device.save()


EXIT_FOR = {"committed": 0, "up_to_date": 0, "no_release": 0, "skipped": 0, "rolled_back": EXIT_ACCURACY,
            "refused": EXIT_INTEGRITY, "failed": EXIT_INTEGRITY, "unreachable": EXIT_SYNC,
            "download_failed": EXIT_INTEGRITY}


def run(config: AgentConfig, on_outcome: Callable[[Outcome], None] | None = None) -> int:
    """Run cycles (``--interval``) or one cycle; returns the exit code of the last cycle.

    While the store is unreachable the wait doubles (up to :data:`MAX_BACKOFF` seconds, with jitter)
    instead of retrying at once, and the agent never exits because of it in interval mode.
    ``on_outcome`` hears of every cycle's outcome (``edgec agent --json`` prints it).

    Raises:
        IntegrityError: with ``--once``, when the cycle was refused or failed.
        SyncError: with ``--once``, when the cycle could not reach the store.
    """
    from edgec.cloud_sync.store import open_store

    agent = Agent(config, open_store(config.store_url))
    cycles, delay = 0, config.interval or 0.0
    while True:
        outcome = agent.cycle()
        cycles += 1
        if on_outcome is not None:
            on_outcome(outcome)
        if config.interval is None or (config.max_cycles is not None and cycles >= config.max_cycles):
            break
        if outcome.state == "unreachable":
            delay = min(max(delay, config.interval) * 2, MAX_BACKOFF)
            agent.log(f"store unreachable; retrying in {delay:.2f} s")
        else:
            delay = config.interval
        time.sleep(delay * random.uniform(0.9, 1.1))
    code = EXIT_FOR.get(outcome.state, EXIT_INTEGRITY)
    if config.interval is None and code in (EXIT_INTEGRITY, EXIT_SYNC):
        raise (SyncError if code == EXIT_SYNC else IntegrityError)(f"agent {outcome.state}: {outcome.error}")
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m edgec.cloud_sync.agent``: the same options as ``edgec agent``, the same errors and exit codes."""
    from edgec.cloud_sync.cli import agent_command
    from edgec.core.cli_kit import run as run_cli

    return run_cli(agent_command(), argv, prog="edgec-agent")


if __name__ == "__main__":
    sys.exit(main())
