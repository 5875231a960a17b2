"""The tflite target on tiny models built in the test: Keras, SavedModel and ONNX sources, every precision,
layouts, int8 model IO, and converter failures that name the op and the route.

Bundles are built once per module (each conversion takes seconds) and shared between tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the tflite target: pip install 'edgec[tflite]'")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core import errors  # noqa: E402
from edgec.core.bundle import load_manifest, read_golden  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402
from tests.support.cli import (
    assert_one_line_error,  # noqa: E402
    run_cli,  # noqa: E402
)
from tests.support.models import make_calib  # noqa: E402


def make_keras(path: Path) -> Path:
    """A small NHWC CNN (about 6k weights) with two named outputs, saved as ``.keras``."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
    scores = keras.layers.Dense(10, name="scores")(x)
    probs = keras.layers.Softmax(name="probs")(scores)
    keras.Model(image, [scores, probs]).save(path)
    return path


def make_onnx_with_feature_map(path: Path) -> Path:
    """NCHW CNN on ``x`` (batch, 3, 8, 8) returning a 4-D ``features`` map and 2-D ``logits``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32) * 0.3, "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["features"], name="relu"),
             helper.make_node("GlobalAveragePool", ["features"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "fmap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8, 8, 8]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_bitwise_onnx(path: Path) -> Path:
    """A valid ONNX model whose only op (BitwiseAnd, opset 18) onnx2tf has no converter for."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mask = numpy_helper.from_array(np.array([[3, 5, 6, 7]], np.int32), "mask")
    node = helper.make_node("BitwiseAnd", ["x", "mask"], ["y"], name="mask_bits")
    graph = helper.make_graph([node], "bits", [helper.make_tensor_value_info("x", TensorProto.INT32, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])], [mask])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_determinant_saved_model(path: Path) -> Path:
    """A SavedModel using ``tf.linalg.det`` (MatrixDeterminant), which has no TFLite builtin kernel."""
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
        def serve(self, m):
            return {"det": tf.linalg.det(m)}

    module = Det()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="module")
def keras_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras")
    calib = folder / "calib.npz"
    np.savez(calib, image=np.random.default_rng(1).random((32, 8, 8, 3), dtype=np.float32))
    return {"keras": make_keras(folder / "tiny.keras"), "calib": calib, "dir": folder}


@pytest.fixture(scope="module")
def keras_bundles(keras_assets: dict[str, Path]) -> dict[str, Path]:
    """fp32, fp16, dynamic-range int8 (no calibration) and full-integer int8 bundles of the Keras model."""
    out = keras_assets["dir"] / "bundles"
    src = str(keras_assets["keras"])
    return {
        "fp32": build(BuildConfig(source=src, target="tflite", out=out / "a")).bundle_dir,
        "fp16": build(BuildConfig(source=src, target="tflite", precision="fp16", out=out / "b")).bundle_dir,
        "dynamic": build(BuildConfig(source=src, target="tflite", precision="int8", out=out / "c")).bundle_dir,
        # the tiny random model's class scores are near-ties on random inputs, so its top-1 agreement says
        # nothing about collapse: these tests check the conversion, not fidelity
        "int8": build(BuildConfig(source=src, target="tflite", precision="int8", calib=keras_assets["calib"],
                                  out=out / "d", allow_degraded=True)).bundle_dir,
    }


@pytest.fixture(scope="module")
def int8_io_bundle(keras_assets: dict[str, Path]) -> Path:
    """Full-integer int8 with int8 model inputs/outputs (``--io-dtype int8``)."""
    return build(BuildConfig(source=str(keras_assets["keras"]), target="tflite", precision="int8",
                             calib=keras_assets["calib"], target_options=(("io_dtype", "int8"),),
                             out=keras_assets["dir"] / "io8", allow_degraded=True)).bundle_dir


@pytest.fixture(scope="module")
def onnx_int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx-route")
    src = make_onnx_with_feature_map(folder / "fmap.onnx")
    calib = make_calib(folder / "calib.npz", count=32)
    bundle = build(BuildConfig(source=str(src), target="tflite", precision="int8", calib=calib, out=folder / "out"))
    return {"bundle": bundle.bundle_dir, "onnx": src, "calib": calib}


def _tf_reference(keras_path: Path, image: np.ndarray) -> list[np.ndarray]:
    import keras

    model = keras.saving.load_model(str(keras_path), compile=False)
    return [np.asarray(o) for o in model(image, training=False)]


# ---- Keras and SavedModel sources (TFLiteConverter route) --------------------------------------------


