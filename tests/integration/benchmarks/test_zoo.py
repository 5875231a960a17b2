"""A real pretrained model from a package-registry wheel, end to end: fetched and hash-checked, calibrated on
its rendered-text data, built for onnx INT8, and judged on held-out lines against the source model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks import zoo_matrix
from edgec.benchmarks.zoo import data, metrics
from edgec.benchmarks.zoo import models as zoo
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def ppocr_cls() -> tuple[zoo.ZooModel, Path]:
    """PP-OCR's orientation classifier (opset 11, Constant weights, ``-1`` dims) from rapidocr-onnxruntime's wheel."""
    model = zoo.get("ppocr_cls")
    try:
        return model, zoo.fetch(model)
    except zoo.ZooError as exc:
        if exc.unreachable:
            pytest.skip(f"the package registry is unreachable, so the zoo wheel cannot be fetched: {exc}")
        raise


@pytest.mark.slow
def test_a_paddle_exported_classifier_from_its_wheel_builds_onnx_int8_that_keeps_its_decisions(
        ppocr_cls: tuple[zoo.ZooModel, Path], tmp_path: Path) -> None:
    model, path = ppocr_cls
    np.savez(tmp_path / "calib.npz", **data.text_lines_cls(path, 32, 0))
    done = run_cli(*zoo_matrix.build_command(model, path, ["onnx"], ["int8"], tmp_path)[3:])
    assert done.returncode == 0, done.stderr
    cell = json.loads(done.stdout)[0]
    bundle = Path(cell["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    upgrade = manifest["passes"][0]
    assert upgrade["name"] == "upgrade_opset" and upgrade["stats"]["opset_before"] == 11
    assert cell["parity"]["min_cosine"] > 0.97
    assert run_cli("verify", str(bundle)).returncode == 0
    held_out = data.text_lines_cls(path, 16, 1)
    feeds = [{"x": held_out["x"][i]} for i in range(16)]
    outputs, latency_ms, runtime = zoo_matrix.run_bundle(bundle, feeds)
    reference = zoo_matrix.reference_outputs(model, path, feeds)
    agreement = metrics.top1_agreement(reference, outputs)
    assert np.mean(agreement) >= 0.9 and latency_ms > 0 and runtime == "onnxruntime"
    # the data is what the model was trained on: FP32 tells the upside-down lines (every other one) apart
    assert np.mean([r[next(iter(r))].argmax() == i % 2 for i, r in enumerate(reference)]) >= 0.75


@pytest.mark.slow
def test_a_recognizer_whose_pooling_outgrows_a_halved_height_builds_for_openvino_proving_its_first_size(
        ppocr_cls: tuple[zoo.ZooModel, Path], tmp_path: Path) -> None:
    """PP-OCR's recognizer (same wheel): OpenVINO refuses the golden set's second size of the dynamic dims (its
    AveragePool kernel is taller than the halved feature map, which onnxruntime pads), so the bundle keeps its
    dynamic width, proves the first size and says why the second was dropped."""
    model = zoo.get("ppocr_rec")
    path = zoo.fetch(model)
    np.savez(tmp_path / "calib.npz", **data.text_lines(path, 8, 0))
    done = run_cli("build", str(path), "--target", "openvino", "--input", "x:1x3x48x320", "--calib",
                   str(tmp_path / "calib.npz"), "--out", str(tmp_path / "out"), "--json")
    assert done.returncode == 0, done.stderr
    bundle = Path(json.loads(done.stdout)[0]["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "AvgPool" in manifest["parity"]["second_shape_refused"]
    assert isinstance(manifest["inputs"][0]["shape"][3], str)  # the width stays dynamic (named)
    assert run_cli("verify", str(bundle)).returncode == 0
