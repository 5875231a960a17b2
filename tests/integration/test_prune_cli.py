"""Pruning through the CLI as a user runs it: fewer params and MACs in the bundle, reported by inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgec.core import errors
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_build_prune_finetune_then_inspect(digits_assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(digits_assets["pt2"]), "--prune", "0.5", "--finetune", "edgec.benchmarks.zoo.digits_finetune:finetune",
                   "--precision", "int8", "--calib", str(digits_assets["calib"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    bundle = out / "digits-onnx-int8"
    manifest = json.loads((bundle / "manifest.json").read_text())
    prune = next(p for p in manifest["passes"] if p["name"] == "prune_structured")
    assert prune["options"]["ratio"] == 0.5 and prune["options"]["finetune"].endswith(":finetune")
    assert prune["stats"]["after"]["params"] < 0.5 * prune["stats"]["before"]["params"]
    assert prune["stats"]["after"]["macs"] < 0.5 * prune["stats"]["before"]["macs"]
    assert manifest["parity"]["reference"] == "pt2 fp32 after structured pruning"
    assert manifest["model_cost"]["macs"] == prune["stats"]["after"]["macs"]
    info = json.loads(run_cli("inspect", str(bundle), "--json").stdout)
    assert info["pruning"][0]["after"]["macs"] == info["macs"]
    assert "pruning (prune_structured): params" in run_cli("inspect", str(bundle)).stdout
    assert run_cli("verify", str(bundle)).returncode == 0


def test_prune_rejects_onnx_sources_and_bad_ratios(conv_onnx: Path, digits_assets: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--prune", "0.3", "--out", str(tmp_path / "a"))
    assert proc.returncode == errors.EXIT_UNSUPPORTED and "PyTorch source" in proc.stderr
    proc = run_cli("build", str(digits_assets["pt2"]), "--prune", "1.5", "--out", str(tmp_path / "b"))
    assert proc.returncode == errors.EXIT_CONFIG and "--prune" in proc.stderr
    proc = run_cli("build", str(digits_assets["pt2"]), "--finetune", "x:y", "--out", str(tmp_path / "c"))
    assert proc.returncode == errors.EXIT_CONFIG and "give --prune" in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abc")
