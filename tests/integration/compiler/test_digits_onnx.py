"""The shipped example end to end through the CLI: the digits CNN keeps its accuracy at INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks.zoo import digits
from edgec.core.bundle import load_manifest
from edgec.runtime_shims.ort import OrtRunner
from tests.support.cli import run_cli

pytestmark = pytest.mark.integration


def held_out_accuracy(bundle: Path, eval_npz: Path) -> float:
    data = np.load(eval_npz)
    with OrtRunner(str(bundle / "model.onnx")) as runner:
        logits = runner.infer({"x": data["x"]})["output"]
    return digits.accuracy(logits, data["labels"])


@pytest.fixture(scope="module")
def bundles(digits_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32, fp16 and int8 bundles from one ``edgec build --precision fp32,fp16,int8`` (the source loaded once)."""
    out = tmp_path_factory.mktemp("digits-bundles")
    proc = run_cli("build", str(digits_assets["pt2"]), "--target", "onnx", "--precision", "fp32,fp16,int8",
                   "--calib", str(digits_assets["calib"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return {precision: out / f"digits-onnx-{precision}" for precision in ("fp32", "fp16", "int8")}


def test_fp32_bundle_matches_the_trained_model(bundles: dict[str, Path], digits_assets: dict[str, Path]) -> None:
    acc = held_out_accuracy(bundles["fp32"], digits_assets["eval"])
    assert acc > 0.95  # a real model, not noise


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_keeps_held_out_accuracy_within_one_point(bundles: dict[str, Path], digits_assets: dict[str, Path], precision: str) -> None:
    fp32 = held_out_accuracy(bundles["fp32"], digits_assets["eval"])
    reduced = held_out_accuracy(bundles[precision], digits_assets["eval"])
    assert reduced >= fp32 - 0.01, (precision, fp32, reduced)


def test_int8_is_static_qdq_calibrated_on_the_digits(bundles: dict[str, Path]) -> None:
    m = load_manifest(bundles["int8"])
    assert [p["name"] for p in m.passes] == ["export_onnx", "simplify", "quantize_static"]
    assert m.calibration is not None and m.calibration["samples"] == 256
    assert m.parity["outputs"]["output"]["top1_agreement"] >= 0.875
    fp32_size = (bundles["fp32"] / "model.onnx").stat().st_size
    assert (bundles["int8"] / "model.onnx").stat().st_size < 0.4 * fp32_size


def test_all_digits_bundles_verify(bundles: dict[str, Path]) -> None:
    proc = run_cli("verify", *[str(b) for b in bundles.values()])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok ") == 3
