"""The output folder of ``edgec build``: checked before any work, bundles moved into place by rename, and the
debris of a build killed half-way restored or removed by the next build.

Rules:
1. ``--out`` must be (or become) a directory edgec can create files in; this is checked before the model is
   imported, and folders created for the check are removed again when the build fails.
2. A bundle is assembled in ``.NAME.tmp-PID-XXXX`` and renamed to ``NAME``; ``--force`` first renames the old
   bundle to ``.NAME.old-PID`` and removes it once the new one is in place.
3. Debris of a dead process (its PID no longer runs): a ``.NAME.old-PID`` with no ``NAME`` beside it is the
   previous bundle of a ``--force`` build killed between its two renames and is renamed back to ``NAME``; any
   other ``.NAME.old-PID`` and every ``.NAME.tmp-PID-*`` is removed. Debris of a live process is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgec.core.errors import ConfigError

BUNDLE_MODE = 0o755


def prepare(out: Path) -> Path | None:
    """Create ``out`` if needed and check that files can be created in it (rule 1).

    Returns:
        The topmost folder this call created (pass it to :func:`remove_created`), or None.

    Raises:
        ConfigError: ``out`` is a file, lies under a file, or is not writable.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory", hint="give a directory for the bundles")
    created = _first_missing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".edgec-probe-", dir=out))
    except OSError as exc:
        remove_created(out, created)
        raise ConfigError(f"--out {out} is not writable ({exc.strerror or exc}); expected a directory edgec can create files in") from None
    return created


def remove_created(out: Path, created: Path | None) -> None:
    """Remove ``out`` and its parents up to ``created`` (as returned by :func:`prepare`) where they are empty."""
    if created is None:
        return
    for folder in (out, *out.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def _first_missing(out: Path) -> Path | None:
    missing = None
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


def staging_dir(final: Path) -> Path:
    """A new, empty ``.NAME.tmp-PID-XXXX`` folder beside ``final`` (rule 2)."""
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))


def recover(final: Path, log: Callable[[str], None] = lambda m: None) -> bool:
    """Restore or remove the debris that dead builds left beside ``final`` (rule 3).

    Returns:
        True when a bundle moved aside by a killed ``--force`` build was renamed back to ``final``.
    """
    if not final.parent.is_dir():
        return False
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(old|tmp)-(\d+)(-.*)?")
    dead = [(m.group(1), path) for path in final.parent.iterdir()
            if (m := pattern.fullmatch(path.name)) and not pid_alive(int(m.group(2)))]
    olds = sorted((p for kind, p in dead if kind == "old"), key=lambda p: p.lstat().st_mtime, reverse=True)
    restored = False
    if olds and not (final.exists() or final.is_symlink()):
        os.replace(olds.pop(0), final)
        log(f"restored {final} from a build --force that was killed before it finished")
        restored = True
    for path in olds + [p for kind, p in dead if kind == "tmp"]:
        log(f"removing {path.name}, left by a build that did not finish")
        _remove(path)
    return restored


def publish(staging: Path, final: Path, force: bool) -> None:
    """Rename the finished ``staging`` folder to ``final``, replacing an existing bundle only with ``force`` (rule 2).

    Raises:
        ConfigError: ``final`` exists and ``force`` is false.
    """
    if final.exists():
        if not force:
            raise ConfigError(f"output bundle {final} already exists", hint="pass --force to replace it")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            os.replace(old, final)
            raise
        _remove(old)
    else:
        os.replace(staging, final)
    os.chmod(final, BUNDLE_MODE)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs (this process included); True where that cannot be told."""
    if pid == os.getpid() or os.name == "nt":  # on Windows, os.kill(pid, 0) would send CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: it runs as another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
