"""The tensorrt target: TensorRT-ready Q/DQ and fp16 graphs, profiles, errors; engines where a GPU is.

On a host without TensorRT or an NVIDIA GPU the bundle's ONNX is checked by reading the graph and by
running it in onnxruntime; the engine tests are skipped, naming what is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from edgec.runtime_shims import tensorrt as shim
from edgec.runtime_shims.ort import OrtRunner
from edgec.targets.tensorrt import TensorRTOptions, TensorRTTarget, check_trt_qdq
from tests.conftest import REPO
from tests.support.cli import run_cli
from tests.support.models import make_calib, make_conv_onnx

onnx = pytest.importorskip("onnx")
NO_ENGINE = shim.engine_unavailable_reason()


needs_engine = pytest.mark.skipif(NO_ENGINE is not None, reason=f"TensorRT engine tests need tensorrt and a GPU: {NO_ENGINE}")
needs_no_engine = pytest.mark.skipif(NO_ENGINE is None, reason="this host builds engines; the no-GPU path is not taken")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny conv model built as tensorrt bundles at fp32, fp16 and int8."""
    folder = tmp_path_factory.mktemp("trt-tiny")
    source = make_conv_onnx(folder / "tiny.onnx")
    calib = make_calib(folder / "calib.npz", count=32)
    bundles = {}
    for precision in ("fp32", "fp16", "int8"):
        config = BuildConfig(source=str(source), target="tensorrt", precision=precision, out=folder / "out",
                             calib=calib if precision == "int8" else None, name="tiny")
        bundles[precision] = build(config).bundle_dir
    return {"source": source, "calib": calib, **bundles}


def _const(model, name: str) -> np.ndarray:
    init = {i.name: i for i in model.graph.initializer}[name]
    return onnx.numpy_helper.to_array(init)


def _weight_dq(model, layer_op: str):
    layer = next(n for n in model.graph.node if n.op_type == layer_op)
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == layer.input[1])


def test_int8_graph_is_symmetric_int8_with_per_channel_weights_and_per_tensor_activations(tiny) -> None:
    model = onnx.load(str(tiny["int8"] / "model.onnx"))
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes in the int8 graph"
    for node in qdq:
        zero = _const(model, node.input[2])
        assert zero.dtype == np.int8 and not zero.any(), node.name
        assert (_const(model, node.input[1]) > 0).all()
    conv_dq, gemm_dq = _weight_dq(model, "Conv"), _weight_dq(model, "Gemm")
    assert _const(model, conv_dq.input[0]).dtype == np.int8
    assert onnx.helper.get_attribute_value(conv_dq.attribute[0]) == 0 and _const(model, conv_dq.input[1]).shape == (8,)
    assert onnx.helper.get_attribute_value(gemm_dq.attribute[0]) == 1 and _const(model, gemm_dq.input[1]).shape == (10,)
    constants = {i.name for i in model.graph.initializer}
    activations = [n for n in qdq if n.input[0] not in constants]
    assert activations and all(_const(model, n.input[1]).ndim == 0 for n in activations)
    weights = [n for n in qdq if n.input[0] in constants]
    assert len(weights) == 2, "only the two weights are quantized: bias stays float for TensorRT"
    assert check_trt_qdq(model) == []


def test_int8_bundle_runs_in_onnxruntime_close_to_fp32(tiny) -> None:
    m = load_manifest(tiny["int8"])
    assert m.parity["measured"] and m.parity["outputs"]["logits"]["cosine"] > 0.99
    assert m.target_details["parity_runtime"] in ("onnxruntime-cpu", "tensorrt")
    assert m.target_details["qdq"]["dequantize_linear"] >= 3
    assert [p["name"] for p in m.passes][-1] == "quantize_static"


def test_fp16_bundle_is_a_sorted_float16_graph_with_float32_inputs_and_outputs(tiny) -> None:
    model = onnx.load(str(tiny["fp16"] / "model.onnx"))
    onnx.checker.check_model(model)  # also checks that nodes are in topological order, as TensorRT's parser needs
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert set(weights.values()) == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    m = load_manifest(tiny["fp16"])
    assert m.target_details["builder"]["fp16"] is True and m.parity["outputs"]["logits"]["cosine"] > 0.9999


def test_settings_declare_the_optimization_profile_of_the_dynamic_batch(tiny) -> None:
    settings = shim.load_settings(tiny["fp32"])
    assert settings["profiles"] == {"x": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [32, 3, 8, 8]}}
    assert settings["fp16"] is False and settings["int8"] is False
    listed = {f.path for f in load_manifest(tiny["fp32"]).files}
    assert {"model.onnx", "tensorrt.json", "edgec_shim/tensorrt.py"} <= listed


@needs_no_engine
def test_without_a_gpu_the_manifest_says_the_engine_is_built_on_the_device(tiny) -> None:
    details = load_manifest(tiny["int8"]).target_details
    assert details["engine"] == "build on device" and details["engine_reason"] == NO_ENGINE
    assert details["parity_runtime"] == "onnxruntime-cpu"
    assert not (tiny["int8"] / "model.plan").exists()
    runner = TensorRTTarget().runner(tiny["int8"], "model.onnx")
    assert isinstance(runner, OrtRunner)




