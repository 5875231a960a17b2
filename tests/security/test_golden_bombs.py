"""A bundle's golden file cannot exhaust memory: bombs and lying ``.npy`` headers get exit 8 in one line.

The manifest and ``golden.npz`` come from whoever wrote the bundle, so their hashes agree with a hostile
file. ``np.load`` inflated a 1 MB member to 1 GiB (or tried to allocate what a header claimed: a
``MemoryError`` traceback, exit 1) in ``python -m edgec_shim``, ``edgec verify`` and the device agent's
health check. All of them now read it with ``runtime_shims/bounded_npz.py`` (shipped in the bundle as
``edgec_shim/bounded_npz.py``) within the golden limit, checked before inflating or allocating.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.core import errors
from tests.support.cli import assert_one_line_error
from tests.support.models import make_conv_onnx
from tests.support.npz_bombs import MIB, Member, array_member, deflated_member, npy_header, write_zip

SAMPLE_BYTES = 3 * 8 * 8 * 4  # one (3, 8, 8) float32 sample of the tiny conv model
BOMB_MB = 1024
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")
HEALTH = ("import sys; from pathlib import Path; from edgec.cloud_sync.health import check_health\n"
          "try:\n    check_health(Path(sys.argv[1]))\nexcept Exception as exc:\n"
          "    print(f'{type(exc).__name__}: {exc}', file=sys.stderr); sys.exit(8)\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fp32 ONNX bundle, built once for the module."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    folder = tmp_path_factory.mktemp("golden-bombs")
    source = make_conv_onnx(folder / "tiny.onnx")
    return build(BuildConfig(source=str(source), out=folder / "out", name="tiny", cache=False)).bundle_dir


def _run(tmp_path: Path, cmd: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``cmd`` and return it with its peak resident memory in bytes."""
    rss = tmp_path / f"maxrss-{len(list(tmp_path.glob('maxrss-*')))}"
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(rss), *cmd], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=300)
    return proc, int(rss.read_text()) * 1024


