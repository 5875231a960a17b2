"""``python -m edgec_shim`` run from inside a bundle: bench JSON, verify, eval accuracy, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.shim import labelled_eval, load_json, run_shim

RESULT_KEYS = {"schema_version", "kind", "bundle", "device", "config", "load_s", "first_infer_ms", "latency_ms",
               "throughput_per_s", "noise", "memory", "parity", "eval"}


def test_shim_bench_prints_canonical_json_with_sane_numbers(siblings: dict[str, Path]) -> None:
    proc = run_shim(siblings["int8"], "bench", ".", "--runs", "30", "--warmup", "2")
    assert proc.returncode == 0, proc.stderr
    result = load_json(proc.stdout)
    assert set(result) == RESULT_KEYS
    assert result["schema_version"] == 1 and result["kind"] == "edgec.bench.result"
    b = result["bundle"]
    assert (b["name"], b["target"], b["precision"]) == ("tiny", "onnx", "int8")
    assert b["model_bytes"] == (siblings["int8"] / "model.onnx").stat().st_size
    assert b["bundle_bytes"] > b["model_bytes"] and b["path"] == str(siblings["int8"])
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["load_s"] > 0 and result["first_infer_ms"] > 0 and result["throughput_per_s"] > 0
    assert result["config"] == {"runs": 30, "warmup": 2, "repeats": 3, "threads": None, "batch": 1}
    assert result["memory"]["peak_rss_bytes"] >= result["memory"]["baseline_peak_rss_bytes"] > 0
    assert result["device"]["runtime"] == "onnxruntime" and result["device"]["runtime_version"]
    parity = result["parity"]
    assert parity["ok"] is True and parity["tolerance_source"] == "manifest" and parity["samples"] == 8
    assert parity["outputs"]["logits"]["cosine"] > 0.999 and result["eval"] is None


def test_shim_bench_tiles_golden_inputs_to_the_requested_batch(siblings: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_shim(siblings["fp32"], "bench", str(siblings["fp32"]), "--runs", "9", "--batch", "16",
                    "--threads", "1", "--device", "lab-box", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    assert result["config"]["batch"] == 16 and result["config"]["threads"] == 1
    assert result["device"]["label"] == "lab-box"
    assert result["throughput_per_s"] == pytest.approx(16 * 1000 / result["latency_ms"]["mean"], rel=1e-3)


def test_shim_eval_reports_top1_against_labels(siblings: dict[str, Path], tmp_path: Path) -> None:
    right = labelled_eval(tmp_path / "right.npz", siblings["onnx"])
    wrong = labelled_eval(tmp_path / "wrong.npz", siblings["onnx"], shift=1)
    results = {}
    for name, data in (("right", right), ("wrong", wrong)):
        proc = run_shim(siblings["fp32"], "bench", ".", "--runs", "3", "--eval", str(data))
        assert proc.returncode == 0, proc.stderr
        results[name] = json.loads(proc.stdout)["eval"]
    assert results["right"] == {"data": "right.npz", "samples": 40, "output": "logits", "metric": "top1_accuracy",
                                "value": 1.0}
    assert results["wrong"]["value"] == 0.0


def test_shim_eval_without_labels_is_one_line_usage_error(siblings: dict[str, Path], tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    proc = run_shim(siblings["fp32"], "bench", ".", "--runs", "2", "--eval", str(tmp_path / "nolabels.npz"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "needs a 1-D integer 'labels' array" in proc.stderr


def test_shim_verify_passes_then_names_a_changed_file(siblings: dict[str, Path], tmp_path: Path) -> None:
    ok = run_shim(siblings["int8"], "verify", ".")
    assert ok.returncode == 0, ok.stderr
    assert "files match, parity within tolerance" in ok.stdout
    copy = shutil.copytree(siblings["int8"], tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size: only the sha256 tells
    (copy / "model.onnx").write_bytes(bytes(data))
    bad = run_shim(copy, "verify", ".")
    assert bad.returncode == 8 and bad.stdout == ""
    assert bad.stderr.strip() == "edgec_shim: error: model.onnx: sha256 does not match the manifest (file changed or corrupt)"


def test_shim_reports_parity_failure_when_golden_outputs_disagree(siblings: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(siblings["fp32"], tmp_path / "copy")
    with np.load(copy / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["outputs/logits"] = -arrays["outputs/logits"]
    np.savez(copy / "golden.npz", **arrays)
    bench = run_shim(copy, "bench", ".", "--runs", "2")
    assert bench.returncode == 0, bench.stderr
    parity = json.loads(bench.stdout)["parity"]
    assert parity["ok"] is False and any("cosine" in f for f in parity["failures"])
    assert parity["outputs"]["logits"]["cosine"] == pytest.approx(-1.0, abs=1e-6)


def test_shim_names_a_target_it_has_no_runner_for(siblings: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(siblings["fp32"], tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"] = "quantumchip"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_shim(copy, "bench", ".", "--runs", "2")
    assert proc.returncode == 3
    assert "no runner for target 'quantumchip'" in proc.stderr and proc.stderr.count("\n") == 1


def test_shim_uses_the_runner_a_manifest_records(siblings: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(siblings["fp32"], tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"] = "onnx-server"
    manifest["target_details"]["runner"] = "ort:OrtRunner"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_shim(copy, "bench", ".", "--runs", "2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["device"]["runtime"] == "onnxruntime"


def test_shim_refuses_a_batch_the_model_cannot_take(tmp_path: Path) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from tests.support.models import make_conv_onnx

    fixed = build(BuildConfig(source=str(make_conv_onnx(tmp_path / "fixed.onnx", batch=1)), out=tmp_path / "b")).bundle_dir
    proc = run_shim(fixed, "bench", ".", "--runs", "2", "--batch", "4")
    assert proc.returncode == 2
    assert "input 'x' has a fixed batch of 1; --batch 4 cannot run" in proc.stderr


def test_shim_on_a_folder_that_is_not_a_bundle(siblings: dict[str, Path], tmp_path: Path) -> None:
    proc = run_shim(siblings["fp32"], "bench", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 8
    assert proc.stderr.strip() == f"edgec_shim: error: {tmp_path} is not a bundle: manifest.json not found"


def test_shim_prefers_a_modules_open_runner_for_targets_named_like_it(siblings: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(siblings["fp32"], tmp_path / "copy")
    (copy / "edgec_shim" / "myrt.py").write_text(
        "from .ort import OrtRunner\n\n\n"
        "class MyRunner(OrtRunner):\n    runtime = 'myrt-over-ort'\n\n\n"
        "def open_runner(bundle_dir, model_file, threads):\n"
        "    return MyRunner(bundle_dir + '/' + model_file, threads=threads)\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"] = "myrt"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_shim(copy, "bench", ".", "--runs", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"]["runtime"] == "myrt-over-ort" and result["device"]["runtime_version"] is None
    assert result["parity"]["ok"] is True


def test_shim_measures_parity_on_device_when_the_build_host_could_not(siblings: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(siblings["int8"], tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["parity"] = {"measured": False, "reason": "the runtime cannot execute models on the build host"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_shim(copy, "verify", ".", "--json")
    assert proc.returncode == 0, proc.stderr
    parity = json.loads(proc.stdout)
    assert parity["tolerance_source"] == "default" and parity["tolerance"] == {"logits": {"min_cosine": 0.98}}
    assert parity["ok"] is True and parity["outputs"]["logits"]["cosine"] > 0.999
