"""Publishing: pack a bundle, upload it content-addressed, then record it in a channel.

A bundle travels as one deterministic, uncompressed tar archive: the bundle directory's files in
sorted order, relative paths, mtime 0, uid/gid 0, no user names, mode 0644 (0755 for folders), so the
same bundle always gives the same sha256. Its TUF target path is ``bundles/<bundle>-<sha16>.tar``.

Every channel change goes through :meth:`Repository.commit`: the archive (and the new channel
document) are uploaded before the metadata that names them, and the change is re-applied if another
publisher commits first.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.cloud_sync import rollout
from edgec.cloud_sync.keys import Keyring
from edgec.cloud_sync.release import Repository, now
from edgec.core.errors import ConfigError, IntegrityError

CHANNEL_PATH = "channels/{}.json"


def channel_path(channel: str) -> str:
    """TUF target path of a channel document."""
    return CHANNEL_PATH.format(channel)


def check_channel_name(name: str) -> str:
    """Channel names are short identifiers that stay one segment of a store key (see :mod:`edgec.cloud_sync.names`).

    Raises:
        ConfigError: anything else.
    """
    from edgec.cloud_sync.names import check_channel

    return check_channel(name, flag=None)


def pack_bundle(bundle: Path) -> bytes:
    """The deterministic tar archive of a bundle directory (see the module docstring): ``manifest.json`` and the
    files it lists, with their folders; Python's ``__pycache__`` folders are left out.

    Raises:
        IntegrityError: the bundle holds a file its manifest does not list (it would reach devices unhashed),
            or something that is not a plain file or folder.
    """
    listed = _listed_files(bundle)
    paths = [p for p in sorted(bundle.rglob("*")) if "__pycache__" not in p.relative_to(bundle).parts]
    unlisted = [p.relative_to(bundle).as_posix() for p in paths if p.is_file() and not p.is_symlink()
                and p.relative_to(bundle).as_posix() not in listed]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise IntegrityError(f"{bundle} holds files its manifest does not list: {shown}; they would reach devices "
                             "unhashed", hint="remove them from the bundle folder, or rebuild it with 'edgec build'")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in paths:
            rel = path.relative_to(bundle).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise IntegrityError(f"{bundle}: {rel} is not a regular file or folder; bundles hold plain files")
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.mode, info.size = 0o644, path.stat().st_size
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
    return buffer.getvalue()


def _listed_files(bundle: Path) -> set[str]:
    """``manifest.json`` and the paths its ``files`` list (relative, POSIX); just the manifest when it cannot be
    read (``read_manifest`` says why before anything is packed)."""
    try:
        files = json.loads((bundle / "manifest.json").read_text()).get("files") or []
        return {"manifest.json", *(str(f["path"]) for f in files if isinstance(f, dict) and "path" in f)}
    except (OSError, ValueError, AttributeError):
        return {"manifest.json"}


def read_manifest(bundle: Path, verify: bool) -> dict[str, Any]:
    """The bundle's manifest, after ``edgec verify``'s checks (file hashes and golden parity).

    Raises:
        ConfigError: not a bundle directory.
        IntegrityError, AccuracyGateError: the bundle does not verify.
    """
    if not (bundle / "manifest.json").is_file():
        raise ConfigError(f"{bundle} is not a bundle directory (no manifest.json)", hint="build one with 'edgec build'")
    if verify:
        from edgec.compiler.verify import verify_bundle

        verify_bundle(bundle)
    else:
        from edgec.cloud_sync.health import verify_files

        verify_files(bundle)
    return dict(json.loads((bundle / "manifest.json").read_text()))


@dataclass(frozen=True)
class Published:
    """What a publish recorded."""

    sha256: str
    target_path: str
    channel: str
    record: dict[str, Any]
    doc: dict[str, Any]


def read_channel(repo: Repository, targets: Any, channel: str) -> dict[str, Any]:
    """The channel document listed in the ``Targets`` payload (an empty channel when there is none)."""
    data = repo.read_target(targets, channel_path(channel))
    return json.loads(data) if data is not None else rollout.empty_channel(channel)


def change_channel(repo: Repository, channel: str, edit: Callable[[dict[str, Any]], Any],
                   before: Callable[[Any], None] | None = None) -> tuple[dict[str, Any], Any]:
    """Apply ``edit`` to the channel document and commit it; returns (document, edit's result).

    ``before`` may change the targets payload first (add a bundle) in the same commit.

    Raises:
        ConfigError: ``edit`` rejected the change (ValueError).
    """
    outcome: dict[str, Any] = {}

    def change(targets: Any) -> None:
        if before is not None:
            before(targets)
        doc = read_channel(repo, targets, channel)
        try:
            outcome["result"] = edit(doc)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        info = repo.put_target(channel_path(channel), rollout.dumps(doc))
        targets.targets[info.path] = info
        outcome["doc"] = doc

    repo.commit(change)
    return outcome["doc"], outcome.get("result")


def publish(bundle: Path, repo: Repository, channel: str, percent: float = 100.0,
            abort: dict[str, Any] | None = None, latency_budget_ms: float | None = None,
            verify: bool = True) -> Published:
    """Upload a bundle and add it to a channel (first release: current; later: a rollout at ``percent``).

    Raises:
        ConfigError: bad arguments or not a bundle.
        IntegrityError: the bundle does not verify, or the store refused.
    """
    check_channel_name(channel)
    if not 0 <= percent <= 100:
        raise ConfigError(f"--percent must be between 0 and 100, got {percent}")
    manifest = read_manifest(bundle, verify)
    archive = pack_bundle(bundle)
    sha = hashlib.sha256(archive).hexdigest()
    path = f"bundles/{bundle.name}-{sha[:16]}.tar"
    info = repo.put_target(path, archive)  # the archive lands before any metadata names it
    record = {"sha256": sha, "target": path, "length": len(archive), "bundle": bundle.name,
              "model_target": manifest.get("target"), "precision": manifest.get("precision"),
              "latency_budget_ms": latency_budget_ms, "published": now().isoformat()}
    abort_rule = {**rollout.DEFAULT_ABORT, **(abort or {})}

    def edit(doc: dict[str, Any]) -> None:
        rollout.add_release(doc, record, percent, abort_rule)

    def add_bundle(targets: Any) -> None:
        targets.targets[path] = info

    doc, _ = change_channel(repo, channel, edit, before=add_bundle)
    return Published(sha, path, channel, record, doc)


def open_repository(store_url: str, keys_dir: Path, root_keys_dir: Path | None = None, create: bool = False) -> Repository:
    """A :class:`Repository` over a store with the keys in ``keys_dir``; ``create`` initialises an empty store.

    The store's metadata is checked at once (before anything is uploaded) against the trusted root
    ``keys_dir/root.json`` and the versions this publisher has seen there (``keys_dir/seen.json``).

    Raises:
        ConfigError: no keys, or the store has no repository and ``create`` is False.
        IntegrityError: the store's metadata is not the trusted root's, or older than seen before.
    """
    from edgec.cloud_sync.release import read_root
    from edgec.cloud_sync.seen import SeenRecord
    from edgec.cloud_sync.store import open_store

    ring = Keyring.load(keys_dir, root_keys_dir)
    anchor = keys_dir / "root.json"
    seen = SeenRecord(keys_dir, store_url) if keys_dir.is_dir() else None
    repo = Repository(open_store(store_url), ring, anchor=anchor if anchor.is_file() else None, seen=seen)
    known = seen.versions() if seen is not None else {}  # read before the store, see edgec.cloud_sync.seen
    if repo.exists():
        repo.load()
        return repo
    if seen is not None:
        seen.check_absent(known)
    if not create:
        raise ConfigError(f"no release repository in {store_url}", hint="publish a bundle there first")
    if not anchor.is_file():
        raise ConfigError(f"{store_url} holds no release repository and {anchor} does not exist",
                          hint="run 'edgec keys init --keys DIR' first")
    repo.initialize(read_root(anchor))
    return repo


def channels(repo: Repository) -> dict[str, dict[str, Any]]:
    """Every channel document in the committed metadata, by name."""
    targets = repo.load().targets.signed
    found = {}
    for path in sorted(targets.targets):
        if path.startswith("channels/") and path.endswith(".json"):
            name = path[len("channels/"):-len(".json")]
            found[name] = read_channel(repo, targets, name)
    return found


def check_rollout(repo: Repository, channel: str) -> rollout.Evaluation | None:
    """Evaluate the channel's abort rule from the device reports; halt the rollout when it trips."""
    from edgec.cloud_sync.fleet import read_reports

    reports = read_reports(repo.store)

    def edit(doc: dict[str, Any]) -> rollout.Evaluation | None:
        evaluation = rollout.evaluate(doc, reports)
        if evaluation and evaluation.halt and doc["rollout"]["state"] == "active":
            rollout.halt(doc, evaluation.reason)
        return evaluation

    current = channels(repo).get(channel)
    if current is None:
        raise ConfigError(f"no channel {channel!r} in {repo.store.url}")
    evaluation = rollout.evaluate(current, reports)
    if evaluation is None or not evaluation.halt or current["rollout"]["state"] != "active":
        return evaluation
    _, result = change_channel(repo, channel, edit)
    return result  # type: ignore[no-any-return]
