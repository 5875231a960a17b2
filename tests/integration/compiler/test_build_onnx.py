"""The onnx target end to end on a tiny model built inline: files, manifest, parity, verify, cache, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import load_manifest, read_golden
from edgec.core.types import sha256_file
from tests.support.cli import run_cli


def _build(src: Path, out: Path, **kw) -> Path:
    return build(BuildConfig(source=str(src), out=out, **kw)).bundle_dir


def test_fp32_bundle_has_model_manifest_and_golden(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    assert bundle.name == "tiny-onnx-fp32"
    assert sorted(p.name for p in bundle.iterdir()) == ["edgec_shim", "golden.npz", "manifest.json", "model.onnx"]
    assert (bundle / "edgec_shim" / "ort.py").is_file() and (bundle / "edgec_shim" / "base.py").is_file()
    m = json.loads((bundle / "manifest.json").read_text())
    for key in ("schema_version", "name", "target", "precision", "files", "inputs", "outputs", "source", "passes",
                "calibration", "parity", "toolchain"):
        assert key in m
    assert m["inputs"] == [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float32"}]
    assert m["source"]["sha256"] == sha256_file(conv_onnx)
    assert {f["path"]: f["sha256"] for f in m["files"]}["model.onnx"] == sha256_file(bundle / "model.onnx")
    assert m["calibration"] is None
    assert [p["name"] for p in m["passes"]] == ["simplify"]
    out = m["parity"]["outputs"]["logits"]
    assert out["cosine"] > 0.99999 and out["max_abs"] < 1e-4 and out["top1_agreement"] == 1.0
    assert {"onnx", "onnxruntime", "edgec"} <= set(m["toolchain"])


def test_golden_outputs_are_the_fp32_reference(tmp_path: Path, conv_onnx: Path) -> None:
    import onnxruntime as ort

    bundle = _build(conv_onnx, tmp_path / "out", golden_samples=3)
    inputs, outputs = read_golden(bundle / "golden.npz")
    assert len(inputs) == 3 and inputs[0]["x"].shape == (1, 3, 8, 8)
    session = ort.InferenceSession(str(conv_onnx))
    for feed, out in zip(inputs, outputs):
        np.testing.assert_allclose(session.run(None, feed)[0], out["logits"], rtol=1e-5, atol=1e-6)


def test_rebuild_is_byte_identical_even_without_cache(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    a = _build(conv_onnx, tmp_path / "a", precision="int8", calib=conv_calib, cache=False)
    b = _build(conv_onnx, tmp_path / "b", precision="int8", calib=conv_calib, cache=False)
    for name in ("model.onnx", "manifest.json", "golden.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_unchanged_rebuild_hits_the_stage_cache(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    cache = tmp_path / "cache"
    first = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "a", precision="int8", calib=conv_calib, cache_dir=cache))
    second = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "b", precision="int8", calib=conv_calib, cache_dir=cache))
    assert first.cache_misses == 4 and first.cache_hits == 0  # simplify, FP32 reference, quantize_static, export
    assert second.cache_hits == 4 and second.cache_misses == 0
    other = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "c", precision="int8", calib=conv_calib,
                              calib_method="percentile", cache_dir=cache))
    assert other.cache_hits == 2 and other.cache_misses == 2  # simplify and reference reused, quantization and export redone


def test_static_int8_is_qdq_with_per_channel_weights(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8", calib=conv_calib)
    m = load_manifest(bundle)
    assert m.passes[-1]["name"] == "quantize_static"
    assert m.calibration is not None and m.calibration["samples"] == 32 and m.calibration["method"] == "minmax"
    model = onnx.load(str(bundle / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: i for i in model.graph.initializer}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[1] in inits and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] == 8]
    assert per_channel, "conv weights should carry one scale per output channel"
    assert m.parity["outputs"]["logits"]["cosine"] > 0.99


def test_int8_without_calibration_falls_back_to_dynamic(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8")
    m = load_manifest(bundle)
    assert m.passes[-1]["name"] == "quantize_dynamic"
    assert m.calibration is None
    assert m.parity["outputs"]["logits"]["cosine"] > 0.99


def test_fp16_halves_the_weights(tmp_path: Path, conv_onnx: Path) -> None:
    fp32 = _build(conv_onnx, tmp_path / "a")
    fp16 = _build(conv_onnx, tmp_path / "b", precision="fp16")
    model = onnx.load(str(fp16 / "model.onnx"))
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert load_manifest(fp16).parity["outputs"]["logits"]["cosine"] > 0.9999
    def weight_bytes(bundle: Path) -> int:
        return sum(onnx.numpy_helper.to_array(i).nbytes for i in onnx.load(str(bundle / "model.onnx")).graph.initializer)

    assert weight_bytes(fp16) * 2 == weight_bytes(fp32)


def test_input_flag_sizes_the_golden_inputs_and_the_onnx_bundle_keeps_its_dynamic_batch(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "out", input_shapes={"x": (4, 3, 8, 8)})).bundle_dir
    m = load_manifest(bundle)
    assert m.inputs[0]["shape"] == ["batch", 3, 8, 8]
    assert [p["name"] for p in m.passes] == ["simplify"]
    golden_in, _ = read_golden(bundle / "golden.npz")
    assert {g["x"].shape for g in golden_in} == {(4, 3, 8, 8)}


def test_without_input_flag_dynamic_dims_stay_dynamic(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    model = onnx.load(str(bundle / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_verify_passes_then_catches_a_changed_file(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    ok = run_cli("verify", str(bundle))
    assert ok.returncode == 0 and "ok" in ok.stdout
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    bad = run_cli("verify", str(bundle))
    assert bad.returncode == errors.EXIT_INTEGRITY
    assert "model.onnx" in bad.stderr and "Traceback" not in bad.stderr


def test_verify_catches_wrong_numbers_even_with_consistent_hashes(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    model = onnx.load(str(bundle / "model.onnx"))
    for init in model.graph.initializer:
        if init.name == "fc" or len(init.dims) == 2:
            arr = onnx.numpy_helper.to_array(init) * 1.5
            init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "model.onnx":
            entry["sha256"] = sha256_file(bundle / "model.onnx")
            entry["size"] = (bundle / "model.onnx").stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("verify", str(bundle))
    assert proc.returncode == errors.EXIT_ACCURACY, proc.stderr
    assert "logits" in proc.stderr and "max_abs" in proc.stderr


def test_min_cosine_gate_fails_the_build_and_writes_nothing(tmp_path: Path, conv_onnx: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(errors.AccuracyGateError, match="below the required 1.0"):
        build(BuildConfig(source=str(conv_onnx), out=out, precision="int8", min_cosine=1.0))
    assert not out.exists()


def test_inspect_reports_interface_ops_and_precision(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    proc = run_cli("inspect", str(conv_onnx), "--json")
    info = json.loads(proc.stdout)
    assert info["precision"] == "fp32" and info["ops"]["Conv"] == 1 and info["inputs"][0]["name"] == "x"
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8", calib=conv_calib)
    text = run_cli("inspect", str(bundle)).stdout
    assert "precision: int8" in text and "QuantizeLinear" in text and "cosine" in text
