"""The openvino target on tiny models built inline: IR files, routes, fp16/int8 mechanics, runner, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.compiler.verify import verify_bundle
from edgec.core import errors
from edgec.core.bundle import load_manifest
from edgec.core.types import sha256_file
from edgec.runtime_shims.openvino import OpenVinoRunner
from tests.support.cli import assert_one_line_error, run_cli

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")


def _build(src: Path, out: Path, **kw) -> Path:
    return build(BuildConfig(source=str(src), out=out, target="openvino", **kw)).bundle_dir


def _op_types(xml: Path) -> list[str]:
    return [op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()]


def _const_types(xml: Path) -> set[str]:
    model = ov.Core().read_model(str(xml))
    return {op.get_output_element_type(0).get_type_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_output_partial_shape(0).rank.get_length() >= 2}


def make_matmul_onnx(path: Path) -> Path:
    """A tiny MatMul-dominated model (three MatMuls, a Softmax, no convolution) on ``x`` (batch, 4, 16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32) * 0.25, f"w{i}") for i in range(3)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"], name="mm0"),
        helper.make_node("Relu", ["h0"], ["r0"], name="relu"),
        helper.make_node("MatMul", ["r0", "w1"], ["h1"], name="mm1"),
        helper.make_node("Softmax", ["h1"], ["s1"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["s1", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 16])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fp32_bundle_is_ir_xml_and_bin_matching_onnxruntime(tmp_path: Path, conv_onnx: Path) -> None:
    import onnxruntime as ort

    bundle = _build(conv_onnx, tmp_path / "out")
    assert bundle.name == "tiny-openvino-fp32"
    m = load_manifest(bundle)
    assert m.model_file == "model.xml"
    hashes = {f.path: f.sha256 for f in m.files}
    assert hashes["model.xml"] == sha256_file(bundle / "model.xml") and hashes["model.bin"] == sha256_file(bundle / "model.bin")
    assert m.target_details["route"] == "onnx" and "onnx file" in m.target_details["converter"]
    assert m.target_details["runtime_options"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert {"openvino", "nncf"} <= set(m.toolchain)
    assert m.inputs == [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float32"}]
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(conv_onnx)).run(None, {"x": x})[0]
    with OpenVinoRunner(str(bundle / "model.xml")) as runner:
        got = runner.infer({"x": x})["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert m.parity["outputs"]["logits"]["max_abs"] < 1e-4


def test_runner_pins_f32_by_default_and_takes_threads_hint_and_overrides(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    with OpenVinoRunner(str(bundle / "model.xml"), threads=1) as runner:
        assert runner.property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert runner.property("INFERENCE_NUM_THREADS") == 1
        assert runner.property("PERFORMANCE_HINT") == "LATENCY"
    with OpenVinoRunner(str(bundle / "model.xml"), performance_hint="THROUGHPUT", inference_precision="bf16") as runner:
        assert runner.property("PERFORMANCE_HINT") == "THROUGHPUT"
        assert runner.compile_config["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(Exception, match="performance_hint"):
        OpenVinoRunner(str(bundle / "model.xml"), performance_hint="FAST")




def test_fp16_stores_half_precision_weights_and_keeps_parity(tmp_path: Path, conv_onnx: Path) -> None:
    fp32 = _build(conv_onnx, tmp_path / "a")
    fp16 = _build(conv_onnx, tmp_path / "b", precision="fp16")
    assert _const_types(fp32 / "model.xml") == {"f32"}
    assert _const_types(fp16 / "model.xml") == {"f16"}
    assert (fp16 / "model.bin").stat().st_size < 0.6 * (fp32 / "model.bin").stat().st_size
    m = load_manifest(fp16)
    assert m.target_details["weights"].startswith("f16") and m.parity["outputs"]["logits"]["cosine"] > 0.9999


def test_static_int8_is_nncf_fake_quantize_with_int8_weights(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8", calib=conv_calib)
    m = load_manifest(bundle)
    quant = m.target_details["quantization"]
    assert quant["mode"] == "static" and quant["tool"] == "nncf.quantize" and quant["model_type"] == "default"
    assert quant["subset_size"] == 32 and quant["fake_quantize_ops"] >= 2
    assert [p["name"] for p in m.passes] == ["simplify"]
    assert m.calibration is not None and m.calibration["samples"] == 32
    assert "FakeQuantize" in _op_types(bundle / "model.xml")
    assert "i8" in _const_types(bundle / "model.xml")
    assert m.parity["outputs"]["logits"]["cosine"] > 0.99


def test_int8_without_calibration_compresses_weights_only_and_says_why(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8")
    quant = load_manifest(bundle).target_details["quantization"]
    assert quant["mode"] == "weights" and quant["tool"] == "nncf.compress_weights"
    assert "no calibration" in quant["reason"]
    assert "FakeQuantize" not in _op_types(bundle / "model.xml")
    assert {"u8", "i8"} & _const_types(bundle / "model.xml")


def test_dynamic_int8_mode_ignores_calibration_and_compresses_weights(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out", precision="int8", calib=conv_calib, int8_mode="dynamic")
    quant = load_manifest(bundle).target_details["quantization"]
    assert quant["mode"] == "weights" and quant["reason"] == "--int8-mode dynamic"


def test_matmul_dominated_model_is_quantized_as_a_transformer(tmp_path: Path) -> None:
    src = make_matmul_onnx(tmp_path / "mm.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).standard_normal((24, 4, 16)).astype(np.float32))
    bundle = _build(src, tmp_path / "out", precision="int8", calib=calib)
    m = load_manifest(bundle)
    assert m.target_details["quantization"]["model_type"] == "transformer"
    assert m.parity["outputs"]["y"]["cosine"] > 0.99




def test_torch_source_takes_the_direct_pt2_route_with_static_dims_and_names(tmp_path: Path, digits_assets) -> None:
    bundle = _build(digits_assets["pt2"], tmp_path / "out")
    m = load_manifest(bundle)
    assert m.source["route"] == "pt2" and m.target_details["route"] == "pt2"
    assert "ExportedProgram" in m.target_details["converter"]
    assert [p["name"] for p in m.passes] == []
    model = ov.Core().read_model(str(bundle / "model.xml"))
    assert model.inputs[0].get_names() == {"x"} and str(model.inputs[0].get_partial_shape()) == "[?,1,8,8]"
    assert model.outputs[0].get_names() == {"output"}
    assert m.parity["outputs"]["output"]["cosine"] > 0.99999


def test_int8_rebuild_is_byte_identical_in_one_process(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    bundles = [_build(conv_onnx, tmp_path / name, precision="int8", calib=conv_calib, cache=False) for name in "ab"]
    for name in ("model.xml", "model.bin", "manifest.json"):
        assert (bundles[0] / name).read_bytes() == (bundles[1] / name).read_bytes(), name




def test_static_int8_without_calibration_is_a_calibration_error(tmp_path: Path, conv_onnx: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(conv_onnx), "--target", "openvino", "--precision", "int8", "--int8-mode", "static",
                   "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CALIBRATION, "calibration data", "--calib")
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_pt2_is_an_export_error_without_output(tmp_path: Path, digits_assets) -> None:
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(digits_assets["pt2"].read_bytes()[:200])
    out = tmp_path / "out"
    with pytest.raises(errors.ExportError, match="broken.pt2"):
        _build(bad, out)
    assert not out.exists()


def _scale_matrices(bundle: Path, factor: float) -> None:
    """Rewrite the bundle's IR with every 2-D float weight scaled, then re-hash it in the manifest."""
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(bundle / "model.xml"))
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == 2 and op.get_output_element_type(0) == ov.Type.f32:
            op.output(0).replace(ops.constant(op.get_data() * factor).output(0))
    ov.save_model(model, str(bundle / "scaled.xml"), compress_to_fp16=False)  # not over the mmapped original
    del model
    for suffix in ("xml", "bin"):
        (bundle / f"scaled.{suffix}").replace(bundle / f"model.{suffix}")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] in ("model.xml", "model.bin"):
            entry["sha256"] = sha256_file(bundle / entry["path"])
            entry["size"] = (bundle / entry["path"]).stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_verify_catches_a_changed_bin_and_wrong_numbers_behind_consistent_hashes(tmp_path: Path, conv_onnx: Path) -> None:
    bundle = _build(conv_onnx, tmp_path / "out")
    assert verify_bundle(bundle).measured["logits"]["cosine"] > 0.99999
    original = (bundle / "model.bin").read_bytes()
    (bundle / "model.bin").write_bytes(original + b"\0")
    with pytest.raises(errors.IntegrityError, match="model.bin"):
        verify_bundle(bundle)
    (bundle / "model.bin").write_bytes(original)
    _scale_matrices(bundle, 1.5)
    proc = run_cli("verify", str(bundle))
    assert proc.returncode == errors.EXIT_ACCURACY, proc.stderr
    assert "logits" in proc.stderr and "Traceback" not in proc.stderr


def test_runner_names_a_file_that_shadows_the_openvino_package(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "openvino.py").write_text("# a stray copy of the shim, named like the package\n")
    code = ("from edgec.runtime_shims.openvino import OpenVinoRunner\n"
            "try:\n    OpenVinoRunner('model.xml').activate()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("RunnerError"), proc.stdout + proc.stderr
    assert str(tmp_path / "openvino.py") in proc.stdout and "not the OpenVINO package" in proc.stdout
