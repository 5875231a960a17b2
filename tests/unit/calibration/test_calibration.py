"""Calibration readers and the CalibrationSet: layouts, subsets, digests, casting and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.calibration import CalibrationSet, load_calibration
from edgec.calibration.readers import ImagePreprocess
from edgec.core.errors import CalibrationError, ConfigError
from edgec.core.types import TensorSpec

IMG = (TensorSpec("x", ("batch", 3, 8, 8), "float32"),)
TEXT = (TensorSpec("input_ids", ("b", "s"), "int64"), TensorSpec("attention_mask", ("b", "s"), "int64"))


def test_npz_samples_get_a_batch_axis(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.ones((5, 3, 8, 8), np.float32))
    calib = load_calibration(tmp_path / "c.npz", IMG)
    assert len(calib) == 5 and calib.feed(0)["x"].shape == (1, 3, 8, 8)


def test_multi_input_npz_and_integer_widening(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", input_ids=np.arange(12, dtype=np.int32).reshape(3, 4), attention_mask=np.ones((3, 4), np.int64))
    calib = load_calibration(tmp_path / "c.npz", TEXT)
    feed = calib.feed(2)
    assert feed["input_ids"].dtype == np.int64 and feed["input_ids"].tolist() == [[8, 9, 10, 11]]


def test_folder_of_npz_files_is_concatenated_in_name_order(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", x=np.full((2, 3, 8, 8), 2, np.float32))
    np.savez(tmp_path / "a.npz", x=np.full((1, 3, 8, 8), 1, np.float32))
    calib = load_calibration(tmp_path, IMG)
    assert [float(f["x"].mean()) for f in calib.feeds()] == [1.0, 2.0, 2.0]


def test_folder_of_one_sample_npy_files(tmp_path: Path) -> None:
    for i in range(4):
        np.save(tmp_path / f"{i:03d}.npy", np.full((3, 8, 8), i, np.float32))
    calib = load_calibration(tmp_path, IMG)
    assert len(calib) == 4 and float(calib.feed(3)["x"].max()) == 3.0


def test_folder_of_npy_named_after_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "input_ids.npy", np.zeros((6, 5), np.int64))
    np.save(tmp_path / "attention_mask.npy", np.ones((6, 5), np.int64))
    assert len(load_calibration(tmp_path, TEXT)) == 6


def test_image_folder_with_declared_preprocessing(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    prep = ImagePreprocess.parse("resize=8x8,mean=0.5/0.5/0.5,std=0.5/0.5/0.5,layout=nchw")
    calib = load_calibration(tmp_path, IMG, preprocess=prep)
    x = calib.arrays["x"]
    assert x.shape == (3, 1, 3, 8, 8)
    np.testing.assert_allclose(x[2].mean(), (120 / 255 - 0.5) / 0.5, rtol=1e-5)


def test_bad_preprocess_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="resize=HxW"):
        ImagePreprocess.parse("resize=big")


def test_subset_is_deterministic_and_changes_the_digest(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).standard_normal((50, 3, 8, 8)).astype(np.float32)
    full = CalibrationSet.from_arrays({"x": arr}, IMG)
    a = CalibrationSet.from_arrays({"x": arr}, IMG, samples=10)
    b = CalibrationSet.from_arrays({"x": arr}, IMG, samples=10)
    assert len(a) == 10 and a.digest == b.digest != full.digest
    np.testing.assert_array_equal(a.arrays["x"], b.arrays["x"])


def test_digest_depends_on_the_bytes() -> None:
    arr = np.zeros((4, 3, 8, 8), np.float32)
    changed = arr.copy()
    changed[0, 0, 0, 0] = 1e-7
    assert CalibrationSet.from_arrays({"x": arr}, IMG).digest != CalibrationSet.from_arrays({"x": changed}, IMG).digest


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "y": np.zeros((4, 1), np.float32)}, "unknown 'y'"),
        ({"x": np.zeros((4, 8, 8, 3), np.float32)}, "samples of shape (8, 8, 3)"),
        ({"x": np.zeros((4, 3, 8, 8), np.int32)}, "dtype int32"),
        ({"x": np.full((4, 3, 8, 8), np.inf, np.float32)}, "NaN/inf"),
    ],
)
def test_mismatched_data_is_rejected_with_a_precise_message(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(CalibrationError) as info:
        CalibrationSet.from_arrays(arrays, IMG)
    assert message in str(info.value)


def test_inputs_with_different_sample_counts_are_rejected() -> None:
    with pytest.raises(CalibrationError, match="different sample counts"):
        CalibrationSet.from_arrays({"input_ids": np.zeros((3, 4), np.int64), "attention_mask": np.zeros((2, 4), np.int64)}, TEXT)


def test_truncated_npz_is_a_calibration_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.ones((5, 3, 8, 8), np.float32))
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[:200])
    with pytest.raises(CalibrationError, match="could not read"):
        load_calibration(tmp_path / "c.npz", IMG)
