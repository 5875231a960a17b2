"""A text-line recognizer with a dynamic width (conv, mean over the height, per-column class scores, as a CTC
head gives), calibrated at width 320: onnx and openvino bundles keep the width dynamic, carry golden inputs at
two widths, verify there, and serve widths they never saw; targets that need fixed shapes ask for ``--input``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgec.compiler.config import BuildConfig, parse_input_shape
from edgec.compiler.pipeline import build
from edgec.compiler.verify import verify_bundle
from edgec.core import errors
from edgec.core.bundle import load_manifest, read_golden
from edgec.runtime_shims import measure
from edgec.runtime_shims.runners import open_runner
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.serving import serving
from tests.support.shim import load_json, run_shim

CALIB_WIDTH = 320
OTHER_WIDTHS = (423, 97)


def make_recognizer(path: Path) -> Path:
    """x [batch, 3, 48, width] -> Conv 3x3 -> Relu -> mean over H -> [batch, width, 8] -> MatMul -> logits [batch, width, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv.weight"),
               numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "conv.bias"),
               numpy_helper.from_array((rng.standard_normal((8, 10)) * 0.5).astype(np.float32), "head.weight"),
               numpy_helper.from_array(np.array([2], np.int64), "height_axis")]
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "height_axis"], ["p"], keepdims=0, name="pool"),
             helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 1], name="columns"),
             helper.make_node("MatMul", ["t", "head.weight"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "recognizer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 48, "width"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "width", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dynamic")
    calib = folder / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 1, 3, 48, CALIB_WIDTH)).astype(np.float32))
    return {"model": make_recognizer(folder / "rec.onnx"), "calib": calib, "out": folder / "bundles"}


@pytest.fixture(scope="module")
def bundles(assets: dict[str, Path]) -> dict[str, Path]:
    made = {}
    for target in ("onnx", "openvino"):
        for precision in ("fp32", "int8"):
            config = BuildConfig(source=str(assets["model"]), target=target, precision=precision, calib=assets["calib"],
                                 out=assets["out"], input_shapes=dict([parse_input_shape(f"x:1x3x48x{CALIB_WIDTH}")]))
            made[f"{target}-{precision}"] = build(config).bundle_dir
    return made


def _source_outputs(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return np.asarray(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])


