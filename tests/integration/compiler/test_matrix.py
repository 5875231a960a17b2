"""Matrix builds: every target x precision from one command, the source imported once, failures per cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgec.compiler import matrix
from edgec.compiler.config import BuildConfig
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib

FACTORY = '''
from pathlib import Path

CALLS = Path(__file__).with_name("calls.txt")


def make():
    import torch

    with CALLS.open("a") as handle:  # one line per call: the test counts the imports
        handle.write("called\\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10))
    return net, (torch.zeros(1, 3, 8, 8),)
'''


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    """A torch factory that appends a line to ``calls.txt`` each time it is called, and its calibration data."""
    (tmp_path / "counted.py").write_text(FACTORY)
    make_calib(tmp_path / "calib.npz", name="input")
    return tmp_path


def calls(folder: Path) -> int:
    path = folder / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def cells(stdout: str) -> list[dict[str, Any]]:
    return json.loads(stdout)  # type: ignore[no-any-return]


def test_matrix_imports_a_factory_once_and_loads_calibration_and_reference_once(factory: Path, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from edgec.compiler import pipeline
    from edgec.compiler.importers.torch import TorchImporter

    counts = {"calibration": 0, "reference": 0}
    load, reference = pipeline.load_calibration, TorchImporter.reference

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        counts["calibration"] += 1
        return load(*args, **kwargs)

    def counted_reference(self: Any, *args: Any) -> Any:
        counts["reference"] += 1
        return reference(self, *args)

    monkeypatch.setattr(pipeline, "load_calibration", counted_load)
    monkeypatch.setattr(TorchImporter, "reference", counted_reference)
    configs = [BuildConfig(source=f"{factory / 'counted.py'}:make", target=t, precision=p, out=tmp_path / "out",
                           calib=factory / "calib.npz", cache_dir=tmp_path / "cache")
               for t in ("onnx", "openvino") for p in ("fp32", "fp16")]
    results = matrix.build_matrix([configs])
    assert [(r.target, r.precision, r.status) for r in results] == [
        ("onnx", "fp32", "built"), ("onnx", "fp16", "built"), ("openvino", "fp32", "built"), ("openvino", "fp16", "built")]
    # two routes (openvino takes the torch program, onnx its ONNX export), one import, one calibration, one reference
    assert calls(factory) == 1
    assert counts == {"calibration": 1, "reference": 1}
    manifests = [json.loads((Path(r.bundle or "") / "manifest.json").read_text()) for r in results]
    assert [m["source"]["route"] for m in manifests] == ["onnx", "onnx", "pt2", "pt2"]
    assert len({m["calibration"]["digest"] for m in manifests if m["calibration"]}) <= 1
    assert all(r.parity and r.parity["min_cosine"] > 0.999 for r in results)


def test_repeated_target_flags_build_every_target_instead_of_keeping_the_last(conv_onnx: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--target", "onnx", "--target", "openvino", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(c["target"], c["status"]) for c in cells(proc.stdout)] == [("onnx", "built"), ("openvino", "built")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny-onnx-fp32", "tiny-openvino-fp32"]


def test_failed_cells_keep_their_family_the_others_are_written_and_the_first_failure_sets_the_exit_code(
        conv_onnx: Path, tmp_path: Path) -> None:
    # tensorrt int8 without --calib: calibration error (6); coreml takes no ONNX: unsupported (4)
    out = tmp_path / "out"
    proc = run_cli("build", str(conv_onnx), "--target", "onnx,tensorrt,coreml", "--precision", "fp32,int8", "--out", str(out))
    table = {tuple(line.split()[1:5]) for line in proc.stdout.splitlines() if line.startswith("tiny ")}
    assert table == {("onnx", "fp32", "built", "0"), ("onnx", "int8", "built", "0"), ("tensorrt", "fp32", "built", "0"),
                     ("tensorrt", "int8", "failed", "6"), ("coreml", "fp32", "failed", "4"), ("coreml", "int8", "failed", "4")}
    assert proc.returncode == 6, proc.stderr  # the first failed cell in table order
    assert "3 of 6 cells built; exit code 6" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32", "tiny-onnx-int8", "tiny-tensorrt-fp32"]
    reordered = run_cli("build", str(conv_onnx), "--target", "coreml,tensorrt", "--precision", "int8", "--out", str(out), "--json")
    assert [(c["target"], c["exit_code"], c["family"]) for c in cells(reordered.stdout)] == [
        ("coreml", 4, "unsupported"), ("tensorrt", 6, "calibration error")]
    assert reordered.returncode == 4


def test_an_impossible_precision_option_fails_its_cell_before_the_import_and_the_others_build(factory: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", f"{factory / 'counted.py'}:make", "--target", "onnx,tensorrt", "--precision", "fp32,int8",
                   "--int8-mode", "dynamic", "--out", str(out), "--json")
    result = {(c["target"], c["precision"]): c for c in cells(proc.stdout)}
    assert result[("tensorrt", "int8")]["family"] == "unsupported"
    assert "no dynamic" in result[("tensorrt", "int8")]["error"]
    assert [c["status"] for c in result.values()] == ["built", "built", "built", "failed"]
    assert proc.returncode == 4
    assert calls(factory) == 1
    assert not (out / "counted-tensorrt-int8").exists()


def test_matrix_refuses_existing_bundles_before_importing_naming_each(factory: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("counted-onnx-int8", "counted-openvino-fp32"):
        (out / name).mkdir(parents=True)
    proc = run_cli("build", f"{factory / 'counted.py'}:make", "--target", "onnx,openvino", "--precision", "fp32,int8",
                   "--out", str(out))
    assert_one_line_error(proc, 2)
    assert f"{out / 'counted-onnx-int8'}, {out / 'counted-openvino-fp32'}" in proc.stderr
    assert calls(factory) == 0  # the factory never ran
    assert sorted(p.name for p in out.iterdir()) == ["counted-onnx-int8", "counted-openvino-fp32"]


@pytest.mark.parametrize(("flags", "says"), [
    (["--target", "onnx,onx"], "unknown target 'onx'"),
    (["--target", "onnx,onnx"], "--target lists onnx more than once"),
    (["--target", "onnx,", "--precision", "fp32"], "empty entry"),
    (["--target", "onnx", "--precision", "fp32,int4"], "bad --precision 'int4'"),
    (["--target", "onnx,openvino", "--target-option", "palettize=4"], "no target of this build (onnx, openvino) has the option 'palettize'"),
    (["--target", "onnx,openvino", "--target-option", "tflite.io_dtype=int8"], "'tflite' is not a target of this build"),
    (["--target", "onnx,openvino", "--target-option", "openvino.preset=fast"], "bad openvino option preset='fast'"),
    (["--target", "onnx,openvino", "--jobs", "0"], "--jobs 0: expected at least 1"),
])
def test_matrix_flags_are_checked_before_the_source_is_imported(factory: Path, tmp_path: Path, flags: list[str], says: str) -> None:
    proc = run_cli("build", f"{factory / 'counted.py'}:make", *flags, "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 2)
    assert says in proc.stderr
    assert calls(factory) == 0
    assert not (tmp_path / "out").exists()


def test_options_go_to_the_targets_that_have_them(conv_onnx: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--target", "onnx,openvino", "--precision", "int8", "--calib",
                   str(make_calib(tmp_path / "c.npz")), "--target-option", "preset=performance", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    manifests = {c["target"]: json.loads((Path(c["bundle"]) / "manifest.json").read_text()) for c in cells(proc.stdout)}
    assert manifests["openvino"]["target_details"]["quantization"]["preset"] == "performance"
    assert "preset" not in json.dumps(manifests["onnx"])


@pytest.mark.slow
def test_jobs_finish_cells_in_worker_processes_from_one_import_with_the_same_bundles(factory: Path, tmp_path: Path) -> None:
    source = f"{factory / 'counted.py'}:make"
    common = ["--target", "onnx", "--precision", "fp32,fp16,int8", "--calib", str(factory / "calib.npz")]
    parallel = run_cli("build", source, *common, "--jobs", "2", "--out", str(tmp_path / "parallel"), "--json")
    assert parallel.returncode == 0, parallel.stderr
    assert calls(factory) == 1
    serial = run_cli("build", source, *common, "--out", str(tmp_path / "serial"), "--json", "--no-cache")  # all anew
    assert serial.returncode == 0, serial.stderr
    for a, b in zip(cells(parallel.stdout), cells(serial.stdout)):
        assert (a["target"], a["precision"], a["status"], a["size"]) == (b["target"], b["precision"], b["status"], b["size"])
        for name in ("golden.npz", "manifest.json"):
            assert (Path(a["bundle"]) / name).read_bytes() == (Path(b["bundle"]) / name).read_bytes(), (a["bundle"], name)


def test_require_speedup_gates_only_the_quantized_cells_against_the_fp32_cell_just_built(conv_onnx: Path, conv_calib: Path,
                                                                                         tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--precision", "fp32,int8", "--calib", str(conv_calib), "--require-speedup", "1000",
                   "--out", str(tmp_path / "out"), "--json", "-v")
    assert [(c["precision"], c["status"], c["exit_code"]) for c in cells(proc.stdout)] == [("fp32", "built", 0), ("int8", "failed", 7)]
    assert "against tiny-onnx-fp32" in proc.stderr  # the fp32 cell of this matrix, not a sibling built again
    assert proc.returncode == 7


def test_max_drop_applies_to_the_quantized_cells_of_a_matrix(conv_onnx: Path, conv_calib: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(conv_onnx), "--precision", "fp32,int8", "--calib", str(make_calib(tmp_path / "c.npz", count=64)),
                   "--max-drop", "0.5", "--metric", "cosine", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    manifests = {c["precision"]: json.loads((Path(c["bundle"]) / "manifest.json").read_text()) for c in cells(proc.stdout)}
    assert "mixed_precision" in manifests["int8"] and "mixed_precision" not in manifests["fp32"]
