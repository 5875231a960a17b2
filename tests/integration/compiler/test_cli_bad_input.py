"""Bad input: one line on stderr, the family's exit code, no traceback, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.core import errors
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib


def test_missing_model_file_is_a_config_error_and_creates_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(tmp_path / "nope.onnx"), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "not found", "nope.onnx")
    assert not out.exists()


def test_truncated_onnx_is_an_export_error_without_writing_bundle(tmp_path: Path, conv_onnx: Path) -> None:
    data = conv_onnx.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = run_cli("build", str(bad), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "truncated.onnx")
    assert not out.exists()


def test_random_bytes_onnx_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = run_cli("build", str(bad), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "garbage.onnx")


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--target", "gameboy", "unknown target 'gameboy'"), ("--precision", "int3", "--precision")],
)
def test_unknown_target_or_precision_is_a_config_error(tmp_path: Path, conv_onnx: Path, flag: str, value: str, fragment: str) -> None:
    proc = run_cli("build", str(conv_onnx), flag, value, "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, fragment)
    assert not (tmp_path / "out").exists()


def test_bad_input_shape_flag(tmp_path: Path, conv_onnx: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--input", "x:1xtwo", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--input")


def test_input_shape_conflicting_with_model_is_rejected(tmp_path: Path, conv_onnx: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--input", "x:1x4x8x8", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "does not fit")


def _calib_case(tmp_path: Path, case: str) -> Path:
    rng = np.random.default_rng(0)
    if case == "wrong-name":
        return make_calib(tmp_path / "c.npz", name="images")
    if case == "wrong-shape":
        return make_calib(tmp_path / "c.npz", shape=(3, 16, 16))
    if case == "wrong-dtype":
        path = tmp_path / "c.npz"
        np.savez(path, x=rng.integers(0, 255, (8, 3, 8, 8)).astype(np.uint8))
        return path
    if case == "nan":
        arr = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
        arr[3, 1, 2, 2] = np.nan
        path = tmp_path / "c.npz"
        np.savez(path, x=arr)
        return path
    if case == "empty-folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if case == "zero-samples":
        path = tmp_path / "c.npz"
        np.savez(path, x=np.zeros((0, 3, 8, 8), np.float32))
        return path
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("wrong-name", "missing 'x'; unknown 'images'"),
        ("wrong-shape", "(3, 16, 16)"),
        ("wrong-dtype", "dtype uint8"),
        ("nan", "NaN/inf"),
        ("empty-folder", "is empty"),
        ("zero-samples", "no samples"),
    ],
)
def test_bad_calibration_data_is_a_calibration_error(tmp_path: Path, conv_onnx: Path, case: str, fragment: str) -> None:
    calib = _calib_case(tmp_path, case)
    out = tmp_path / "out"
    proc = run_cli("build", str(conv_onnx), "--precision", "int8", "--calib", str(calib), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_existing_bundle_is_not_overwritten_without_force(tmp_path: Path, conv_onnx: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("build", str(conv_onnx), "--out", str(out)).returncode == 0
    bundle = out / "tiny-onnx-fp32"
    before = (bundle / "manifest.json").read_bytes()
    proc = run_cli("build", str(conv_onnx), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "already exists", "--force")
    assert (bundle / "manifest.json").read_bytes() == before
    assert run_cli("build", str(conv_onnx), "--out", str(out), "--force").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32"]


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not even read")
    proc = run_cli("build", str(ckpt), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_UNSUPPORTED, "never unpickles")


def test_unrecognised_source_is_a_config_error(tmp_path: Path) -> None:
    proc = run_cli("build", "model.caffemodel", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "do not know how to import")


def test_verify_of_a_non_bundle_directory(tmp_path: Path) -> None:
    proc = run_cli("verify", str(tmp_path))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "manifest.json not found")
