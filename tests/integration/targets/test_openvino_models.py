"""The openvino target on the real models through the CLI: the digits CNN (accuracy) and MiniLM (cosine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks.zoo import digits, minilm
from edgec.core.bundle import load_manifest
from edgec.runtime_shims.openvino import OpenVinoRunner
from tests.support.cli import run_cli

pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINILM = "edgec.benchmarks.zoo.minilm:factory"


def _cli_build(source: str, out: Path, precision: str, calib: Path | None = None) -> Path:
    args = ["build", source, "--target", "openvino", "--precision", precision, "--out", str(out)]
    if calib is not None:
        args += ["--calib", str(calib)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    bundles = [p for p in out.iterdir() if p.is_dir() and p.name.endswith(f"-openvino-{precision}")]
    assert len(bundles) == 1, bundles
    return bundles[0]


@pytest.fixture(scope="module")
def digits_bundles(digits_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 and int8 from one ``edgec build --precision fp32,int8`` (the source loaded once; both get the digits
    as calibration data, which the fp32 bundle uses only for its golden inputs)."""
    out = tmp_path_factory.mktemp("ov-digits")
    proc = run_cli("build", str(digits_assets["pt2"]), "--target", "openvino", "--precision", "fp32,int8",
                   "--calib", str(digits_assets["calib"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return {p: out / f"digits-openvino-{p}" for p in ("fp32", "int8")}


def _accuracy(bundle: Path, evaluation: Path) -> float:
    data = np.load(evaluation)
    with OpenVinoRunner(str(bundle / "model.xml"), threads=2) as runner:
        logits = runner.infer({"x": data["x"]})["output"]
    return digits.accuracy(logits, data["labels"])


def test_digits_int8_is_within_one_point_of_fp32(digits_bundles: dict[str, Path], digits_assets: dict[str, Path],
                                                 record_property: pytest.RecordProperty) -> None:
    fp32 = _accuracy(digits_bundles["fp32"], digits_assets["eval"])
    int8 = _accuracy(digits_bundles["int8"], digits_assets["eval"])
    record_property("digits_fp32_accuracy", fp32)
    record_property("digits_int8_accuracy", int8)
    print(f"digits held-out accuracy: openvino fp32 {fp32:.4f}, int8 {int8:.4f}")
    assert fp32 > 0.95
    assert int8 >= fp32 - 0.01


def test_digits_int8_is_static_nncf_on_the_direct_pytorch_route(digits_bundles: dict[str, Path]) -> None:
    m = load_manifest(digits_bundles["int8"])
    assert m.target_details["route"] == "pt2"
    quant = m.target_details["quantization"]
    assert quant["mode"] == "static" and quant["model_type"] == "default" and quant["subset_size"] == 256
    assert (digits_bundles["int8"] / "model.bin").stat().st_size < 0.4 * (digits_bundles["fp32"] / "model.bin").stat().st_size
    proc = run_cli("verify", str(digits_bundles["int8"]))
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def minilm_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov-minilm")
    calib = minilm.save_calib(out / "calib.npz")
    return _cli_build(MINILM, out, "int8", calib)


def test_minilm_int8_keeps_cosine_of_at_least_098_to_fp32_torch(minilm_int8: Path, record_property: pytest.RecordProperty) -> None:
    reference = minilm.embed_torch(minilm.load_module(), minilm.SENTENCES)
    with OpenVinoRunner(str(minilm_int8 / "model.xml"), threads=2) as runner:
        int8 = minilm.embed_with_runner(runner, minilm.SENTENCES)
        a, b = minilm.embed_with_runner(runner, minilm.KNOWN_PAIR)
    cos = minilm.cosine_rows(reference, int8)
    record_property("minilm_int8_cosine_mean", float(cos.mean()))
    record_property("minilm_int8_cosine_min", float(cos.min()))
    print(f"MiniLM openvino int8 vs torch fp32 on {len(cos)} sentences: mean cosine {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.98 and cos.min() >= 0.98, cos
    assert abs(float(a @ b) - minilm.KNOWN_PAIR_COSINE) < 0.02


def test_minilm_int8_is_quantized_as_a_transformer_and_takes_any_batch_and_length(minilm_int8: Path) -> None:
    quant = load_manifest(minilm_int8).target_details["quantization"]
    assert quant["mode"] == "static" and quant["model_type"] == "transformer" and quant["subset_size"] == 64
    feed = minilm.tokenize(minilm.SENTENCES[:3], max_length=40)
    with OpenVinoRunner(str(minilm_int8 / "model.xml")) as runner:
        batched = runner.infer(feed)[minilm.OUTPUT_NAME]
        single = minilm.embed_with_runner(runner, minilm.SENTENCES[:3])
    assert batched.shape == (3, 384)
    assert minilm.cosine_rows(batched, single).min() > 0.99
