"""Peak resident memory as the shim measures it, in a fresh process (ru_maxrss survives fork+exec)."""

from __future__ import annotations

import subprocess
import sys


def test_peak_rss_grows_when_memory_is_touched() -> None:
    # A fresh process, and a block larger than the starting peak: on Linux ru_maxrss survives fork+exec,
    # so a child of a large test process starts with its parent's high-water mark.
    code = (
        "import numpy as np\n"
        "from edgec.runtime_shims import measure\n"
        "before = measure.peak_rss_bytes()\n"
        "block = np.ones((before + 256 * 1024 * 1024) // 8)\n"
        "print(before, measure.peak_rss_bytes())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = (int(v) for v in proc.stdout.split())
    assert after >= before + 128 * 1024 * 1024  # the import may already have set a peak above the resident size
