"""Golden inputs that make the parity check mean something: spread over the calibration set, and said
to be synthetic when they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.cli import run_cli


def _sorted_calib(path: Path, count: int = 32) -> Path:
    """Sample ``i`` is filled with ``i / count``: a set sorted by class looks like this."""
    values = np.arange(count, dtype=np.float32)[:, None, None, None] / count
    np.savez(path, x=values * np.ones((count, 3, 8, 8), np.float32))
    return path




def test_golden_inputs_are_spread_over_the_calibration_set_not_its_first_samples(conv_onnx: Path, tmp_path: Path) -> None:
    calib = _sorted_calib(tmp_path / "sorted.npz")
    outcome = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "out", calib=calib, golden_samples=4))
    golden = np.load(outcome.bundle_dir / "golden.npz")
    picked = np.rint(golden["inputs/x"][:, 0, 0, 0, 0] * 32).astype(int).tolist()
    assert picked == [0, 8, 16, 24]
    assert outcome.manifest.parity["golden_source"] == {
        "kind": "calibration", "data": "sorted.npz", "of": 32, "selection": "evenly spaced", "indices": [0, 8, 16, 24]}


def test_build_says_when_golden_inputs_are_synthetic(conv_onnx: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--out", str(tmp_path / "out"), "--golden-samples", "3")
    assert proc.returncode == 0, proc.stderr
    assert "golden inputs: 3 synthetic random inputs (no --calib): a top-1 agreement on noise means little" in proc.stdout
    manifest = json.loads((tmp_path / "out" / "tiny-onnx-fp32" / "manifest.json").read_text())
    assert manifest["parity"]["golden_source"]["kind"] == "synthetic"
    assert manifest["parity"]["golden_source"]["seed"] == 0


def test_build_names_where_calibration_golden_inputs_came_from(conv_onnx: Path, tmp_path: Path) -> None:
    calib = _sorted_calib(tmp_path / "sorted.npz")
    proc = run_cli("build", str(conv_onnx), "--out", str(tmp_path / "out"), "--calib", str(calib))
    assert proc.returncode == 0, proc.stderr
    assert "golden inputs: 8 of 32 calibration samples (sorted.npz), evenly spaced" in proc.stdout
    assert "synthetic" not in proc.stdout
