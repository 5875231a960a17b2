"""Stage cache: outputs of importers and passes stored under a hash of input, stage, options and data.

Like Olive's cache, each entry is a directory named by its key, written to a temporary directory and
renamed into place, so a crashed build never leaves a half entry that a later build would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

META = "entry.json"


def default_cache_dir() -> Path:
    """``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec``, else ``~/.cache/edgec``."""
    if env := os.environ.get("EDGEC_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgec"


def cache_key(*parts: Any) -> str:
    """Hex sha256 over a JSON rendering of ``parts`` (sorted keys, so dict order never matters)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class StageCache:
    """Directory-per-key cache; disabled caches run every stage in a scratch directory.

    Args:
        root: cache directory; created on first use.
        enabled: when False, :meth:`get_or_create` always produces into a fresh scratch directory.
        scratch: where to produce when disabled.
    """

    def __init__(self, root: Path, enabled: bool = True, scratch: Path | None = None) -> None:
        self.root = root
        self.enabled = enabled
        self.scratch = scratch
        self.hits = 0
        self.misses = 0

    def get_or_create(self, key: str, produce: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
        """Return ``(entry_dir, meta, hit)``; on a miss ``produce(dir)`` writes files and returns JSON meta."""
        final = self.root / key[:2] / key
        if self.enabled and (final / META).is_file():
            self.hits += 1
            return final, json.loads((final / META).read_text()), True
        self.misses += 1
        parent = final.parent if self.enabled else (self.scratch or Path(tempfile.gettempdir()))
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=parent))
        try:
            meta = produce(tmp)
            (tmp / META).write_text(json.dumps(meta, sort_keys=True, indent=1))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not self.enabled:
            return tmp, meta, False
        try:
            os.replace(tmp, final)
        except OSError:  # another build stored the same key first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return final, json.loads((final / META).read_text()), False
