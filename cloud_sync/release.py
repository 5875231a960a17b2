"""Release metadata as a TUF repository in the store, written with python-tuf's Metadata API.

Store layout (consistent snapshots, so every metadata version and every target has its own object):

- ``tuf/metadata/N.root.json``, ``N.targets.json``, ``N.snapshot.json``: immutable, written with
  create-only writes; ``tuf/metadata/timestamp.json``: the one mutable object, replaced with a
  compare-and-swap on its ETag. Writing the timestamp is the commit point of every change.
- ``tuf/targets/<dir>/<sha256>.<name>``: targets, content-addressed by sha256 (bundles as
  ``bundles/<bundle>-<sha16>.tar``, channel documents as ``channels/<channel>.json``).

A change (:meth:`Repository.commit`) reads the committed state through the timestamp, applies the
change to a copy of the targets metadata, writes targets and snapshot at fresh version numbers (a
version already taken by a concurrent or interrupted writer is skipped: TUF only needs versions to
grow) and then swaps the timestamp. When the swap loses, the whole change is applied again to the new
state, so two racing publishers both land. Objects a loser left behind are never referenced.

A publisher never signs on top of older metadata than it has seen: :meth:`Repository.load` checks the
store's root v1 against the trusted root kept with the keys, each role against the length, hashes and
version that the role above it names (as a TUF client does), and every version against the publisher's
:class:`~edgec.cloud_sync.seen.SeenRecord`, which it then advances. Expiry is not checked: renewing
expired metadata is the publisher's job.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgec.cloud_sync.keys import ROLES, Keyring
from edgec.cloud_sync.seen import SeenRecord
from edgec.cloud_sync.store import Conflict, NotFound, Store
from edgec.core.errors import ConfigError, IntegrityError

META = "tuf/metadata/"
TARGETS = "tuf/targets/"
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90), "snapshot": timedelta(days=30),
          "timestamp": timedelta(days=1)}
"""Default lifetime of each role's metadata; ``edgec release refresh`` renews the timestamp."""
COMMIT_ATTEMPTS = 30
VERSION_PROBES = 1000


def now() -> datetime:
    """Current UTC time without microseconds (TUF's expiry format has none)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def target_key(path: str, sha256: str) -> str:
    """Store key of a target under consistent snapshots: ``tuf/targets/<dir>/<sha256>.<name>``."""
    folder, _, name = path.rpartition("/")
    return TARGETS + (f"{folder}/" if folder else "") + f"{sha256}.{name}"


@dataclass
class RepoState:
    """The committed metadata, and the timestamp's version token for the next compare-and-swap."""

    root: Any
    targets: Any
    snapshot: Any
    timestamp: Any
    token: str | None
    fresh: bool = False
    """True before the first commit: nothing is stored yet, versions start at 1."""

    def versions(self) -> dict[str, int]:
        """The version of each role."""
        return {role: int(md.signed.version) for role, md in
                (("root", self.root), ("timestamp", self.timestamp), ("snapshot", self.snapshot), ("targets", self.targets))}