def _shim(tmp_path: Path, bundle: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``python -m edgec_shim ARGS`` from inside the bundle, with only the bundle on the import path."""
    return _run(tmp_path, [sys.executable, "-m", "edgec_shim", *args], bundle, PYTHONPATH=str(bundle), **env)


def _edgec_verify(tmp_path: Path, bundle: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    return _run(tmp_path, [sys.executable, "-m", "edgec.compiler", "verify", str(bundle)], tmp_path, **env)


def _agent_health(tmp_path: Path, bundle: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """The device agent's health check (``check_health``), in its own process."""
    return _run(tmp_path, [sys.executable, "-c", HEALTH, str(bundle)], tmp_path)


def _hostile(built: Path, root: Path, member: Member) -> Path:
    """A copy of the bundle whose golden ``inputs/x`` is ``member``, the manifest rehashed to agree."""
    bundle = shutil.copytree(built, root / "hostile")
    with np.load(built / "golden.npz") as golden:
        genuine = [array_member(f"{name}.npy", golden[name]) for name in golden.files if name != "inputs/x"]
    write_zip(bundle / "golden.npz", [member, *genuine])
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (bundle / entry["path"]).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return bundle


def _bomb(built: Path, root: Path) -> Path:
    """``inputs/x.npy`` of zero samples inflating to 1 GiB, from about 1 MB of file; sizes declared honestly."""
    head = npy_header((BOMB_MB * MIB // SAMPLE_BYTES, 3, 8, 8))
    bundle = _hostile(built, root, deflated_member("inputs/x.npy", head, BOMB_MB * MIB))
    assert (bundle / "golden.npz").stat().st_size < 2 * MIB
    return bundle


@pytest.fixture(scope="module")
def honest_peaks(built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Peak memory of the shim, ``edgec verify`` and the health check on the intact bundle (which they pass)."""
    folder = tmp_path_factory.mktemp("honest")
    peaks = {}
    for kind, run in (("shim", lambda: _shim(folder, built, "verify", ".")),
                      ("edgec", lambda: _edgec_verify(folder, built)), ("agent", lambda: _agent_health(folder, built))):
        proc, peaks[kind] = run()
        assert proc.returncode == 0, proc.stderr
    return peaks


@pytest.mark.parametrize("command", [("verify", "."), ("bench", ".", "--runs", "2", "--warmup", "0")])
def test_shim_refuses_golden_zip_bomb_before_inflating_it(
        built: Path, tmp_path: Path, honest_peaks: dict[str, int], command: tuple[str, ...]) -> None:
    bundle = _bomb(built, tmp_path)
    proc, peak = _shim(tmp_path, bundle, *command)
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "golden.npz", "1,024.0 MB", "above the limit of 256.0 MB",
                          "EDGEC_GOLDEN_LIMIT_MB")
    assert peak < honest_peaks["shim"] + 64 * MIB, (peak, honest_peaks)


def test_edgec_verify_refuses_golden_zip_bomb_before_inflating_it(
        built: Path, tmp_path: Path, honest_peaks: dict[str, int]) -> None:
    bundle = _bomb(built, tmp_path)
    proc, peak = _edgec_verify(tmp_path, bundle)
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "golden.npz cannot be read as golden data", "1,024.0 MB",
                          "256.0 MB")
    assert peak < honest_peaks["edgec"] + 64 * MIB, (peak, honest_peaks)


def test_agent_health_check_refuses_golden_zip_bomb_before_inflating_it(
        built: Path, tmp_path: Path, honest_peaks: dict[str, int]) -> None:
    bundle = _bomb(built, tmp_path)
    proc, peak = _agent_health(tmp_path, bundle)
    assert_one_line_error(proc, 8, "IntegrityError", "golden.npz cannot be read as golden data", "1,024.0 MB")
    assert peak < honest_peaks["agent"] + 64 * MIB, (peak, honest_peaks)


@pytest.mark.parametrize("reader", ["shim", "edgec"])
def test_golden_whose_header_claims_a_huge_array_is_refused_without_allocating(
        built: Path, tmp_path: Path, reader: str) -> None:
    head = npy_header((10**12, 3, 8, 8))
    bundle = _hostile(built, tmp_path, deflated_member("inputs/x.npy", head, MIB))
    proc, _ = _shim(tmp_path, bundle, "verify", ".") if reader == "shim" else _edgec_verify(tmp_path, bundle)
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "'inputs/x.npy'", "(1000000000000, 3, 8, 8)",
                          f"holds {MIB} bytes")


def test_golden_limit_flag_and_environment_bound_a_genuine_golden_file(built: Path, tmp_path: Path) -> None:
    listed = {entry["path"] for entry in json.loads((built / "manifest.json").read_text())["files"]}
    assert "edgec_shim/bounded_npz.py" in listed  # the shim's reader ships (and is hashed) with the bundle
    proc, _ = _shim(tmp_path, built, "verify", ".", "--golden-limit-mb", "0.001")
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "golden.npz", "above the limit of 0.0 MB")
    proc, _ = _edgec_verify(tmp_path, built, EDGEC_GOLDEN_LIMIT_MB="0.001")
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "golden.npz", "above the limit of 0.0 MB")
    proc, _ = _edgec_verify(tmp_path, built, EDGEC_GOLDEN_LIMIT_MB="16")
    assert proc.returncode == 0, proc.stderr


def test_shim_bench_refuses_eval_zip_bomb_before_inflating_it(built: Path, tmp_path: Path) -> None:
    # --eval data may decode to 2048 MiB (or 16x its file); this 3 MB file inflates to 3 GiB
    samples = 3072 * MIB // SAMPLE_BYTES
    members = [deflated_member("x.npy", npy_header((samples, 3, 8, 8)), 3072 * MIB),
               array_member("labels.npy", np.zeros(samples // 1024, np.int64))]
    bomb = write_zip(tmp_path / "eval.npz", members)
    proc, peak = _shim(tmp_path, built, "bench", ".", "--runs", "2", "--warmup", "0", "--eval", str(bomb))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--eval", "eval.npz would decode to 3,072.0 MB",
                          "above the limit of 2,048.0 MB")
    assert peak < 512 * MIB, peak
