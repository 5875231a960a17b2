"""A bundle benchmarks on a 'device' that has only numpy and onnxruntime: a bare venv, no edgec."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.support.cli import run_cli

pytestmark = pytest.mark.slow


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}  # nothing from the host's environment leaks in
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _pip_install(python: Path, *packages: str, cwd: Path) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], capture_output=True,
                          text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_shim_benches_in_a_venv_with_only_numpy_and_onnxruntime(siblings: dict[str, Path], tmp_path: Path) -> None:
    device = tmp_path / "device"
    venv.EnvBuilder(with_pip=True).create(device / "venv")
    python = device / "venv" / "bin" / "python"
    bundle = shutil.copytree(siblings["int8"], device / "tiny-onnx-int8")
    _pip_install(python, f"numpy=={importlib.metadata.version('numpy')}", cwd=device)

    no_edgec = _run(python, "-c", "import edgec", cwd=bundle)
    assert no_edgec.returncode != 0 and "No module named 'edgec'" in no_edgec.stderr
    missing = _run(python, "-m", "edgec_shim", "bench", ".", cwd=bundle)
    assert missing.returncode == 3
    assert missing.stderr.strip() == "edgec_shim: error: onnxruntime is not installed (pip install onnxruntime)"

    _pip_install(python, f"onnxruntime=={importlib.metadata.version('onnxruntime')}", cwd=device)
    verified = _run(python, "-m", "edgec_shim", "verify", ".", cwd=bundle)
    assert verified.returncode == 0, verified.stderr
    proc = _run(python, "-m", "edgec_shim", "bench", ".", "--runs", "30", "--device", "bare-venv", cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"]["label"] == "bare-venv" and result["device"]["runtime"] == "onnxruntime"
    assert result["parity"]["ok"] is True and result["bundle"]["path"] == str(bundle)
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bare.json").write_text(proc.stdout)
    merged = run_cli("bench", str(siblings["fp32"]), "--runs", "20", "--merge", str(tmp_path / "results" / "bare.json"),
                     "--require-speedup", "0.000001", "--json")
    assert merged.returncode == 2  # the device's int8 has no fp32 sibling measured on that device
    assert "has no fp32 sibling" in merged.stderr
    merged = run_cli("bench", str(siblings["fp32"]), "--runs", "20", "--merge", str(tmp_path / "results" / "bare.json"), "--json")
    assert merged.returncode == 0, merged.stderr
    labels = sorted(r["device"]["label"] for r in json.loads(merged.stdout)["results"])
    assert "bare-venv" in labels and len(labels) == 2
