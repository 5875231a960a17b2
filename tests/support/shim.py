"""Running a bundle's shim (edgec_shim) with only the bundle on the import path, labelled eval sets and canonical JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_shim(bundle: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m edgec_shim ARGS`` with only the bundle on the import path for the shim."""
    env = {**os.environ, "PYTHONPATH": str(bundle)}
    return subprocess.run([sys.executable, "-m", "edgec_shim", *args], capture_output=True, text=True,
                          cwd=cwd or bundle, env=env, timeout=300)


def labelled_eval(path: Path, model: Path, count: int = 40, shift: int = 0) -> Path:
    """Inputs plus labels = the FP32 model's own argmax (shifted by ``shift`` classes), computed with onnxruntime."""
    import onnxruntime as ort

    x = np.random.default_rng(7).standard_normal((count, 3, 8, 8)).astype(np.float32)
    logits = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.savez(path, x=x, labels=(logits.argmax(1) + shift) % logits.shape[1])
    return path


def load_json(text: str) -> dict:
    data = json.loads(text)
    assert text.strip() == json.dumps(data, sort_keys=True, indent=2).strip(), "JSON is not canonical (sorted keys)"
    return data