class Repository:
    """Publisher-side access to the TUF repository in a store.

    Args:
        store: where the repository lives.
        keyring: private keys; only the roles a change signs need to be present.
        expiry: lifetime per role (defaults: :data:`EXPIRY`).
        anchor: the trusted root file (``root.json`` from ``edgec keys init``); the store's
            ``1.root.json`` must be this root.
        seen: the versions this publisher has seen in the store; checked and advanced on every load.
    """

    def __init__(self, store: Store, keyring: Keyring, expiry: dict[str, timedelta] | None = None,
                 anchor: Path | None = None, seen: SeenRecord | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.expiry = {**EXPIRY, **(expiry or {})}
        self.anchor = anchor
        self.seen = seen

    # -- reading -------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when the store holds a root metadata."""
        return self.store.head(META + "1.root.json") is not None

    def latest_root(self) -> Any:
        """The newest root, each version checked against the one before (threshold signatures).

        Raises:
            IntegrityError: no repository, or a root that its predecessor does not vouch for.
        """
        return self.root_chain()[-1]

    def root_chain(self) -> list[Any]:
        """Every root version, oldest first, each verified by its predecessor and by itself."""
        from tuf.api.metadata import Metadata

        try:
            root = Metadata.from_bytes(self.store.get(META + "1.root.json"))
        except NotFound:
            raise IntegrityError(f"no release repository in {self.store.url}",
                                 hint="run 'edgec keys init --store URL' or 'edgec publish' first") from None
        _verify(root, "root", root)
        if self.anchor is not None and root != read_root(self.anchor):
            raise IntegrityError(f"{self.store.url}: {META}1.root.json is not the trusted root {self.anchor}",
                                 hint="the store holds another repository, or someone replaced its root")
        chain = [root]
        while True:
            try:
                data = self.store.get(META + f"{chain[-1].signed.version + 1}.root.json")
            except NotFound:
                return chain
            newer = Metadata.from_bytes(data)
            _verify(chain[-1], "root", newer)
            _verify(newer, "root", newer)
            chain.append(newer)

    def load(self) -> RepoState:
        """The committed state, each role verified against the root and the role that names it, and
        checked against (then recorded in) the versions this publisher has seen.

        Raises:
            IntegrityError: missing, badly signed, mismatched or rolled-back metadata.
        """
        from tuf.api.metadata import Metadata

        seen = self.seen.versions() if self.seen is not None else {}  # before the store is read
        chain = self.root_chain()
        root = chain[-1]
        try:
            ts_bytes, token = self.store.get_versioned(META + "timestamp.json")
        except NotFound:
            raise IntegrityError(f"{self.store.url} has a root but no timestamp metadata") from None
        timestamp: Any = Metadata.from_bytes(ts_bytes)
        _verify_chain(chain, "timestamp", timestamp)
        snapshot = self._load_role(chain, "snapshot", timestamp.signed.snapshot_meta)
        targets = self._load_role(chain, "targets", snapshot.signed.meta["targets.json"])
        state = RepoState(root, targets, snapshot, timestamp, token)
        self._witness(state, seen)
        return state

    def _load_role(self, chain: list[Any], role: str, meta: Any) -> Any:
        """The role's metadata that ``meta`` (a ``MetaFile``) names: its length, hashes and version."""
        from tuf.api.exceptions import LengthOrHashMismatchError
        from tuf.api.metadata import Metadata

        name = f"{meta.version}.{role}.json"
        try:
            data = self.store.get(META + name)
        except NotFound:
            raise IntegrityError(f"{self.store.url}: {name} is referenced but missing") from None
        try:
            meta.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise IntegrityError(f"{self.store.url}: {name} does not match the length and hashes that signed metadata "
                                 f"names ({exc}); someone replaced it") from None
        md = Metadata.from_bytes(data)
        _verify_chain(chain, role, md)
        if md.signed.version != meta.version:
            raise IntegrityError(f"{self.store.url}: {name} holds {role} version {md.signed.version}; someone replaced it")
        return md

    def _witness(self, state: RepoState, seen: dict[str, int]) -> None:
        """Refuse a state older than this publisher had seen before reading it, then remember it."""
        if self.seen is not None:
            self.seen.check(state.versions(), seen)
            self.seen.record(state.versions())

    def read_target(self, targets: Any, path: str) -> bytes | None:
        """A target's bytes (from the ``Targets`` payload ``targets``), checked against its length and
        hashes; None when not listed.

        Raises:
            IntegrityError: the stored object does not match the metadata.
        """
        from tuf.api.exceptions import LengthOrHashMismatchError

        info = targets.targets.get(path)
        if info is None:
            return None
        data = self.store.get(target_key(path, info.hashes["sha256"]))
        try:
            info.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise IntegrityError(f"stored target {path} does not match its metadata: {exc}") from None
        return data

    # -- writing -------------------------------------------------------------------------------------

    def put_target(self, path: str, data: bytes) -> Any:
        """Upload a target content-addressed (before any metadata names it) and return its TargetFile."""
        from tuf.api.metadata import TargetFile

        info = TargetFile.from_data(path, data, ["sha256"])
        key = target_key(path, info.hashes["sha256"])
        if not self.store.put_new(key, data):
            meta = self.store.head(key)
            if meta is None or meta.size != len(data) or hashlib.sha256(self.store.get(key)).hexdigest() != info.hashes["sha256"]:
                self.store.put(key, data)  # a corrupt or truncated leftover: same content-addressed key, right bytes
        return info

    def initialize(self, root_md: Any) -> RepoState:
        """Write root v1 and empty targets, snapshot and timestamp (idempotent for the same root).

        Raises:
            ConfigError: the store already has a different root.
            IntegrityError: this publisher has seen a repository in this store before (it was emptied).
        """
        if self.seen is not None:
            seen = self.seen.versions()
            if not self.exists():
                self.seen.check_absent(seen)
        data = root_md.to_bytes()
        if not self.store.put_new(META + "1.root.json", data) and self.store.get(META + "1.root.json") != data:
            raise ConfigError(f"{self.store.url} already holds a release repository with another root",
                              hint="use the keys that created it, or another store")
        if self.store.head(META + "timestamp.json") is not None:
            return self.load()
        return self.commit(lambda targets: None, initial_root=root_md)

    def commit(self, change: Callable[[Any], Any], initial_root: Any = None, expires: dict[str, datetime] | None = None) -> RepoState:
        """Apply ``change`` to the targets metadata and publish it (see the module docstring).

        Args:
            change: called with a copy of the ``Targets`` payload; may upload targets; called again
                on a fresh copy whenever a concurrent writer commits first.
            initial_root: for the very first commit, the root (no timestamp exists yet).
            expires: explicit expiry per role (tests use a past time to make expired metadata).

        Raises:
            IntegrityError: still losing the race after many attempts.
        """
        for attempt in range(COMMIT_ATTEMPTS):
            state = self._initial_state(initial_root) if initial_root is not None else self.load()
            targets = copy.deepcopy(state.targets)
            change(targets.signed)
            try:
                written = self._write(state, targets, expires or {})
            except Conflict:
                initial_root = None
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            if self.seen is not None:
                self.seen.record(written.versions())
            return written
        raise IntegrityError(f"could not commit to {self.store.url}: {COMMIT_ATTEMPTS} concurrent writers got there first")

    def refresh_timestamp(self, expires: datetime | None = None) -> RepoState:
        """Re-sign the timestamp with a new expiry (same snapshot), with the same compare-and-swap."""
        for attempt in range(COMMIT_ATTEMPTS):
            state = self.load()
            timestamp = copy.deepcopy(state.timestamp)
            try:
                self._write_timestamp(state, timestamp, expires)
                return self.load()
            except Conflict:
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise IntegrityError(f"could not refresh the timestamp in {self.store.url}: too many concurrent writers")

    def write_root(self, new_root: Any, previous: Any) -> None:
        """Sign a new root version with the previous root's keys and its own, then store it.

        Raises:
            ConfigError: not enough root keys for either threshold.
            Conflict: that root version exists already.
        """
        for signer in {id(s): s for s in self.keyring.require(previous.signed, "root") + self.keyring.require(new_root.signed, "root")}.values():
            new_root.sign(signer, append=True)
        if not self.store.put_new(META + f"{new_root.signed.version}.root.json", new_root.to_bytes()):
            raise Conflict(f"{new_root.signed.version}.root.json")

    # -- internals -----------------------------------------------------------------------------------

    def _initial_state(self, root_md: Any) -> RepoState:
        from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

        t = now()
        return RepoState(root_md, Metadata(Targets(expires=t)),
                         Metadata(Snapshot(expires=t, meta={"targets.json": MetaFile(version=1)})),
                         Metadata(Timestamp(expires=t, snapshot_meta=MetaFile(version=1))), None, fresh=True)

    def _write(self, state: RepoState, targets: Any, expires: dict[str, datetime]) -> RepoState:
        from tuf.api.metadata import MetaFile

        t_bytes, t_version = self._write_versioned(state.root, "targets", targets, _after(state, state.targets), expires)
        snapshot = copy.deepcopy(state.snapshot)
        snapshot.signed.meta["targets.json"] = MetaFile(version=t_version, length=len(t_bytes),
                                                        hashes={"sha256": hashlib.sha256(t_bytes).hexdigest()})
        s_bytes, s_version = self._write_versioned(state.root, "snapshot", snapshot, _after(state, state.snapshot), expires)
        timestamp = copy.deepcopy(state.timestamp)
        timestamp.signed.snapshot_meta = MetaFile(version=s_version, length=len(s_bytes),
                                                  hashes={"sha256": hashlib.sha256(s_bytes).hexdigest()})
        self._write_timestamp(state, timestamp, expires.get("timestamp"))
        state = RepoState(state.root, targets, snapshot, timestamp, None)
        return state

    def _write_versioned(self, root: Any, role: str, md: Any, after: int, expires: dict[str, datetime]) -> tuple[bytes, int]:
        signers = self.keyring.require(root.signed, role)
        md.signed.expires = expires.get(role) or now() + self.expiry[role]
        for version in range(after + 1, after + 1 + VERSION_PROBES):
            md.signed.version = version
            md.signatures.clear()
            for signer in signers:
                md.sign(signer, append=True)
            data = md.to_bytes()
            if self.store.put_new(META + f"{version}.{role}.json", data):
                return data, version
        raise IntegrityError(f"{self.store.url}: no free {role} version after {after}")

    def _write_timestamp(self, state: RepoState, timestamp: Any, expires: datetime | None) -> None:
        signers = self.keyring.require(state.root.signed, "timestamp")
        timestamp.signed.version = _after(state, state.timestamp) + 1
        timestamp.signed.expires = expires or now() + self.expiry["timestamp"]
        timestamp.signatures.clear()
        for signer in signers:
            timestamp.sign(signer, append=True)
        self.store.put_if(META + "timestamp.json", timestamp.to_bytes(), state.token)


def read_root(path: Path) -> Any:
    """The root metadata in a ``root.json`` file (not verified here).

    Raises:
        IntegrityError: the file is not root metadata.
    """
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization import DeserializationError

    try:
        md = Metadata.from_bytes(path.read_bytes())
    except (OSError, DeserializationError) as exc:
        raise IntegrityError(f"{path} is not a readable root metadata file: {exc}") from None
    if not isinstance(md.signed, Root):
        raise IntegrityError(f"{path} holds {md.signed.type} metadata, not root")
    return md


def _after(state: RepoState, md: Any) -> int:
    return 0 if state.fresh else int(md.signed.version)


def _verify_chain(chain: list[Any], role: str, md: Any) -> None:
    """Signed by the newest root's keys, or (just after a key rotation, before the re-signing commit
    landed) by the keys of an earlier root; the next commit re-signs it with the current keys."""
    from tuf.api.exceptions import UnsignedMetadataError

    for root in reversed(chain[:-1]):
        try:
            root.verify_delegate(role, md)
            return
        except (UnsignedMetadataError, ValueError):  # not signed by that root's keys (or it names no such role)
            continue
    _verify(chain[-1], role, md)


def _verify(delegator: Any, role: str, md: Any) -> None:
    from tuf.api.exceptions import UnsignedMetadataError

    try:
        delegator.verify_delegate(role, md)
    except UnsignedMetadataError as exc:
        raise IntegrityError(f"{role} metadata in the store is not signed by its keys: {exc}") from None


def new_root(ring: Keyring, root_keyids: list[str], role_keyids: dict[str, list[str]], threshold: int) -> Any:
    """Root metadata v1 naming the given keys, signed by every root key."""
    from tuf.api.metadata import Metadata, Root

    root = Root(expires=now() + EXPIRY["root"], consistent_snapshot=True)
    for keyid in root_keyids:
        root.add_key(ring.signers[keyid].public_key, "root")
    for role, keyids in role_keyids.items():
        for keyid in keyids:
            root.add_key(ring.signers[keyid].public_key, role)
    root.roles["root"].threshold = threshold
    md = Metadata(root)
    for keyid in root_keyids:
        md.sign(ring.signers[keyid], append=True)
    return md


def rotate(repo: Repository, role: str, new_keys_dir: Path) -> tuple[str, str]:
    """Replace one key of ``role`` with a new one (root: one of the root keys), then re-sign.

    Writes root version N+1 signed by the old root's threshold and the new root's threshold, then
    commits fresh targets, snapshot and timestamp signed with the current keys, so devices move to
    the new key on their next refresh.

    Returns:
        (old key id, new key id).

    Raises:
        ConfigError: unknown role or missing keys.
    """
    from edgec.cloud_sync.keys import generate, retire

    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    previous = repo.latest_root()
    old = previous.signed.roles[role].keyids[0]
    signer = generate(new_keys_dir, role)
    repo.keyring.signers[signer.public_key.keyid] = signer
    updated = copy.deepcopy(previous)
    updated.signed.revoke_key(old, role)
    updated.signed.add_key(signer.public_key, role)
    updated.signed.version += 1
    updated.signed.expires = now() + repo.expiry["root"]
    updated.signatures.clear()
    repo.write_root(updated, previous)
    repo.commit(lambda targets: None)
    retire(repo.keyring.dirs, old)
    return old, signer.public_key.keyid
