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

from edgec.core.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
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


def add_commands(sub: Any) -> dict[str, Handler]:
    """Add the sync subcommands to the ``edgec`` parser; returns their handlers."""
    _add_keys(sub)
    _add_publish(sub)
    _add_release(sub)
    _add_rollout(sub)
    fleet = sub.add_parser("fleet", help="summarise device versions, states and failures per channel")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    status = fleet_sub.add_parser("status", help="versions, states and failures per channel")
    status.add_argument("--store", required=True, help="store URL (directory, s3://, gs://, az://)")
    status.add_argument("--json", action="store_true")
    _add_agent(sub)
    return {"keys": cmd_keys, "publish": cmd_publish, "release": cmd_release, "rollout": cmd_rollout,
            "fleet": cmd_fleet, "agent": cmd_agent}


def _keys_args(parser: argparse.ArgumentParser, store: bool = True) -> None:
    if store:
        parser.add_argument("--store", required=True, help="store URL (directory, s3://, gs://, az://)")
    parser.add_argument("--keys", type=Path, help="key directory; default $EDGEC_KEYS_DIR or ~/.config/edgec/keys")
    parser.add_argument("--root-keys", type=Path, help="directory of the (offline) root keys; default --keys")


def _add_keys(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create or rotate the TUF signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser("init", help="create root, targets, snapshot and timestamp keys and root.json")
    _keys_args(init, store=False)
    init.add_argument("--store", help="also initialise the release repository in this store")
    init.add_argument("--root-count", type=int, default=3, help="number of root keys; default 3")
    init.add_argument("--root-threshold", type=int, default=2, help="root signatures a new root needs; default 2")
    rotate = keys_sub.add_parser("rotate", help="replace a role's key (new root version, metadata re-signed)")
    _keys_args(rotate)
    rotate.add_argument("--role", required=True, choices=["root", "targets", "snapshot", "timestamp"])


def _rollout_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--abort-failure-rate", type=float, help="halt when more than this fraction of reporting devices fail")
    parser.add_argument("--abort-min-devices", type=int, help="...once at least this many devices reported")


def _add_publish(sub: Any) -> None:
    publish = sub.add_parser("publish", help="upload a bundle and add it as a release of a channel")
    publish.add_argument("bundle", type=Path)
    _keys_args(publish)
    publish.add_argument("--channel", required=True)
    publish.add_argument("--percent", type=float, default=100.0,
                         help="roll out to this share of devices (default 100: every device)")
    publish.add_argument("--latency-budget-ms", type=float, help="devices roll back when median latency exceeds this")
    publish.add_argument("--no-verify", action="store_true", help="skip the golden parity check before upload (hashes are still checked)")
    _rollout_args(publish)


def _add_release(sub: Any) -> None:
    release = sub.add_parser("release", help="promote, roll back, list releases; refresh metadata expiry")
    release_sub = release.add_subparsers(dest="release_command", metavar="ACTION", required=True)
    for name, text in (("promote", "make the rollout's candidate (or --release) current everywhere"),
                       ("rollback", "cancel the rollout, or return to the previous release (or --release)")):
        action = release_sub.add_parser(name, help=text)
        _keys_args(action)
        action.add_argument("--channel", required=True)
        action.add_argument("--release", help="sha256 prefix or bundle name")
    refresh = release_sub.add_parser("refresh", help="re-sign the timestamp metadata with a new expiry (one timestamp covers every channel)")
    _keys_args(refresh)
    refresh.add_argument("--expires-hours", type=float, help="lifetime of the new timestamp; default 24")
    listing = release_sub.add_parser("list", help="channels, releases and metadata expiry")
    listing.add_argument("--store", required=True)
    listing.add_argument("--json", action="store_true")


def _add_rollout(sub: Any) -> None:
    roll = sub.add_parser("rollout", help="staged rollouts: set the share of devices, check the abort rule")
    roll_sub = roll.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    set_ = roll_sub.add_parser("set", help="change the rollout's percentage or abort rule")
    _keys_args(set_)
    set_.add_argument("--channel", required=True)
    set_.add_argument("--percent", type=float)
    set_.add_argument("--resume", action="store_true", help="re-activate a halted rollout")
    _rollout_args(set_)
    check = roll_sub.add_parser("check", help="evaluate device reports; halt the rollout if the abort rule trips")
    _keys_args(check)
    check.add_argument("--channel", required=True)


def _add_agent(sub: Any) -> None:
    agent = sub.add_parser("agent", help="device agent: verified over-the-air updates with rollback")
    agent.add_argument("--store", required=True)
    agent.add_argument("--device-id", required=True)
    agent.add_argument("--root", type=Path, required=True, help="device directory (slots, metadata, state)")
    agent.add_argument("--channel", default="stable")
    agent.add_argument("--trusted-root", type=Path, help="root.json to trust on first run")
    mode = agent.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one update cycle, then exit (the default)")
    mode.add_argument("--interval", type=float, help="run cycles every S seconds, backing off while the store is unreachable")
    agent.add_argument("--max-cycles", type=int, help="stop after N cycles (with --interval)")
    agent.add_argument("--threads", type=int)


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
    where = f"rolling out to {ro['percent']:g}%" if ro and ro["release"] == done.sha256 else "current"
    print(f"published {args.bundle.name} {done.sha256[:12]} to {args.channel} ({where}) as {done.target_path}")
    return 0


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
    from edgec.cloud_sync.agent import AgentConfig, run

    require_sync("agent", DEVICE_MODULES)
    config = AgentConfig.from_args(args)
    return run(config)
