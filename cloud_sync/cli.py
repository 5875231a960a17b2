"""``edgec keys|publish|release|rollout|fleet|agent``: publishing side and device agent.

Heavy imports (obstore, python-tuf, numpy) happen inside the handlers, so ``edgec --help`` works
without the ``sync`` extra.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgec.core.cli_kit import Argument, Group, Option, command
from edgec.core.errors import ConfigError

PATH = click.Path(path_type=Path)
SECTION = "Publishing and devices"
"""The heading of these commands in ``edgec --help``."""
SYNC_MODULES = ("securesystemslib", "cryptography", "tuf", "obstore")
"""What the ``sync`` extra brings (securesystemslib comes with tuf); signing needs all four."""
DEVICE_MODULES = ("tuf", "obstore")
"""What the agent and the read-only commands need."""


def require_sync(command: str, modules: tuple[str, ...] = SYNC_MODULES) -> None:
    """Check the ``sync`` extra is installed before a sync command does anything.

    Raises:
        MissingDependencyError: one of ``modules`` cannot be imported (exit 3, names ``edgec[sync]``).
    """
    from edgec.core.errors import require

    for module in modules:
        require(module, "sync", f"edgec {command}")


def commands() -> list[click.Command]:
    """The sync commands: ``keys``, ``publish``, ``release``, ``rollout``, ``fleet`` and ``agent``."""
    fleet = Group("fleet", dest="fleet_command", help="summarise device versions, states and failures per channel")
    fleet.add_command(command("status", cmd_fleet, [_store(), Option("--json", is_flag=True)],
                              help="versions, states and failures per channel"))
    return [_keys_group(), _publish(), _release_group(), _rollout_group(), fleet, agent_command()]


def _store(required: bool = True, text: str = "store URL (directory, s3://, gs://, az://)") -> Option:
    return Option("--store", required=required, help=text)


def _keys_args(store: bool = True) -> list[click.Parameter]:
    return [*([_store()] if store else []),
            Option("--keys", type=PATH, help="key directory; default $EDGEC_KEYS_DIR or ~/.config/edgec/keys"),
            Option("--root-keys", type=PATH, help="directory of the (offline) root keys; default --keys")]


def _keys_group() -> Group:
    keys = Group("keys", dest="keys_command", help="create or rotate the TUF signing keys")
    keys.add_command(command("init", cmd_keys, [
        *_keys_args(store=False), _store(False, "also initialise the release repository in this store"),
        Option("--root-count", type=int, default=3, help="number of root keys; default 3"),
        Option("--root-threshold", type=int, default=2, help="root signatures a new root needs; default 2"),
    ], help="create root, targets, snapshot and timestamp keys and root.json"))
    keys.add_command(command("rotate", cmd_keys, [
        *_keys_args(), Option("--role", required=True, type=click.Choice(["root", "targets", "snapshot", "timestamp"])),
    ], help="replace a role's key (new root version, metadata re-signed)"))
    return keys


def _rollout_args() -> list[click.Parameter]:
    return [Option("--abort-failure-rate", type=float, help="halt when more than this fraction of reporting devices fail"),
            Option("--abort-min-devices", type=int, help="...once at least this many devices reported")]


def _publish() -> click.Command:
    return command("publish", cmd_publish, [
        Argument("bundle", type=PATH), *_keys_args(), Option("--channel", required=True),
        Option("--percent", type=float, default=100.0, help="roll out to this share of devices (default 100: every device)"),
        Option("--latency-budget-ms", type=float, help="devices roll back when median latency exceeds this"),
        Option("--no-verify", is_flag=True, help="skip the golden parity check before upload (hashes are still checked)"),
        *_rollout_args(),
        Option("--json", is_flag=True, help="print what was published (release, channel, rollout) as JSON"),
    ], help="upload a bundle and add it as a release of a channel")


def _release_group() -> Group:
    release = Group("release", dest="release_command", help="promote, roll back, list releases; refresh metadata expiry")
    for name, text in (("promote", "make the rollout's candidate (or --release) current everywhere"),
                       ("rollback", "cancel the rollout, or return to the previous release (or --release)")):
        release.add_command(command(name, cmd_release, [*_keys_args(), Option("--channel", required=True),
                                                        Option("--release", help="sha256 prefix or bundle name")], help=text))
    release.add_command(command("refresh", cmd_release, [
        *_keys_args(), Option("--expires-hours", type=float, help="lifetime of the new timestamp; default 24"),
    ], help="re-sign the timestamp metadata with a new expiry (one timestamp covers every channel)"))
    release.add_command(command("list", cmd_release, [Option("--store", required=True), Option("--json", is_flag=True)],
                                help="channels, releases and metadata expiry"))
    return release


def _rollout_group() -> Group:
    roll = Group("rollout", dest="rollout_command", help="staged rollouts: set the share of devices, check the abort rule")
    roll.add_command(command("set", cmd_rollout, [
        *_keys_args(), Option("--channel", required=True), Option("--percent", type=float),
        Option("--resume", is_flag=True, help="re-activate a halted rollout"), *_rollout_args(),
    ], help="change the rollout's percentage or abort rule"))
    roll.add_command(command("check", cmd_rollout, [*_keys_args(), Option("--channel", required=True)],
                             help="evaluate device reports; halt the rollout if the abort rule trips"))
    return roll


def agent_command() -> click.Command:
    """``edgec agent`` (also ``python -m edgec.cloud_sync.agent``, with the same options)."""
    return command("agent", cmd_agent, [
        Option("--store", required=True), Option("--device-id", required=True),
        Option("--root", type=PATH, required=True, help="device directory (slots, metadata, state)"),
        Option("--channel", default="stable"),
        Option("--trusted-root", type=PATH, help="root.json to trust on first run"),
        Option("--once", is_flag=True, help="one update cycle, then exit (the default)"),
        Option("--interval", type=float, help="run cycles every S seconds, backing off while the store is unreachable"),
        Option("--max-cycles", type=int, help="stop after N cycles (with --interval)"),
        Option("--threads", type=int),
        Option("--json", is_flag=True, help="print each cycle's outcome (state, release, bundle, error) as a JSON line"),
    ], help="device agent: verified over-the-air updates with rollback")


# -- handlers ---------------------------------------------------------------------------------------

def _keys_dir(args: argparse.Namespace) -> Path:
    from edgec.cloud_sync.keys import default_keys_dir

    return Path(args.keys) if args.keys else default_keys_dir()


def _repo(args: argparse.Namespace, create: bool = False) -> Any:
    from edgec.cloud_sync.publish import open_repository

    return open_repository(args.store, _keys_dir(args), args.root_keys, create=create)


def _abort(args: argparse.Namespace) -> dict[str, Any]:
    abort: dict[str, Any] = {}
    if args.abort_failure_rate is not None:
        if not 0 <= args.abort_failure_rate <= 1:
            raise ConfigError(f"--abort-failure-rate must be between 0 and 1, got {args.abort_failure_rate}")
        abort["max_failure_rate"] = args.abort_failure_rate
    if args.abort_min_devices is not None:
        if args.abort_min_devices < 1:
            raise ConfigError(f"--abort-min-devices must be at least 1, got {args.abort_min_devices}")
        abort["min_devices"] = args.abort_min_devices
    return abort


def cmd_keys(args: argparse.Namespace) -> int:
    require_sync(f"keys {args.keys_command}", SYNC_MODULES if args.store else SYNC_MODULES[:3])
    if args.keys_command == "init":
        from edgec.cloud_sync.keys import init_keys
        from edgec.cloud_sync.release import new_root

        folder = _keys_dir(args)
        ring, by_role = init_keys(folder, args.root_count, args.root_threshold, args.root_keys)
        root = new_root(ring, by_role.pop("root"), by_role, args.root_threshold)
        (folder / "root.json").write_bytes(root.to_bytes())
        print(f"keys in {folder} (root {args.root_threshold} of {args.root_count}{' in ' + str(args.root_keys) if args.root_keys else ''}); trust anchor {folder / 'root.json'}")
        if args.store:
            _repo(args, create=True)
            print(f"release repository initialised in {args.store}")
        return 0
    from edgec.cloud_sync.release import rotate

    repo = _repo(args)
    old, new = rotate(repo, args.role, args.root_keys if args.role == "root" and args.root_keys else _keys_dir(args))
    print(f"rotated {args.role} key {old[:12]} -> {new[:12]}; root is now version {repo.latest_root().signed.version}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from edgec.cloud_sync.names import check_channel
    from edgec.cloud_sync.publish import publish

    require_sync("publish")
    check_channel(args.channel)
    if not (args.bundle / "manifest.json").is_file():
        raise ConfigError(f"{args.bundle} is not a bundle directory (no manifest.json)", hint="build one with 'edgec build'")
    if args.latency_budget_ms is not None and args.latency_budget_ms <= 0:
        raise ConfigError(f"--latency-budget-ms must be positive, got {args.latency_budget_ms}")
    repo = _repo(args, create=True)
    done = publish(args.bundle, repo, args.channel, args.percent, _abort(args), args.latency_budget_ms, verify=not args.no_verify)
    ro = done.doc.get("rollout")
    rolling = bool(ro and ro["release"] == done.sha256)
    if args.json:
        print(json.dumps(_published_json(args.store, done, ro if rolling else None), indent=2, sort_keys=True))
        return 0
    where = f"rolling out to {ro['percent']:g}%" if rolling and ro else "current"
    print(f"published {args.bundle.name} {done.sha256[:12]} to {args.channel} ({where}) as {done.target_path}")
    return 0


def _published_json(store: str, done: Any, rollout: dict[str, Any] | None) -> dict[str, Any]:
    """``edgec publish --json``: the release recorded, where, and whether it is current or rolling out."""
    record = done.record
    return {"bundle": record["bundle"], "sha256": done.sha256, "channel": done.channel, "store": store,
            "target_path": done.target_path, "length": record["length"], "model_target": record["model_target"],
            "precision": record["precision"], "latency_budget_ms": record["latency_budget_ms"],
            "published": record["published"], "status": "rolling_out" if rollout else "current",
            "percent": rollout["percent"] if rollout else 100.0,
            "release_number": [r["sha256"] for r in done.doc["releases"]].index(done.sha256) + 1}


def cmd_release(args: argparse.Namespace) -> int:
    from edgec.cloud_sync import rollout
    from edgec.cloud_sync.names import check_channel
    from edgec.cloud_sync.publish import change_channel, channels

    require_sync(f"release {args.release_command}", DEVICE_MODULES if args.release_command == "list" else SYNC_MODULES)
    if args.release_command == "list":
        return _release_list(args)
    if args.release_command in ("promote", "rollback"):
        check_channel(args.channel)
    repo = _repo(args)
    if args.release_command == "refresh":
        from datetime import timedelta

        from edgec.cloud_sync.release import now

        expires = now() + timedelta(hours=args.expires_hours) if args.expires_hours else None
        state = repo.refresh_timestamp(expires)
        ts = state.timestamp.signed
        print(f"timestamp version {ts.version} expires {ts.expires.isoformat()}")
        return 0
    channel = check_channel(args.channel)
    if channel not in channels(repo):
        raise ConfigError(f"no channel {channel!r} in {args.store}")
    action = rollout.promote if args.release_command == "promote" else rollout.rollback
    _, record = change_channel(repo, channel, lambda doc: action(doc, args.release))
    print(f"{args.release_command}: {channel} now runs {record.get('bundle')} {str(record.get('sha256'))[:12]}")
    return 0


def _release_list(args: argparse.Namespace) -> int:
    from edgec.cloud_sync.keys import Keyring
    from edgec.cloud_sync.publish import channels
    from edgec.cloud_sync.release import Repository
    from edgec.cloud_sync.store import open_store

    repo = Repository(open_store(args.store), Keyring([]))
    state = repo.load()
    info = {"expires": {role: md.signed.expires.isoformat() for role, md in
                        (("root", state.root), ("targets", state.targets), ("snapshot", state.snapshot), ("timestamp", state.timestamp))},
            "channels": channels(repo)}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for name, doc in info["channels"].items():
        print(f"channel {name}")
        for r in doc["releases"]:
            marks = ("current " if r["sha256"] == doc["current"] else "") + ("rollout " if doc["rollout"] and doc["rollout"]["release"] == r["sha256"] else "")
            print(f"  {r['sha256'][:12]} {r['bundle']} {r['published']} {marks}".rstrip())
    print("expires: " + ", ".join(f"{k} {v}" for k, v in info["expires"].items()))
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from edgec.cloud_sync import rollout
    from edgec.cloud_sync.names import check_channel
    from edgec.cloud_sync.publish import change_channel, check_rollout

    require_sync(f"rollout {args.rollout_command}")
    channel = check_channel(args.channel)
    repo = _repo(args)
    if args.rollout_command == "check":
        evaluation = check_rollout(repo, channel)
        if evaluation is None:
            print(f"{channel}: no rollout in progress")
            return 0
        print(f"{channel}: {evaluation.reason}; {'rollout HALTED' if evaluation.halt else 'rollout continues'}")
        return 0
    if args.percent is not None and not 0 <= args.percent <= 100:
        raise ConfigError(f"--percent must be between 0 and 100, got {args.percent}")
    doc, _ = change_channel(repo, channel, lambda d: rollout.set_rollout(d, args.percent, _abort(args), args.resume))
    ro = doc["rollout"]
    print(f"{channel}: rolling out {ro['release'][:12]} to {ro['percent']:g}% ({ro['state']})")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from edgec.cloud_sync.fleet import format_text, read_reports, summarize
    from edgec.cloud_sync.keys import Keyring
    from edgec.cloud_sync.publish import channels
    from edgec.cloud_sync.release import Repository
    from edgec.cloud_sync.store import open_store

    require_sync("fleet status", DEVICE_MODULES)
    repo = Repository(open_store(args.store), Keyring([]))
    docs = channels(repo) if repo.exists() else {}
    summary = summarize(docs, read_reports(repo.store))
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else format_text(summary))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """``edgec agent``; with ``--json`` each cycle's outcome is a JSON line on stdout.

    Raises:
        ConfigError: ``--once`` with ``--interval``, or bad options (see ``AgentConfig.from_args``).
    """
    from edgec.cloud_sync.agent import AgentConfig, run

    if args.once and args.interval is not None:
        raise ConfigError("--once and --interval cannot be combined: one cycle, or cycles every S seconds")
    require_sync("agent", DEVICE_MODULES)
    config = AgentConfig.from_args(args)
    return run(config, on_outcome=_print_outcome(config) if args.json else None)


def _print_outcome(config: Any) -> Callable[[Any], None]:
    """A printer of one cycle's outcome as a JSON object (sorted keys) on one line of stdout."""
    from edgec.cloud_sync.agent import EXIT_FOR

    def emit(outcome: Any) -> None:
        print(json.dumps({"device_id": config.device_id, "channel": config.channel, "state": outcome.state,
                          "release": outcome.release, "bundle": outcome.bundle, "number": outcome.number,
                          "latency_ms": outcome.latency_ms, "error": outcome.error,
                          "exit_code": EXIT_FOR.get(outcome.state, 8)}, sort_keys=True), flush=True)

    return emit
