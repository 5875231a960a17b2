"""Signing keys for the four TUF roles, kept as files in a keys directory.

Layout of the keys directory (default ``$EDGEC_KEYS_DIR`` or ``~/.config/edgec/keys``), created with
mode 0700, every private key 0600:

- ``root-<keyid8>.pem`` (several; the root role has a threshold), ``targets-<keyid8>.pem``,
  ``snapshot-<keyid8>.pem``, ``timestamp-<keyid8>.pem``: ed25519 private keys, PEM/PKCS#8, generated
  and used through securesystemslib's ``CryptoSigner`` (no home-made signing);
- ``root.json``: the first signed root metadata, the trust anchor that devices are given once
  (``edgec agent --trusted-root``).

Which file belongs to which role is decided by the current root metadata (key ids), not by the name;
the name only says what the key was created for. Root keys are needed only for ``keys init`` and
``keys rotate``: keep them offline and pass ``--root-keys DIR`` when rotating. A rotated-out key is
renamed to ``*.pem.retired``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.core.errors import ConfigError, IntegrityError

ROLES = ("root", "targets", "snapshot", "timestamp")
KEYS_ENV = "EDGEC_KEYS_DIR"


def default_keys_dir() -> Path:
    """``$EDGEC_KEYS_DIR`` or ``~/.config/edgec/keys``."""
    return Path(os.environ.get(KEYS_ENV) or Path.home() / ".config" / "edgec" / "keys")


@dataclass
class Keyring:
    """Private keys found in one or more key directories, by key id.

    Args:
        dirs: directories searched for ``*.pem`` files.
    """

    dirs: list[Path]
    signers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, *dirs: Path | None) -> Keyring:
        """Read every ``*.pem`` in the given directories (missing directories are skipped)."""
        from securesystemslib.signer import CryptoSigner

        ring = cls([d for d in dirs if d is not None])
        for folder in ring.dirs:
            for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
                signer = CryptoSigner(_load_private(path))
                ring.signers[signer.public_key.keyid] = signer
        return ring

    def for_role(self, root: Any, role: str) -> list[Any]:
        """Signers for ``role`` per the root metadata ``root`` (a ``tuf.api.metadata.Root``)."""
        return [self.signers[k] for k in root.roles[role].keyids if k in self.signers]

    def require(self, root: Any, role: str) -> list[Any]:
        """Signers for ``role``, at least its threshold of them.

        Raises:
            ConfigError: fewer keys than the role's threshold are available.
        """
        signers = self.for_role(root, role)
        threshold = root.roles[role].threshold
        if len(signers) < threshold:
            where = ", ".join(str(d) for d in self.dirs) or "no key directory"
            raise ConfigError(f"signing {role} metadata needs {threshold} of its keys; found {len(signers)} in {where}",
                              hint="pass --keys (and --root-keys for root) pointing at the key directories")
        return signers


def _load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(path.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{path} is not an unencrypted PEM private key: {exc}") from None


def write_private(folder: Path, role: str, signer: Any) -> Path:
    """Save a new signer's private key as ``<role>-<keyid8>.pem`` with mode 0600."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{role}-{signer.public_key.keyid[:8]}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(signer.private_bytes)
    return path


def generate(folder: Path, role: str) -> Any:
    """Generate an ed25519 key for ``role`` and save it in ``folder``."""
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    write_private(folder, role, signer)
    return signer


def retire(folders: list[Path], keyid: str) -> None:
    """Rename a rotated-out key's file to ``*.pem.retired`` so it is no longer loaded."""
    for folder in folders:
        for path in folder.glob(f"*-{keyid[:8]}.pem"):
            path.rename(path.with_name(path.name + ".retired"))


def init_keys(folder: Path, root_keys: int = 3, root_threshold: int = 2,
              root_folder: Path | None = None) -> tuple[Keyring, dict[str, list[str]]]:
    """Create keys for all four roles; returns the keyring and the key ids per role.

    Args:
        folder: where the online keys (targets, snapshot, timestamp) go.
        root_keys: how many root keys to create.
        root_threshold: how many root signatures a new root needs.
        root_folder: where root keys go (default: ``folder``).

    Raises:
        ConfigError: bad counts, or the folder already holds keys.
    """
    if not 1 <= root_threshold <= root_keys:
        raise ConfigError(f"--root-threshold must be between 1 and --root-keys ({root_keys}), got {root_threshold}")
    root_folder = root_folder or folder
    for existing in {folder, root_folder}:
        if existing.is_dir() and any(existing.glob("*.pem")):
            raise ConfigError(f"{existing} already holds keys; refusing to overwrite them", hint="use another --keys directory")
    ring = Keyring([folder, root_folder] if root_folder != folder else [folder])
    by_role: dict[str, list[str]] = {role: [] for role in ROLES}
    for role in ["root"] * root_keys + list(ROLES[1:]):
        signer = generate(root_folder if role == "root" else folder, role)
        ring.signers[signer.public_key.keyid] = signer
        by_role[role].append(signer.public_key.keyid)
    return ring, by_role