def test_keras_fp32_bundle_runs_in_litert_like_tensorflow(keras_assets: dict[str, Path], keras_bundles: dict[str, Path]) -> None:
    bundle = keras_bundles["fp32"]
    assert bundle.name == "tiny-tflite-fp32"
    m = load_manifest(bundle)
    assert m.model_file == "model.tflite" and m.source["format"] == "keras"
    assert m.target_details["route"] == "keras -> TFLiteConverter"
    assert m.target_details["quantization"] == "none (float32)"
    assert m.inputs == [{"name": "image", "shape": ["batch", 8, 8, 3], "dtype": "float32", "layout": "as_source"}]
    assert [o["name"] for o in m.outputs] == ["scores", "probs"]
    assert m.parity["outputs"]["scores"]["cosine"] > 0.99999
    image = np.random.default_rng(5).random((4, 8, 8, 3), dtype=np.float32)
    scores, probs = _tf_reference(keras_assets["keras"], image)
    with LiteRtRunner(str(bundle / "model.tflite"), threads=2) as runner:
        got = runner.infer({"image": image})  # batch 4 although the golden feeds have batch 1
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["probs"], probs, rtol=1e-4, atol=1e-6)


def test_fp16_halves_weights_and_dynamic_int8_quarters_them(keras_bundles: dict[str, Path]) -> None:
    sizes = {k: (b / "model.tflite").stat().st_size for k, b in keras_bundles.items()}
    assert sizes["fp16"] < 0.8 * sizes["fp32"]
    assert sizes["dynamic"] < sizes["fp16"]
    fp16 = load_manifest(keras_bundles["fp16"])
    dynamic = load_manifest(keras_bundles["dynamic"])
    assert fp16.target_details["quantization"] == "float16 weights"
    assert dynamic.target_details["quantization"] == "dynamic-range int8 weights" and dynamic.calibration is None
    assert fp16.parity["outputs"]["scores"]["cosine"] > 0.9999
    assert dynamic.parity["outputs"]["scores"]["cosine"] > 0.99


def test_full_integer_int8_uses_the_calibration_set_as_representative_data(keras_bundles: dict[str, Path]) -> None:
    m = load_manifest(keras_bundles["int8"])
    assert m.target_details["quantization"] == "full-integer int8"
    assert m.target_details["representative_samples"] == 32 and m.calibration["samples"] == 32
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(m.target_details["ops"])  # float IO around an int8 graph
    assert m.inputs[0]["dtype"] == "float32" and "quantization" not in m.inputs[0]
    assert m.parity["outputs"]["probs"]["cosine"] > 0.99


