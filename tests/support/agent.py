"""The device agent as a separate process with only what a device has importable, and its state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgec.cloud_sync.health import check_health

BLOCKER = """
import sys
class _Block:
    blocked = ("pydantic", "onnx", "onnxslim", "torch", "edgec.calibration", "edgec.targets", "edgec.benchmarks")
    def find_spec(self, name, path=None, target=None):
        compiler = name.startswith("edgec.compiler.") and name != "edgec.core.errors"
        if compiler or any(name == b or name.startswith(b + ".") for b in self.blocked):
            raise ImportError("blocked on this device: " + name)
        return None
sys.meta_path.insert(0, _Block())
from edgec.cloud_sync.agent import main
sys.exit(main())
"""


def run_agent(store_url: str, device: str, root: Path, keys: Path, *extra: str, env: dict | None = None,
              preexec=None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The agent in its own process, with only what a device has importable."""
    args = [sys.executable, "-c", BLOCKER, "--store", store_url, "--device-id", device, "--root", str(root),
            "--trusted-root", str(keys / "root.json"), *extra]
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, preexec_fn=preexec)


def active_bundle(root: Path) -> str:
    """Name of the bundle in the active slot, after checking its files and golden parity."""
    check_health(root / "current")
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    return str(manifest["name"])


def state(root: Path) -> dict:
    """The agent's state.json under ``root``."""
    return json.loads((root / "state.json").read_text())
