"""The shim's bounded ``.npz`` reader and the golden file's limit: what numpy reads, within sizes checked first."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgec.core.bundle import write_golden
from edgec.runtime_shims import bounded_npz, measure

MIB = 1 << 20


def test_golden_written_by_the_compiler_reads_back_as_numpy_reads_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32), "ids": np.arange(4, dtype=">i8")}
              for _ in range(3)]
    outputs = [{"y": rng.standard_normal((1, 10)).astype(np.float16)} for _ in range(3)]
    write_golden(tmp_path / "golden.npz", inputs, outputs)
    got = measure.read_golden_arrays(tmp_path / "golden.npz")
    with np.load(tmp_path / "golden.npz") as want:
        assert sorted(got) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])
            assert got[name].dtype == want[name].dtype
    got_in, got_out = measure.read_golden(tmp_path / "golden.npz")
    np.testing.assert_array_equal(got_in[2]["x"], inputs[2]["x"])
    np.testing.assert_array_equal(got_out[1]["y"], outputs[1]["y"])


def test_archive_whose_end_record_lists_too_many_members_is_refused_before_zipfile_reads_them(tmp_path: Path) -> None:
    # a directory that claims 70,000 entries and holds none: zipfile would build (or fail on) them
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0, 0, 0)
    locator = struct.pack("<IIQI", 0x07064B50, 0, 0, 1)
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 70_000, 70_000, 0, 0)
    (tmp_path / "many.npz").write_bytes(record + locator + end)
    with pytest.raises(bounded_npz.ArrayReadError, match="holds 70000 members; at most 4096"):
        bounded_npz.read_npz(tmp_path / "many.npz", bounded_npz.Budget(MIB))
    with zipfile.ZipFile(tmp_path / "five.npz", "w") as archive:
        for i in range(5):
            archive.writestr(f"a{i}.npy", b"")
    with pytest.raises(bounded_npz.ArrayReadError, match="holds 5 members; at most 4 are read"):
        bounded_npz.read_npz(tmp_path / "five.npz", bounded_npz.Budget(MIB), max_members=4)


def test_golden_limit_is_256_mib_or_16_times_the_file_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = tmp_path / "small.npz", tmp_path / "large.npz"
    small.write_bytes(bytes(1000))
    with large.open("wb") as fh:
        fh.truncate(32 * MIB)  # sparse: 32 MiB on paper
    monkeypatch.delenv(measure.GOLDEN_ENV, raising=False)
    assert measure.golden_limit(small) == 256 * MIB
    assert measure.golden_limit(large) == 16 * 32 * MIB
    assert measure.golden_limit(large, 1.5) == int(1.5 * MIB)
    monkeypatch.setenv(measure.GOLDEN_ENV, "8")
    assert measure.golden_limit(large) == 8 * MIB
    assert measure.golden_limit(large, 2) == 2 * MIB  # the flag wins over the environment
    monkeypatch.setenv(measure.GOLDEN_ENV, "lots")
    with pytest.raises(ValueError, match="EDGEC_GOLDEN_LIMIT_MB='lots'; expected a number of MiB > 0"):
        measure.golden_limit(small)


def test_budget_is_shared_by_the_files_of_one_read(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(100, np.float32))
    budget = bounded_npz.Budget(2 * (tmp_path / "a.npy").stat().st_size - 1, hint="raise it")
    assert bounded_npz.read_npy(tmp_path / "a.npy", budget).shape == (100,)
    with pytest.raises(bounded_npz.ArrayReadError, match=r"with the files read before it\), above the limit .*; raise it"):
        bounded_npz.read_npy(tmp_path / "a.npy", budget)
