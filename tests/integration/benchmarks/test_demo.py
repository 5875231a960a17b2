"""``make demo`` end to end, cut down to the onnx target and one training epoch: it trains the 32x32 digits
CNN, builds and verifies fp32 and int8 bundles, prints the table and what to run next, and its INT8 bundle
is a fraction of the fp32 one. Latency is printed by the demo but never asserted (timing is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgec.core import errors
from tests.support.cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.integration


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgec.benchmarks.demo", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo-out")
    proc = run_demo("--targets", "onnx", "--epochs", "1", "--runs", "20", "--out", str(out))
    return proc, out


@pytest.fixture(scope="module")
def rows(demo: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, dict[str, Any]]:
    proc, out = demo
    assert proc.returncode == 0, proc.stderr
    return {r["precision"]: r for r in json.loads((out / "demo.json").read_text())}


@pytest.mark.slow
def test_demo_prints_a_row_per_bundle_and_the_commands_to_run_next(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = demo
    assert proc.returncode == 0, proc.stderr
    table = [line.split() for line in proc.stdout.splitlines() if line.startswith("onnx ")]
    assert [cells[:2] for cells in table] == [["onnx", "fp32"], ["onnx", "int8"]]
    assert "what next:" in proc.stdout
    for command in ("edgec verify", "edgec bench", "edgec inspect", "edgec publish"):
        assert command in proc.stdout, command
    assert f"edgec inspect {out / 'bundles' / 'digits-wide-onnx-int8'}" in proc.stdout


@pytest.mark.slow
def test_demo_bundles_pass_edgec_verify(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = demo
    bundles = sorted((out / "bundles").iterdir())
    assert [b.name for b in bundles] == ["digits-wide-onnx-fp32", "digits-wide-onnx-int8"]
    proc = run_cli("verify", *map(str, bundles))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_demo_int8_onnx_bundle_is_under_04x_the_fp32_size(rows: dict[str, dict[str, Any]], demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = demo
    assert rows["int8"]["size"] < 0.4 * rows["fp32"]["size"], (rows["int8"]["size"], rows["fp32"]["size"])
    files = {p: (out / "bundles" / f"digits-wide-onnx-{p}" / "model.onnx").stat().st_size for p in ("fp32", "int8")}
    assert files["int8"] < 0.4 * files["fp32"], files
    assert files["fp32"] > 4_000_000  # the wide CNN (1.15 M float32 weights), not the 24k-parameter one


@pytest.mark.slow
def test_demo_int8_keeps_parity_and_held_out_accuracy(rows: dict[str, dict[str, Any]]) -> None:
    assert rows["fp32"]["cosine"] > 0.9999
    assert rows["int8"]["cosine"] > 0.99
    assert rows["int8"]["accuracy"] >= rows["fp32"]["accuracy"] - 0.02, rows
    assert rows["int8"]["speedup"] is not None  # measured, and compared with the same target's fp32


def test_demo_refuses_an_unknown_target_before_training(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    proc = run_demo("--targets", "onnx,nosuch", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "nosuch", "--targets", "onnx")
    assert not out.exists()
