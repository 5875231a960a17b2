"""The wheel installs everything under ``edgec.`` (package-dir mapping) and never as bare top-level names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_holds_only_the_edgec_namespace_and_the_console_script(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("edgec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"edgec", wheel.name.split("-py3")[0] + ".dist-info"}
    packages = {n.split("/")[1] for n in names if n.startswith("edgec/")}
    assert packages == {"core", "frameworks", "compiler", "targets", "calibration", "runtime_shims", "benchmarks", "cloud_sync"}
    assert "edgec/compiler/passes/quantize_static.py" in names and "edgec/targets/onnx.py" in names
    assert "edgec/cloud_sync/serving/app.py" in names and "edgec/benchmarks/zoo/digits.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgec = edgec.compiler.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
