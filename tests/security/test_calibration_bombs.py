"""Calibration data is bounded: bombs, lying headers and misnamed files get exit 6 in one line, memory stays low.

The bombs are built in a few milliseconds from one deflated 1 MiB block of zeros repeated (each block ends
with a full flush, so its bytes do not depend on what came before): a 3 MB file that inflates to 3 GiB.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgec.calibration.readers import read_path
from edgec.core import errors
from edgec.core.types import TensorSpec
from tests.support.cli import assert_one_line_error
from tests.support.models import make_calib, make_conv_onnx
from tests.support.npz_bombs import MIB, deflated, npy_header, write_zip

SAMPLE_BYTES = 3 * 8 * 8 * 4  # one (3, 8, 8) float32 sample of the tiny conv model
INPUTS = (TensorSpec("x", ("batch", 3, 8, 8), "float32"),)
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def _bomb_npz(path: Path, inflated_mb: int, declared: int | None = None, samples: int | None = None) -> Path:
    """``x.npy`` of zero samples that inflates to ``inflated_mb`` MiB of data (plus its header)."""
    samples = samples if samples is not None else inflated_mb * MIB // SAMPLE_BYTES
    head = npy_header((samples, 3, 8, 8))
    raw, crc = deflated(head, inflated_mb * MIB)
    return write_zip(path, [("x.npy", raw, len(head) + inflated_mb * MIB if declared is None else declared, crc)])


def _build(tmp_path: Path, model: Path, calib: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``edgec build --precision int8 --calib ...`` and the peak resident memory (bytes) of that process."""
    rss = tmp_path / "maxrss"
    cmd = [sys.executable, "-c", MEASURE, str(rss), sys.executable, "-m", "edgec.compiler", "build", str(model),
           "--precision", "int8", "--calib", str(calib), "--out", str(tmp_path / "out"), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc, int(rss.read_text()) * 1024


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory: pytest.TempPathFactory) -> int:
    """Peak memory of an honest int8 build of the tiny model: what a refused bomb must stay near."""
    folder = tmp_path_factory.mktemp("baseline")
    proc, peak = _build(folder, make_conv_onnx(folder / "tiny.onnx"), make_calib(folder / "calib.npz"))
    assert proc.returncode == 0, proc.stderr
    return peak


def test_build_refuses_npz_whose_member_inflates_past_calib_max_mb(
        conv_onnx: Path, tmp_path: Path, baseline_rss: int) -> None:
    bomb = _bomb_npz(tmp_path / "bomb.npz", inflated_mb=256)
    assert bomb.stat().st_size < 1 * MIB
    proc, peak = _build(tmp_path, conv_onnx, bomb, "--calib-max-mb", "64")
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "bomb.npz", "256.0 MB", "64.0 MB", "--calib-max-mb")
    assert peak < baseline_rss + 32 * MIB, (peak, baseline_rss)
    assert not (tmp_path / "out").exists()


def test_build_refuses_npz_declaring_gigabytes_under_the_default_limit_without_inflating_it(
        conv_onnx: Path, tmp_path: Path, baseline_rss: int) -> None:
    bomb = _bomb_npz(tmp_path / "bomb.npz", inflated_mb=3072)
    assert bomb.stat().st_size < 4 * MIB
    proc, peak = _build(tmp_path, conv_onnx, bomb)
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "bomb.npz", "3,072.0 MB", "2,048.0 MB")
    assert peak < baseline_rss + 32 * MIB, (peak, baseline_rss)


def test_build_refuses_npz_whose_zip_header_understates_what_the_member_inflates_to(
        conv_onnx: Path, tmp_path: Path, baseline_rss: int) -> None:
    # the zip declares 16 samples (12 KiB); the deflate stream really holds 256 MiB
    declared = len(npy_header((16, 3, 8, 8))) + 16 * SAMPLE_BYTES
    bomb = _bomb_npz(tmp_path / "liar.npz", inflated_mb=256, declared=declared, samples=16)
    proc, peak = _build(tmp_path, conv_onnx, bomb)
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "liar.npz", "x.npy")
    assert peak < baseline_rss + 32 * MIB, (peak, baseline_rss)


def test_build_refuses_npz_member_whose_header_claims_a_huge_array(conv_onnx: Path, tmp_path: Path) -> None:
    head = npy_header((10**12, 3, 8, 8))
    raw, crc = deflated(head + bytes(4096), 0)
    bomb = write_zip(tmp_path / "claims.npz", [("x.npy", raw, len(head) + 4096, crc)])
    proc = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", str(conv_onnx), "--precision", "int8",
                           "--calib", str(bomb), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "claims.npz", "'x.npy'", "(1000000000000, 3, 8, 8)", "4096 bytes")