def test_profile_override_in_the_typed_options_reaches_the_bundle(tmp_path: Path) -> None:
    options = TensorRTOptions(trt_profile={"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))})  # as a recipe gives it
    bundle = build(BuildConfig(source=str(make_conv_onnx(tmp_path / "m.onnx")), target="tensorrt", out=tmp_path / "o",
                               target_options=options)).bundle_dir
    assert shim.load_settings(bundle)["profiles"]["x"] == {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}




def test_int8_without_calibration_fails_with_a_calibration_hint(tmp_path: Path) -> None:
    source = make_conv_onnx(tmp_path / "m.onnx")
    proc = run_cli("build", str(source), "--target", "tensorrt", "--precision", "int8", "--out", str(tmp_path / "out"))
    assert proc.returncode == errors.EXIT_CALIBRATION, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "explicit quantization" in line and "hint: give --calib PATH" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dynamic_int8_is_unsupported(tmp_path: Path) -> None:
    source = make_conv_onnx(tmp_path / "m.onnx")
    calib = make_calib(tmp_path / "c.npz", count=8)
    proc = run_cli("build", str(source), "--target", "tensorrt", "--precision", "int8", "--int8-mode", "dynamic",
                   "--calib", str(calib), "--out", str(tmp_path / "out"))
    assert proc.returncode == errors.EXIT_UNSUPPORTED and "no dynamic" in proc.stderr


def _accuracy(runner, x: np.ndarray, labels: np.ndarray) -> float:
    predictions = [runner.infer({"x": x[i:i + 32]})["output"].argmax(-1) for i in range(0, len(x), 32)]
    return float(np.mean(np.concatenate(predictions) == labels))


@pytest.mark.slow
def test_digits_int8_meets_the_rules_and_stays_within_one_point_of_fp32(digits_assets, tmp_path: Path, record_property) -> None:
    bundles = {p: build(BuildConfig(source=str(digits_assets["pt2"]), target="tensorrt", precision=p, calib=digits_assets["calib"],
                                    out=tmp_path, name="digits")).bundle_dir for p in ("fp32", "int8")}
    model = onnx.load(str(bundles["int8"] / "model.onnx"))
    assert check_trt_qdq(model) == []
    producers = {n.output[0]: n for n in model.graph.node}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert [n.op_type for n in layers] == ["Conv", "Conv", "Gemm"]
    for layer in layers:  # every layer's weight is int8 behind a per-channel DequantizeLinear
        dq = producers[layer.input[1]]
        assert dq.op_type == "DequantizeLinear" and _const(model, dq.input[0]).dtype == np.int8
        assert _const(model, dq.input[1]).ndim == 1 and _const(model, dq.input[1]).size > 1
    with np.load(digits_assets["eval"]) as data:
        x, labels = data["x"], data["labels"]
    accuracy = {}
    for precision, bundle in bundles.items():
        with TensorRTTarget().runner(bundle, "model.onnx") as runner:
            accuracy[precision] = _accuracy(runner, x, labels)
            record_property(f"runtime_{precision}", runner.runtime)
    record_property("accuracy", accuracy)
    print(f"digits held-out accuracy: fp32 {accuracy['fp32']:.4f}, int8 {accuracy['int8']:.4f}")
    assert accuracy["fp32"] > 0.9
    assert accuracy["int8"] >= accuracy["fp32"] - 0.01




@needs_engine
def test_engine_is_built_at_export_and_recorded_in_the_manifest(tiny) -> None:
    for precision in ("fp32", "fp16", "int8"):
        details = load_manifest(tiny[precision]).target_details
        assert details["engine"] == "model.plan" and (tiny[precision] / "model.plan").stat().st_size > 0
        assert details["gpu"] and details["compute_capability"] and details["tensorrt"]
        assert details["parity_runtime"] == "tensorrt"
        proc = run_cli("verify", str(tiny[precision]))
        assert proc.returncode == 0, proc.stderr


@needs_engine
def test_runner_builds_an_engine_on_the_device_once_and_then_reuses_it(tiny, tmp_path: Path) -> None:
    settings = {k: v for k, v in shim.load_settings(tiny["int8"]).items() if k != "engine"}
    feed = {"x": np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    with OrtRunner(str(tiny["int8"] / "model.onnx")) as ort_runner:
        expected = ort_runner.infer(feed)["logits"]
    sources = []
    for _ in range(2):
        with shim.TensorRTRunner(str(tiny["int8"] / "model.onnx"), settings=settings, engine_cache=tmp_path) as runner:
            got = runner.infer(feed)["logits"]
            sources.append(runner.engine_source)
        cos = float(np.sum(got * expected) / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cos > 0.99
    assert sources == ["built", "cache"]
    assert list(tmp_path.glob("timing-*.cache"))


@pytest.mark.skipif(shim.has_tensorrt(), reason="tensorrt is installed here; the script's missing-tensorrt path is not taken")
def test_gpu_check_script_fails_clearly_without_tensorrt(tiny) -> None:
    import subprocess
    import sys

    script = REPO / "benchmarks" / "tensorrt_gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), str(tiny["int8"])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout == ""
    assert "tensorrt is not installed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
