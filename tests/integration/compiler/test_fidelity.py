"""Per-layer divergence and mixed precision under a budget, on a model with one known-fragile layer.

The model is six 3x3 convolutions; conv2's output channel 0 is scaled up 300x and conv3 scales that
input channel back down. FP32 does not care, but static INT8 gives the tensor between them one
per-tensor range that the outlier channel fills, so every other channel is crushed to a few levels:
the error appears in conv3, the layer that reads the outlier-heavy activation.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from tests.support.cli import run_cli
from tests.support.models import fragile_assets


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fragile_assets(tmp_path_factory.mktemp("fragile"))


def _build(fragile: dict[str, Path], out: Path, **kw):
    """Naive INT8 of the fragile model collapses (cosine < 0.9): written with allow_degraded to study it."""
    return build(BuildConfig(source=str(fragile["model"]), precision="int8", calib=fragile["calib"], out=out,
                             allow_degraded=True, **kw))


def test_naive_int8_collapses_the_output(fragile, tmp_path: Path) -> None:
    m = load_manifest(_build(fragile, tmp_path).bundle_dir)
    assert m.parity["outputs"]["logits"]["cosine"] < 0.95


def test_layer_report_ranks_the_layer_reading_the_outlier_activation_first(fragile, tmp_path: Path) -> None:
    bundle = _build(fragile, tmp_path, report_layers=True).bundle_dir
    report = json.loads((bundle / "layers.json").read_text())
    assert report["layers"][0]["layer"] == "conv3"
    assert report["layers"][0]["growth"] > 3 * report["layers"][1]["growth"]
    assert load_manifest(bundle).model_extra["layer_report"]["worst"][0] == "conv3"
    assert "layers.json" in {f.path for f in load_manifest(bundle).files}


@pytest.fixture(scope="module")
def int8_beside_fp32(fragile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An int8 bundle with its sibling fp32 bundle, in a folder of their own."""
    out = tmp_path_factory.mktemp("debug") / "bundles"
    build(BuildConfig(source=str(fragile["model"]), out=out))
    return _build(fragile, out).bundle_dir


def _listing(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def test_debug_command_ranks_against_the_sibling_fp32_bundle(int8_beside_fp32: Path, tmp_path: Path) -> None:
    bundle = int8_beside_fp32
    proc = run_cli("debug", str(bundle), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)
    assert layers[0]["layer"] == "conv3" and layers[0]["op"] in ("Conv", "Relu")
    assert run_cli("verify", str(bundle)).returncode == 0  # the report does not disturb the bundle's proof


def test_debug_leaves_the_bundle_untouched_and_writes_the_report_where_it_says(int8_beside_fp32: Path, tmp_path: Path) -> None:
    bundle = int8_beside_fp32
    out = bundle.parent
    before, siblings = _listing(bundle), sorted(p.name for p in out.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("debug", str(bundle), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert _listing(bundle) == before and sorted(p.name for p in out.iterdir()) == siblings  # nothing in or beside it
    printed = Path(proc.stdout.strip().splitlines()[-1].removeprefix("layer report written to "))
    assert printed == work / f"{bundle.name}.layers.json" and printed.is_file()
    report = json.loads(printed.read_text())
    assert report["layers"][0]["layer"] == "conv3" and report["samples"] > 0
    assert [p.name for p in work.iterdir()] == [printed.name]  # no temporary file left behind
    assert run_cli("verify", str(bundle)).returncode == 0


def test_debug_writes_the_report_to_out(int8_beside_fp32: Path, tmp_path: Path) -> None:
    bundle = int8_beside_fp32
    target = tmp_path / "reports" / "int8-layers.json"
    proc = run_cli("debug", str(bundle), "--out", str(target), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(target.read_text())["layers"] == json.loads(proc.stdout)
    assert proc.stderr.strip() == f"layer report written to {target}"


def test_debug_refuses_an_out_path_inside_the_bundle(int8_beside_fp32: Path, tmp_path: Path) -> None:
    from tests.support.cli import assert_one_line_error

    bundle = int8_beside_fp32
    before = _listing(bundle)
    proc = run_cli("debug", str(bundle), "--out", str(bundle / "layers.debug.json"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "bundles are immutable")
    proc = run_cli("debug", str(bundle), cwd=bundle)  # the default, from inside the bundle
    assert_one_line_error(proc, errors.EXIT_CONFIG, "inside the bundle")
    assert _listing(bundle) == before


def test_debug_without_reference_says_how_to_give_one(fragile, tmp_path: Path) -> None:
    bundle = _build(fragile, tmp_path).bundle_dir
    proc = run_cli("debug", str(bundle))
    assert proc.returncode == errors.EXIT_CONFIG and "--reference" in proc.stderr


def test_max_drop_recovers_the_budget_with_few_layers_in_float(fragile, tmp_path: Path) -> None:
    outcome = _build(fragile, tmp_path, max_drop=0.02, metric="top1")
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02  # naive INT8 broke the budget on the calibration samples
    assert mp["drop"] <= 0.02
    assert mp["float_layers"] == ["conv3", "conv2"]  # conv3 and the producer of the activation it reads
    assert set(mp["float_nodes"]) == {"conv2", "relu2", "conv3", "relu3"}
    model = onnx.load(str(outcome.bundle_dir / "model.onnx"))
    still_quantized = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert any(name.startswith("conv5.weight") for name in still_quantized)
    assert outcome.mixed_precision_cost["size"] > 0 and outcome.mixed_precision_cost["latency_ms"] > 0


def test_max_drop_with_accuracy_metric_needs_eval_data(fragile, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="--eval"):
        _build(fragile, tmp_path, max_drop=0.01, metric="accuracy")


def test_unreachable_budget_fails_with_the_best_result_and_writes_nothing(fragile, tmp_path: Path) -> None:
    with pytest.raises(errors.AccuracyGateError, match=r"could not meet --max-drop 0.0001 on cosine: best drop"):
        _build(fragile, tmp_path / "out", max_drop=0.0001, metric="cosine", max_float_layers=1)
    assert not (tmp_path / "out").exists()




def test_max_drop_keeps_layers_in_float_on_the_tensorrt_target_too(fragile, tmp_path: Path) -> None:
    outcome = _build(fragile, tmp_path, target="tensorrt", max_drop=0.02, metric="top1")
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02 >= mp["drop"]
    assert mp["float_layers"][:2] == ["conv3", "conv2"]
    assert outcome.manifest.passes[-1]["options"]["nodes_to_exclude"] == mp["float_nodes"]
    model = onnx.load(str(outcome.bundle_dir / "model.onnx"))
    quantized = {n.input[0].split(".")[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]}
    assert "conv3" not in quantized and {"conv5", "conv6"} <= quantized  # QDQ kept for the rest, TensorRT's rules hold
