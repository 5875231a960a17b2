"""Hostile or clumsy CLI input (issue 16): absurd input shapes, unusable ``--out`` paths, the debris of a build
killed between its two renames, and a closed output pipe. Each gets one line and its family's exit code (or, for
the pipe, silence), never exit 1 with a traceback, and nothing half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.core import errors
from tests.conftest import REPO
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_conv_onnx

DEAD_PID = 99_999_999
"""Above Linux's largest pid_max (2^22): no process can have it."""


def _relu_onnx(path: Path, shape: list[int | str]) -> Path:
    """A one-node model (Relu) whose input ``x`` declares ``shape``, written without the checker."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


# --- absurd input shapes: refused before anything is allocated -------------------------------------------------


def test_build_refuses_input_dims_whose_sample_would_take_petabytes_before_allocating(tmp_path: Path) -> None:
    model = _relu_onnx(tmp_path / "dyn.onnx", ["N", "C", "H", "W"])
    out = tmp_path / "out"
    proc = run_cli("build", str(model), "--input", "x:1x3x100000000x100000000", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "'x'", "1x3x100000000x100000000", "PiB", "--input-max-mb 256")
    assert not out.exists()


def test_build_refuses_input_dims_beyond_int64_without_a_traceback(tmp_path: Path) -> None:
    model = _relu_onnx(tmp_path / "dyn.onnx", ["N", "C"])
    proc = run_cli("build", str(model), "--input", "x:1x99999999999999999999", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--input")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("x:-1x3x8x8", "bad --input 'x:-1x3x8x8'"), ("x:0x3", "bad --input 'x:0x3'"), ("x:1xthreex8x8", "bad --input"),
     ("x:1x3x8", "does not fit the model's shape"), ("x:1x3x8x8x1", "does not fit the model's shape")],
)
def test_build_refuses_malformed_or_wrong_rank_input_dims(tmp_path: Path, value: str, fragment: str) -> None:
    model = _relu_onnx(tmp_path / "dyn.onnx", ["N", "C", "H", "W"])
    out = tmp_path / "out"
    proc = run_cli("build", str(model), "--input", value, "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, fragment)
    _assert_nothing_written(out)


@pytest.mark.parametrize("shape", [[1_000_000_000, 1_000_000_000], ["N", 1_000_000_000, 1_000_000_000]])
def test_build_refuses_a_model_declaring_an_absurd_input_shape_before_allocating(tmp_path: Path, shape: list[int | str]) -> None:
    model = _relu_onnx(tmp_path / "huge.onnx", shape)
    out = tmp_path / "out"
    proc = run_cli("build", str(model), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "'x'", "EiB", "above the 256 MiB", "--input-max-mb")
    assert not out.exists()


def test_build_input_max_mb_raises_the_sample_limit(tmp_path: Path) -> None:
    model = _relu_onnx(tmp_path / "dyn.onnx", ["N", "C"])
    out = tmp_path / "out"
    refused = run_cli("build", str(model), "--input", "x:1x600000", "--input-max-mb", "2", "--out", str(out))
    assert_one_line_error(refused, errors.EXIT_CONFIG, "2.29 MiB", "above the 2 MiB")
    built = run_cli("build", str(model), "--input", "x:1x600000", "--input-max-mb", "3", "--golden-samples", "1", "--out", str(out))
    assert built.returncode == 0, built.stderr
    assert (out / "dyn-onnx-fp32" / "manifest.json").is_file()


def test_build_refuses_a_model_declaring_a_negative_input_dim(tmp_path: Path) -> None:
    model = _relu_onnx(tmp_path / "neg.onnx", [1, -3, 4])
    out = tmp_path / "out"
    proc = run_cli("build", str(model), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "'x'", "-3")
    assert not out.exists()


# --- --out that cannot receive a bundle: refused before importing -----------------------------------------------


def _unusable_out(tmp_path: Path, case: str) -> Path:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    if case == "a regular file":
        return afile
    if case == "a path under a regular file":
        return afile / "sub" / "dir"
    if case == "a read-only file system":
        return Path("/proc/edgec-out")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["a regular file", "a path under a regular file", "a read-only file system"])
def test_build_refuses_an_unwritable_out_before_importing_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    if case == "a read-only file system" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc (tests run as root, so a chmod'ed directory would still be writable)")
    out = _unusable_out(tmp_path, case)
    garbage = tmp_path / "garbage.onnx"  # importing it would fail with exit 5: exit 2 shows --out was checked first
    garbage.write_bytes(np.random.default_rng(0).bytes(512))
    proc = run_cli("build", str(garbage), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--out", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "garbage.onnx"]
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_build_refuses_an_existing_directory_it_cannot_write_into(tmp_path: Path) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    proc = run_cli("build", str(make_conv_onnx(tmp_path / "tiny.onnx")), "--out", "/proc")
    assert_one_line_error(proc, errors.EXIT_CONFIG, "--out /proc", "not writable")


def test_build_into_a_new_nested_out_that_fails_removes_the_folders_it_created(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(512))
    proc = run_cli("build", str(garbage), "--out", str(tmp_path / "a" / "b" / "c"))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "garbage.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.onnx"]


# --- a build --force killed between its two renames -------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """(model, out, manifest bytes) after one real build of the tiny CNN into ``out/tiny-onnx-fp32``."""
    model = make_conv_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    proc = run_cli("build", str(model), "--out", str(out), "--golden-samples", "2")
    assert proc.returncode == 0, proc.stderr
    return model, out, (out / "tiny-onnx-fp32" / "manifest.json").read_bytes()


def _crash_between_renames(out: Path) -> Path:
    """The state a SIGKILL leaves between ``final -> .final.old-PID`` and ``staging -> final``."""
    old = out / f".tiny-onnx-fp32.old-{DEAD_PID}"
    os.replace(out / "tiny-onnx-fp32", old)
    staging = out / f".tiny-onnx-fp32.tmp-{DEAD_PID}-k1lled"
    shutil.copytree(old, staging)
    return old


def test_build_without_force_restores_the_bundle_a_killed_force_build_moved_aside(built: tuple[Path, Path, bytes]) -> None:
    model, out, manifest = built
    _crash_between_renames(out)
    proc = run_cli("build", str(model), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "already exists", "restored", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32"]
    assert (out / "tiny-onnx-fp32" / "manifest.json").read_bytes() == manifest
    assert run_cli("verify", str(out / "tiny-onnx-fp32")).returncode == 0


def test_build_force_after_a_killed_force_build_replaces_the_bundle_and_leaves_no_debris(built: tuple[Path, Path, bytes]) -> None:
    model, out, manifest = built
    _crash_between_renames(out)
    proc = run_cli("build", str(model), "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32"]
    assert (out / "tiny-onnx-fp32" / "manifest.json").read_bytes() != manifest  # 8 golden samples now, not 2


def test_build_removes_a_dead_builds_old_copy_next_to_an_existing_bundle(built: tuple[Path, Path, bytes]) -> None:
    model, out, manifest = built
    shutil.copytree(out / "tiny-onnx-fp32", out / f".tiny-onnx-fp32.old-{DEAD_PID}")
    proc = run_cli("build", str(model), "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "already exists")
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32"]
    assert (out / "tiny-onnx-fp32" / "manifest.json").read_bytes() == manifest


def test_build_leaves_the_old_copy_of_a_live_build_alone(built: tuple[Path, Path, bytes]) -> None:
    model, out, _ = built
    live = out / f".tiny-onnx-fp32.old-{os.getpid()}"  # this test process: alive, maybe mid-rename
    os.replace(out / "tiny-onnx-fp32", live)
    proc = run_cli("build", str(model), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [live.name, "tiny-onnx-fp32"]


# --- a closed output pipe (edgec ... | head) --------------------------------------------------------------------


def _run_with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run edgec with its stdout a pipe whose reader has already gone (what ``| head -c 10`` does, made certain)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgec.compiler", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@pytest.mark.parametrize("command", ["inspect", "help"])
def test_a_closed_output_pipe_ends_edgec_quietly(tmp_path: Path, command: str) -> None:
    args = ["inspect", str(make_conv_onnx(tmp_path / "tiny.onnx")), "--json"] if command == "inspect" else ["--help"]
    proc = _run_with_closed_stdout(*args)
    assert proc.stderr == ""
    assert proc.returncode == 0


def test_build_with_a_closed_output_pipe_still_finishes_and_says_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_with_closed_stdout("build", str(make_conv_onnx(tmp_path / "tiny.onnx")), "--out", str(out), "-q")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert run_cli("verify", str(out / "tiny-onnx-fp32")).returncode == 0


def test_edgec_help_works_with_only_the_core_installed(tmp_path: Path) -> None:
    """Optional packages hidden (None in sys.modules, as if not installed): ``edgec --help`` still lists every command."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "for name in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'onnxslim', 'ml_dtypes', 'openvino', 'nncf', 'coremltools',\n"
        "             'tensorrt', 'onnx2tf', 'obstore', 'tuf', 'securesystemslib', 'cryptography', 'starlette', 'uvicorn',\n"
        "             'prometheus_client', 'yaml', 'PIL', 'sklearn'):\n"
        "    sys.modules[name] = None\n")
    proc = run_cli("--help", env={"PYTHONPATH": str(hide)})
    assert proc.returncode == 0, proc.stderr
    for command in ("build", "verify", "inspect", "targets", "debug"):
        assert command in proc.stdout