def test_int8_io_bundle_declares_int8_tensors_with_their_quantization(int8_io_bundle: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    m = load_manifest(int8_io_bundle)
    assert m.target_details["io_dtype"] == "int8"
    spec = m.inputs[0]
    assert spec["dtype"] == "int8" and set(spec["quantization"]) == {"scale", "zero_point"}
    assert all(o["dtype"] == "int8" and o["quantization"]["scale"] > 0 for o in m.outputs)
    detail = Interpreter(model_path=str(int8_io_bundle / "model.tflite")).get_signature_runner().get_input_details()["image"]
    assert detail["dtype"] == np.int8
    assert detail["quantization"] == pytest.approx((spec["quantization"]["scale"], spec["quantization"]["zero_point"]))
    golden_in, golden_out = read_golden(int8_io_bundle / "golden.npz")
    assert golden_in[0]["image"].dtype == np.int8  # what a device feeds
    assert golden_out[0]["scores"].dtype == np.float32  # the FP32 reference; the runner dequantizes
    with LiteRtRunner(str(int8_io_bundle / "model.tflite"), dequantize_outputs=False) as runner:
        raw = runner.infer(golden_in[0])
    assert raw["probs"].dtype == np.int8
    assert m.parity["outputs"]["probs"]["cosine"] > 0.99
    proc = run_cli("verify", str(int8_io_bundle))
    assert proc.returncode == 0, proc.stderr


def test_saved_model_directory_builds_through_its_serving_signature(tmp_path: Path, keras_assets: dict[str, Path]) -> None:
    import keras

    model = keras.saving.load_model(str(keras_assets["keras"]), compile=False)
    saved = tmp_path / "exported"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    bundle = build(BuildConfig(source=str(saved), target="tflite", out=tmp_path / "out")).bundle_dir
    m = load_manifest(bundle)
    assert bundle.name == "exported-tflite-fp32"
    assert m.source["format"] == "savedmodel" and m.target_details["route"] == "savedmodel -> TFLiteConverter"
    assert len(m.outputs) == 2 and all(o["cosine"] > 0.99999 for o in m.parity["outputs"].values())


def test_tf_op_without_tflite_kernel_names_op_and_route_and_saves_log(tmp_path: Path) -> None:
    saved = make_determinant_saved_model(tmp_path / "det_model")
    out = tmp_path / "out"
    proc = run_cli("build", str(saved), "--target", "tflite", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "tf.MatrixDeterminant", "savedmodel -> TFLiteConverter")
    assert sorted(p.name for p in out.iterdir()) == ["det_model-tflite-fp32.failed.log"]
    assert "MatrixDeterminant" in (out / "det_model-tflite-fp32.failed.log").read_text()


def test_keras_file_with_a_lambda_layer_is_refused_without_running_its_code(tmp_path: Path) -> None:
    import keras

    marker = tmp_path / "ran.txt"
    inp = keras.Input((4,), name="x")
    out = keras.layers.Lambda(lambda t, p=str(marker): (open(p, "w").close(), t * 2)[1])(inp)
    keras.Model(inp, out).save(tmp_path / "lambda.keras")
    marker.unlink(missing_ok=True)  # saving traced the function once
    with pytest.raises(errors.ExportError, match="Lambda layers are refused|safe"):
        build(BuildConfig(source=str(tmp_path / "lambda.keras"), target="tflite", out=tmp_path / "out"))
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---- ONNX source (onnx2tf route) ----------------------------------------------------------------------


def test_onnx_route_declares_nhwc_and_transposes_golden_data(onnx_int8_bundle: dict[str, Path]) -> None:
    import onnxruntime as ort

    bundle = onnx_int8_bundle["bundle"]
    m = load_manifest(bundle)
    assert m.target_details["route"].startswith("onnx -> onnx2tf")
    assert m.inputs == [{"name": "x", "shape": ["batch", 8, 8, 3], "dtype": "float32", "layout": "NHWC",
                         "source_layout": "NCHW"}]
    features, logits = m.outputs
    assert features["shape"] == ["batch", 8, 8, 8] and features["layout"] == "NHWC"
    assert logits["shape"] == ["batch", 10] and logits["layout"] == "as_source"
    golden_in, golden_out = read_golden(bundle / "golden.npz")
    first = np.load(onnx_int8_bundle["calib"])["x"][:1]
    np.testing.assert_array_equal(golden_in[0]["x"], first.transpose(0, 2, 3, 1))
    session = ort.InferenceSession(str(onnx_int8_bundle["onnx"]))
    ref_features, ref_logits = session.run(["features", "logits"], {"x": first})
    np.testing.assert_allclose(golden_out[0]["features"], ref_features.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(golden_out[0]["logits"], ref_logits, rtol=1e-5, atol=1e-5)
    assert m.parity["outputs"]["logits"]["cosine"] > 0.99 and m.parity["outputs"]["features"]["cosine"] > 0.99
    rewrites = [(p["name"], p["modified"], p["stats"]) for p in m.passes][-5:]  # nothing to rewrite: listed, unmodified
    assert rewrites == [("split_reduce_l2", False, {"split": 0, "not_split": {}}),
                        ("fuse_gelu", False, {"fused": 0, "not_fused": {}}), ("split_slice", False, {"split": 0}),
                        ("edge_pad_pools", False, {"rewritten": 0}),  # then full-integer INT8's own pass:
                        ("expand_activations", False, {"prelu": 0, "leaky_relu": 0, "hard_swish": 0, "hard_sigmoid": 0,
                                                       "not_expanded": {}})]


def test_verify_cli_rechecks_an_onnx_route_bundle(onnx_int8_bundle: dict[str, Path]) -> None:
    proc = run_cli("verify", str(onnx_int8_bundle["bundle"]), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "parity within tolerance" in proc.stdout


def test_onnx_route_runs_the_rewrite_passes_and_lists_them_in_the_manifest(tmp_path: Path) -> None:
    from onnx import helper

    from tests.support.models import TORCH_GELU, make_onnx

    nodes = [*TORCH_GELU, helper.make_node("ReduceL2", ["g", "axes"], ["n"], keepdims=1, name="l2"),
             helper.make_node("Div", ["g", "n"], ["y"], name="normalize")]
    src = make_onnx(tmp_path / "gelu_l2.onnx", nodes)
    bundle = build(BuildConfig(source=str(src), target="tflite", out=tmp_path / "out", simplify=False)).bundle_dir
    m = load_manifest(bundle)
    assert [(p["name"], p["modified"], p["stats"]) for p in m.passes] == [
        ("unroll_rnn", False, {"unrolled": {}, "not_unrolled": {}}),
        ("split_reduce_l2", True, {"split": 1, "not_split": {}}), ("fuse_gelu", True, {"fused": 1, "not_fused": {}}),
        ("split_slice", False, {"split": 0}), ("edge_pad_pools", False, {"rewritten": 0})]
    assert m.target_details["ops"].get("GELU") == 1 and "onnx_rewrites" not in m.target_details
    assert m.parity["outputs"]["y"]["cosine"] > 0.99999


def test_onnx_op_unknown_to_onnx2tf_is_named_with_route_and_log(tmp_path: Path) -> None:
    src = make_bitwise_onnx(tmp_path / "bits.onnx")
    out = tmp_path / "out"
    proc = run_cli("build", str(src), "--target", "tflite", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_EXPORT, "'mask_bits' (op type BitwiseAnd)", "onnx -> onnx2tf")
    assert sorted(p.name for p in out.iterdir()) == ["bits-tflite-fp32.failed.log"]
    assert "BitwiseAnd OP is not yet implemented" in (out / "bits-tflite-fp32.failed.log").read_text()


# ---- precision plan and the runner's quantization -----------------------------------------------------


