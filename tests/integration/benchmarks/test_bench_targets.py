"""``edgec bench`` on a mix of targets, as the demo leaves them: bundles this host cannot run get a row
saying why, sizes count every model file, golden top-1 agreement is shown as counts with its meaning."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest
from tests.support.cli import run_cli
from tests.support.models import make_calib, make_conv_onnx
from tests.support.shim import load_json, run_shim

FAST = ("--runs", "10", "--warmup", "1")
NOT_DARWIN = pytest.mark.skipif(sys.platform == "darwin", reason="checks a host that cannot execute Core ML")
CORE_ML_REASON = "not run: Core ML models run only on macOS"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"onnx": fp32 bundle, "openvino": int8 bundle}`` of the tiny CNN, side by side."""
    pytest.importorskip("openvino", reason="the openvino target: pip install 'edgec[openvino]'")
    folder = tmp_path_factory.mktemp("mixed")
    model, calib = make_conv_onnx(folder / "tiny.onnx"), make_calib(folder / "calib.npz")
    found = {}
    for target, precision in (("onnx", "fp32"), ("openvino", "int8")):
        config = BuildConfig(source=str(model), target=target, precision=precision, calib=calib, out=folder / "bundles")
        found[target] = build(config).bundle_dir
    return found


@pytest.fixture(scope="module")
def coreml_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Core ML fp32 bundle of a tiny torch CNN (coremltools builds it on Linux; only macOS executes it)."""
    pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")
    from tests.support.models import make_tiny_pt2

    folder = tmp_path_factory.mktemp("coreml")
    pt2 = make_tiny_pt2(folder / "tiny.pt2")
    return build(BuildConfig(source=str(pt2), target="coreml", precision="fp32", out=folder / "bundles")).bundle_dir


def _model_files(bundle: Path, *names: str) -> int:
    return sum((bundle / name).stat().st_size for name in names)


# ----------------------------------------------------------------------------------------------- not run here

@NOT_DARWIN
def test_bench_gives_a_core_ml_bundle_a_not_run_row_and_measures_the_others(
        mixed: dict[str, Path], coreml_bundle: Path, tmp_path: Path) -> None:
    proc = run_cli("bench", str(coreml_bundle), str(mixed["onnx"]), *FAST, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = load_json((tmp_path / "rep" / "bench.json").read_text())
    assert [r["bundle"]["name"] + "-" + r["bundle"]["target"] for r in doc["results"]] == ["tiny-onnx"]
    (row,) = doc["not_run"]
    assert (row["bundle"]["target"], row["bundle"]["precision"], row["bundle"]["path"]) == \
        ("coreml", "fp32", str(coreml_bundle.resolve()))
    assert row["reason"].startswith("Core ML models run only on macOS; this host is linux")
    assert row["exit_code"] == 3 and row["device"]["label"] == doc["results"][0]["device"]["label"]
    md = (tmp_path / "rep" / "bench.md").read_text()
    assert md == proc.stdout
    (line,) = [line for line in md.splitlines() if "| coreml |" in line]
    assert CORE_ML_REASON in line and "| fp32 |" in line
    html = (tmp_path / "rep" / "bench.html").read_text()
    assert CORE_ML_REASON in html and html.count("<tr>") == 3  # head, onnx, coreml


@NOT_DARWIN
def test_bench_exits_3_when_no_bundle_can_run_and_still_writes_the_report(coreml_bundle: Path, tmp_path: Path) -> None:
    proc = run_cli("bench", str(coreml_bundle), *FAST, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("edgec: missing dependency: none of the 1 bundle could run on this host "
                               "(tiny-coreml-fp32: Core ML models run only on macOS")
    doc = json.loads((tmp_path / "rep" / "bench.json").read_text())
    assert doc["results"] == [] and [r["bundle"]["target"] for r in doc["not_run"]] == ["coreml"]
    assert CORE_ML_REASON in (tmp_path / "rep" / "bench.md").read_text()


@NOT_DARWIN
def test_not_run_row_size_is_every_mlpackage_member_from_the_manifest(coreml_bundle: Path) -> None:
    proc = run_cli("bench", str(coreml_bundle), *FAST, "--json")
    assert proc.returncode == 3
    (row,) = json.loads(proc.stdout)["not_run"]
    members = [p for p in (coreml_bundle / "model.mlpackage").rglob("*") if p.is_file()]
    assert len(members) >= 3
    assert row["bundle"]["model_bytes"] == sum(p.stat().st_size for p in members) == load_manifest(coreml_bundle).model_bytes()


def test_merge_keeps_the_not_run_rows_of_a_report(tmp_path: Path) -> None:
    row = {"bundle": {"name": "m", "target": "coreml", "precision": "int8", "path": "/b/m-coreml-int8", "model_file":
                      "model.mlpackage", "model_bytes": 1000, "bundle_bytes": 2000, "manifest_sha256": "0" * 64},
           "device": {"label": "ci"}, "reason": "Core ML models run only on macOS", "exit_code": 3}
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1, "kind": "edgec.bench.report", "results": [],
                                                 "speedup": None, "not_run": [row]}))
    proc = run_cli("bench", "--merge", str(tmp_path / "r.json"), "--json")
    assert proc.returncode == 3 and "none of the 1 bundle could run" in proc.stderr
    assert json.loads(proc.stdout)["not_run"] == [row]


# ----------------------------------------------------------------------------------------------- sizes

def test_bench_size_of_an_openvino_bundle_is_its_xml_plus_its_bin(mixed: dict[str, Path]) -> None:
    proc = run_cli("bench", str(mixed["openvino"]), str(mixed["onnx"]), *FAST, "--json")
    assert proc.returncode == 0, proc.stderr
    sizes = {r["bundle"]["target"]: r["bundle"]["model_bytes"] for r in json.loads(proc.stdout)["results"]}
    ov = mixed["openvino"]
    assert (ov / "model.bin").stat().st_size > 0 and (ov / "model.xml").stat().st_size > 0
    assert sizes["openvino"] == _model_files(ov, "model.xml", "model.bin") == load_manifest(ov).model_bytes()
    assert sizes["onnx"] == _model_files(mixed["onnx"], "model.onnx")


def test_shim_bench_on_the_device_counts_the_openvino_bin_too(mixed: dict[str, Path]) -> None:
    proc = run_shim(mixed["openvino"], "bench", ".", "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    bundle = load_json(proc.stdout)["bundle"]
    assert bundle["model_bytes"] == _model_files(mixed["openvino"], "model.xml", "model.bin")
    assert bundle["bundle_bytes"] > bundle["model_bytes"]


# ----------------------------------------------------------------------------------------------- golden agreement

def _flip_near_ties(bundle: Path, rows: list[int]) -> None:
    """Make the FP32 reference prefer its runner-up class by a hair on ``rows`` (a near-tie the bundle flips),
    with a cosine-only tolerance as an INT8 bundle of a real model carries, so parity still passes."""
    with np.load(bundle / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    logits = arrays["outputs/logits"]
    for i in rows:
        order = np.argsort(logits[i, 0])
        logits[i, 0, order[-2]] = logits[i, 0, order[-1]] + 1e-3
    np.savez(bundle / "golden.npz", **arrays)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["parity"]["tolerance"] = {"logits": {"min_cosine": 0.99}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_bench_shows_golden_top1_agreement_as_counts(mixed: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("bench", str(mixed["onnx"]), *FAST, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads((tmp_path / "rep" / "bench.json").read_text())["results"]
    logits = result["parity"]["outputs"]["logits"]
    assert (logits["top1_agree"], logits["top1_rows"]) == (8, 8)
    assert "| ok 1.000000, top-1 8/8 |" in proc.stdout
    assert "top-1 8/8" in (tmp_path / "rep" / "bench.html").read_text()


def test_bench_explains_a_low_top1_agreement_by_the_near_ties_of_the_golden_set(
        mixed: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(mixed["onnx"], tmp_path / "tiny-onnx-fp32")
    _flip_near_ties(copy, [0, 2, 4, 6])
    proc = run_cli("bench", str(copy), *FAST, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads((tmp_path / "rep" / "bench.json").read_text())["results"]
    logits = result["parity"]["outputs"]["logits"]
    assert logits["top1_agreement"] == 0.5 and (logits["top1_agree"], logits["top1_rows"]) == (4, 8)
    assert 4 <= logits["near_ties"] <= 8
    assert ", top-1 4/8 |" in proc.stdout
    note = [line for line in proc.stdout.splitlines() if line.startswith("- top-1 agreement")]
    assert len(note) == 1
    assert f"tiny-onnx-fp32: 4/8 agree; {logits['near_ties']} of 8 are near-ties" in note[0]
    assert "--eval" in proc.stdout and "golden" in proc.stdout