def test_build_refuses_npy_file_named_npz(conv_onnx: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 8, 8), np.float32))
    misnamed = (tmp_path / "calib.npy").rename(tmp_path / "calib.npz")
    proc = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", str(conv_onnx), "--precision", "int8",
                           "--calib", str(misnamed), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "calib.npz", "is a .npy array, not a .npz archive")


def test_read_refuses_npy_in_a_folder_whose_header_claims_a_huge_array(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "x.npy").write_bytes(npy_header((10**12, 3, 8, 8)) + bytes(4096))
    with pytest.raises(errors.CalibrationError, match=r"claims an array of shape \(1000000000000, 3, 8, 8\)"):
        read_path(folder, INPUTS, None)


def test_read_bounds_the_sum_of_npy_files_in_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"s{i}.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(errors.CalibrationError, match="above the calibration limit"):
        read_path(folder, INPUTS, None, max_bytes=2 * SAMPLE_BYTES + 300)
    assert read_path(folder, INPUTS, None, max_bytes=3 * SAMPLE_BYTES + 500)["x"].shape == (3, 3, 8, 8)


def test_read_refuses_npz_members_that_are_not_plain_arrays(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as zf:
        zf.writestr("x.npy", npy_header((1, 3, 8, 8)) + bytes(SAMPLE_BYTES))
        zf.writestr("payload.bin", b"\x7fELF")
    with pytest.raises(errors.CalibrationError, match="'payload.bin', which is not one uniquely named .npy"):
        read_path(tmp_path / "odd.npz", INPUTS, None)
    with zipfile.ZipFile(tmp_path / "many.npz", "w") as zf:
        for i in range(5000):
            zf.writestr(f"a{i}.npy", b"")
    with pytest.raises(errors.CalibrationError, match="5000 members"):
        read_path(tmp_path / "many.npz", INPUTS, None)
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(errors.CalibrationError, match="Python objects"):
        read_path(tmp_path / "objects.npz", INPUTS, None)


def test_bounded_reader_gives_numpys_arrays_for_stored_compressed_and_fortran_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.standard_normal((5, 3, 8, 8)).astype(np.float32))
    labels = np.arange(5, dtype=">i8")
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, x=x, labels=labels)
        got = read_path(path, INPUTS, None, max_bytes=x.nbytes + labels.nbytes + 4096)
        with np.load(path) as want:
            assert set(got) == {"x", "labels"}
            np.testing.assert_array_equal(got["x"], want["x"])
            np.testing.assert_array_equal(got["labels"], want["labels"])
            assert got["labels"].dtype == np.dtype(">i8")


def _png_bomb(path: Path, side: int) -> Path:
    """A valid grayscale PNG of side x side black pixels, a few hundred KiB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = side * (side + 1)  # a filter byte per row, then the pixels: all zeros
    pad = -rows % MIB
    raw, adler = deflated(b"", rows + pad, "adler32")  # rounded up to whole MiB of zeros; PIL stops after the image
    idat = b"\x78\xda" + raw + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("side", "flags", "fragment"), [
    (20_000, (), "decompression bomb"),  # 400 M pixels: PIL's DecompressionBombError escaped as exit 1
    (5_000, ("--calib-max-mb", "64"), "5000x5000 pixels"),  # 25 M pixels, under PIL's own limit
])
def test_build_refuses_image_calibration_whose_picture_decodes_past_the_limit(
        conv_onnx: Path, tmp_path: Path, side: int, flags: tuple[str, ...], fragment: str) -> None:
    pytest.importorskip("PIL.Image")
    folder = tmp_path / "images"
    folder.mkdir()
    _png_bomb(folder / "big.png", side)
    assert (folder / "big.png").stat().st_size < 1 * MIB
    proc = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", str(conv_onnx), "--precision", "int8",
                           "--calib", str(folder), "--out", str(tmp_path / "out"), *flags], capture_output=True, text=True)
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "big.png", fragment)


def test_calib_max_mb_defaults_agree_and_must_be_positive(conv_onnx: Path, conv_calib: Path, tmp_path: Path) -> None:
    from edgec.calibration.npyio import DEFAULT_MAX_MB
    from edgec.compiler.cli import _parser
    from edgec.compiler.config import BuildConfig

    args = _parser().parse_args(["build", "m.onnx"])
    assert args.calib_max_mb == BuildConfig(source="m.onnx").calib_max_mb == DEFAULT_MAX_MB
    proc = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", str(conv_onnx), "--calib", str(conv_calib),
                           "--calib-max-mb", "0", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--calib-max-mb")
