"""Pruning through the CLI as a user runs it: fewer params and MACs in the bundle, reported by inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgec.core import errors
from tests.support.cli import run_cli

pytestmark = pytest.mark.integration


def test_build_prune_finetune_then_inspect(digits_assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(digits_assets["pt2"]), "--prune", "0.5", "--finetune", "edgec.benchmarks.zoo.digits_finetune:finetune",
                   "--precision", "int8", "--calib", str(digits_assets["calib"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    bundle = out / "digits-pruned50-onnx-int8"  # named apart from the unpruned model's bundles
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["name"] == "digits-pruned50"
    prune = next(p for p in manifest["passes"] if p["name"] == "prune_structured")
    assert prune["options"]["ratio"] == 0.5 and prune["options"]["finetune"].endswith(":finetune")
    assert prune["stats"]["after"]["params"] < 0.5 * prune["stats"]["before"]["params"]
    assert prune["stats"]["after"]["macs"] < 0.5 * prune["stats"]["before"]["macs"]
    assert manifest["parity"]["reference"] == "pt2 fp32 after structured pruning"
    assert manifest["model_cost"]["macs"] == prune["stats"]["after"]["macs"]
    unpruned = manifest["parity"]["unpruned"]  # fine-tuned: the answers of the unpruned model, no warning
    assert unpruned["outputs"]["output"]["top1_agreement"] >= 0.9 and "WARNING" not in proc.stderr
    info = json.loads(run_cli("inspect", str(bundle), "--json").stdout)
    assert info["pruning"][0]["after"]["macs"] == info["macs"]
    assert "pruning (prune_structured): params" in run_cli("inspect", str(bundle)).stdout
    assert run_cli("verify", str(bundle)).returncode == 0


def test_prune_without_finetune_warns_with_parity_against_the_unpruned_model(digits_assets: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(digits_assets["pt2"]), "--prune", "0.3", "--calib", str(digits_assets["calib"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "digits-pruned30-onnx-fp32" / "manifest.json").read_text())
    assert manifest["parity"]["outputs"]["output"]["cosine"] > 0.9999  # against the pruned model: perfect, and beside the point
    unpruned = manifest["parity"]["unpruned"]
    assert unpruned["reference"] == "pt2 fp32 before pruning" and unpruned["compared"] == "the bundle"
    assert unpruned["samples"] == 128 and unpruned["inputs"]["kind"] == "calibration"
    metrics = unpruned["outputs"]["output"]
    assert metrics["top1_agreement"] < 0.9 and metrics["cosine"] < 0.95  # measured: 97/128, cosine 0.75
    assert f"against the unpruned model (the bundle): cosine {metrics['cosine']:.6f}" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("edgec: WARNING: ")]
    assert len(warnings) == 1, proc.stderr
    assert f"same top-1 class on {metrics['top1_agree']}/128" in warnings[0] and "--finetune" in warnings[0]


def test_prune_rejects_onnx_sources_and_bad_ratios(conv_onnx: Path, digits_assets: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--prune", "0.3", "--out", str(tmp_path / "a"))
    assert proc.returncode == errors.EXIT_UNSUPPORTED and "PyTorch source" in proc.stderr
    proc = run_cli("build", str(digits_assets["pt2"]), "--prune", "1.5", "--out", str(tmp_path / "b"))
    assert proc.returncode == errors.EXIT_CONFIG and "--prune" in proc.stderr
    proc = run_cli("build", str(digits_assets["pt2"]), "--finetune", "x:y", "--out", str(tmp_path / "c"))
    assert proc.returncode == errors.EXIT_CONFIG and "give --prune" in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abc")
