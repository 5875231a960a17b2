"""A bundle's golden.npz keeps the proof, sized to the model: deflated, at most 25% of the model or 1 MiB (or
--golden-max-mb), fewer samples when they do not fit, the choice recorded in the manifest; rebuilds stay
byte-identical and `edgec verify` passes on what was kept."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import run_cli

SIDE = 224


def make_wide_input_onnx(path: Path) -> Path:
    """A 0.1k-weight model on 3x224x224 inputs: 8 golden samples are 4.8 MB, 1500 times the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[4, 4]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def wide(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.random((16, 3, SIDE, SIDE), dtype=np.float32))
    return make_wide_input_onnx(tmp_path / "wide.onnx"), tmp_path / "calib.npz"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_golden_of_large_inputs_keeps_fewer_samples_within_the_cap_and_still_verifies(wide, tmp_path: Path) -> None:
    model, calib = wide
    proc = run_cli("build", str(model), "--calib", str(calib), "--out", str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    bundle = tmp_path / "out" / "wide-onnx-fp32"
    golden = bundle / "golden.npz"
    assert golden.stat().st_size <= 1 << 20  # was 4,817,xxx bytes: eight uncompressed 600 kB samples
    stored = _manifest(bundle)["parity"]["golden_stored"]
    assert stored["of"] == 8 and 1 <= stored["samples"] < 8 and stored["cap_bytes"] == 1 << 20
    assert "do not fit" in stored["reason"] and stored["bytes"] == golden.stat().st_size
    with np.load(golden) as data:
        assert data["inputs/x"].shape[0] == stored["samples"]
    with zipfile.ZipFile(golden) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert f"golden.npz keeps {stored['samples']} of 8 samples" in proc.stdout
    verify = run_cli("verify", str(bundle))
    assert verify.returncode == 0, verify.stderr


def test_golden_max_mb_raises_the_cap_and_rebuilds_are_byte_identical(wide, tmp_path: Path) -> None:
    model, calib = wide
    digests = []
    for out in ("a", "b"):
        proc = run_cli("build", str(model), "--calib", str(calib), "--out", str(tmp_path / out), "--golden-max-mb", "16",
                       "--no-cache", "-q")
        assert proc.returncode == 0, proc.stderr
        golden = tmp_path / out / "wide-onnx-fp32" / "golden.npz"
        digests.append(hashlib.sha256(golden.read_bytes()).hexdigest())
    stored = _manifest(tmp_path / "a" / "wide-onnx-fp32")["parity"]["golden_stored"]
    assert stored["samples"] == stored["of"] == 8 and stored["cap"] == "--golden-max-mb 16" and "reason" not in stored
    assert digests[0] == digests[1]




def test_golden_max_mb_must_be_positive(tmp_path: Path) -> None:
    proc = run_cli("build", "m.onnx", "--golden-max-mb", "0", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "--golden-max-mb" in proc.stderr and "Traceback" not in proc.stderr