@pytest.mark.slow
@pytest.mark.parametrize("key", ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"])
def test_bundles_keep_the_width_dynamic_and_match_the_source_at_widths_never_seen(bundles, assets, key: str) -> None:
    manifest = load_manifest(bundles[key])
    assert manifest.inputs[0]["shape"] == ["batch", 3, 48, "width"]
    assert manifest.outputs[0]["shape"] == ["batch", "width", 10]
    assert "fix_shapes" not in [p["name"] for p in manifest.passes]
    rng = np.random.default_rng(5)
    with open_runner(str(bundles[key]), manifest.model_dump(mode="json")) as runner:
        for width in OTHER_WIDTHS:
            x = rng.standard_normal((1, 3, 48, width)).astype(np.float32)
            got, want = runner.infer({"x": x})["logits"], _source_outputs(assets["model"], x)
            assert got.shape == want.shape == (1, width, 10)
            metrics = measure.compare_output(want, got)
            assert metrics["cosine"] > (0.99999 if key.endswith("fp32") else 0.99), (width, metrics)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"])
def test_golden_inputs_cover_two_widths_and_verify_runs_both(bundles, key: str) -> None:
    manifest = load_manifest(bundles[key])
    second = manifest.parity["golden_source"]["second_shape"]
    assert second["dims"] == {"width": [CALIB_WIDTH, 2 * CALIB_WIDTH]} and second["samples"] == 2
    assert manifest.parity["samples"] == 10
    if key.startswith("onnx"):  # MACs at the golden inputs' width, not at 1
        assert manifest.model_cost is not None and manifest.model_cost["dims"] == {"batch": 1, "width": CALIB_WIDTH}
    golden_in, golden_out = read_golden(bundles[key] / "golden.npz")
    assert sorted({g["x"].shape[3] for g in golden_in}) == [CALIB_WIDTH, 2 * CALIB_WIDTH]
    assert {o["logits"].shape[1] for o in golden_out} == {CALIB_WIDTH, 2 * CALIB_WIDTH}
    report = verify_bundle(bundles[key])
    assert [s["x"] for s in report.shapes] == [[1, 3, 48, CALIB_WIDTH], [1, 3, 48, 2 * CALIB_WIDTH]]
    assert "at 2 input shapes: x 1x3x48x320, 1x3x48x640" in report.parity_summary()


@pytest.mark.slow
def test_the_shim_verifies_every_golden_shape_with_numpy_and_the_runtime_only(bundles) -> None:
    proc = run_shim(bundles["openvino-int8"], "verify", ".", "--json")
    assert proc.returncode == 0, proc.stderr
    report = load_json(proc.stdout)
    assert report["ok"] and report["shapes"] == 2 and report["samples"] == load_manifest(bundles["openvino-int8"]).parity["golden_stored"]["samples"]


@pytest.mark.slow
def test_a_range_is_recorded_and_serving_takes_widths_inside_it_only(assets) -> None:
    config = BuildConfig(source=str(assets["model"]), out=assets["out"], name="ranged",
                         input_shapes=dict([parse_input_shape("x:1x3x48x[32..640]")]))
    bundle = build(config).bundle_dir
    manifest = load_manifest(bundle)
    assert manifest.inputs[0]["ranges"] == [None, None, None, [32, 640]]
    source = manifest.parity["golden_source"]
    assert source["second_shape"]["dims"] == {"width": [32, 64]}  # the rule's 16, brought into the range, then doubled
    x = np.random.default_rng(2).standard_normal((1, 3, 48, 423)).astype(np.float32)
    with serving(bundle) as (url, _):
        ok = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}})
        wide = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": np.zeros((1, 3, 48, 700)).tolist()}})
    assert ok.status_code == 200, ok.text
    np.testing.assert_allclose(np.asarray(ok.json()["outputs"]["logits"]), _source_outputs(assets["model"], x), rtol=1e-4, atol=1e-5)
    assert wide.status_code == 422 and "'x' has shape [1, 3, 48, 700]" in wide.text


def test_tflite_asks_for_input_when_the_width_is_dynamic_without_writing_anything(assets, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(assets["model"]), "--target", "tflite", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "tflite target needs fixed input sizes", "dim 3 ('width') of input 'x'",
                          "--input x:1x3x48xN", "(onnx, openvino)")
    ranged = run_cli("build", str(assets["model"]), "--target", "tflite", "--input", "x:1x3x48x[32..640]", "--out", str(out))
    assert_one_line_error(ranged, errors.EXIT_CONFIG, "--input gives [32..640] for it")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_tflite_builds_at_the_size_input_gives(assets, tmp_path: Path) -> None:
    proc = run_cli("build", str(assets["model"]), "--target", "tflite", "--input", f"x:1x3x48x{CALIB_WIDTH}",
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "rec-tflite-fp32" / "manifest.json").read_text())
    assert manifest["parity"]["outputs"]["logits"]["cosine"] > 0.9999
    assert "second_shape" not in manifest["parity"]["golden_source"]


def test_tensorrt_fixes_the_sizes_input_gives_and_asks_for_them_otherwise(assets, tmp_path: Path) -> None:
    refused = run_cli("build", str(assets["model"]), "--target", "tensorrt", "--out", str(tmp_path / "out"))
    assert_one_line_error(refused, errors.EXIT_CONFIG, "tensorrt target needs fixed input sizes", "'width'")
    config = BuildConfig(source=str(assets["model"]), target="tensorrt", out=tmp_path / "out",
                         input_shapes={"x": (1, 3, 48, CALIB_WIDTH)})
    manifest = load_manifest(build(config).bundle_dir)
    assert manifest.inputs[0]["shape"] == [1, 3, 48, CALIB_WIDTH]
    assert [p["name"] for p in manifest.passes][:1] == ["fix_shapes"]
