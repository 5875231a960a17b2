"""Per-layer comparison and mixed precision on the openvino target, on the fragile six-conv model of
``make_fragile`` (``tests/support/models.py``) (conv3 reads an activation whose channel 0 is 300x the others, so
static INT8's per-tensor range for it crushes the other channels). nncf's ignored scope keeps ops in float.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import BuildOutcome, build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from tests.support.cli import run_cli
from tests.support.models import fragile_assets

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fragile_assets(tmp_path_factory.mktemp("fragile-openvino"))


def _config(fragile: dict[str, Path], out: Path, **kw) -> BuildConfig:
    return BuildConfig(source=str(fragile["model"]), target="openvino", precision="int8", calib=fragile["calib"], out=out,
                       allow_degraded=True, **kw)  # naive INT8 of the fragile model collapses: written to study it


@pytest.fixture(scope="module")
def bundles(fragile: dict[str, Path]) -> dict[str, Path]:
    out = fragile["dir"] / "out"
    return {"fp32": build(BuildConfig(source=str(fragile["model"]), target="openvino", out=out)).bundle_dir,
            "int8": build(_config(fragile, out)).bundle_dir,
            "report": build(_config(fragile, fragile["dir"] / "report", report_layers=True)).bundle_dir}


@pytest.fixture(scope="module")
def mixed(fragile: dict[str, Path]) -> BuildOutcome:
    return build(_config(fragile, fragile["dir"] / "mixed", max_drop=0.02, metric="cosine"))


def _ignored_convs(bundle: Path) -> set[str]:
    """Convolutions whose weights are not fake-quantized (stored float, no int8 Convert in front)."""
    model = ov.Core().read_model(str(bundle / "model.xml"))
    return {op.get_friendly_name().split("/")[0] for op in model.get_ordered_ops()
            if op.get_type_name() == "Convolution" and op.input_value(1).get_node().get_type_name() == "Constant"}


def test_naive_int8_breaks_a_two_percent_cosine_budget(bundles: dict[str, Path]) -> None:
    assert load_manifest(bundles["int8"]).parity["outputs"]["logits"]["cosine"] < 0.95
    assert _ignored_convs(bundles["int8"]) == set()  # every convolution has int8 weights


def test_layer_report_ranks_the_layer_reading_the_outlier_activation_first(bundles: dict[str, Path]) -> None:
    layers = json.loads((bundles["report"] / "layers.json").read_text())["layers"]
    assert layers[0]["layer"] == "conv3" and layers[0]["op"] == "Convolution"
    assert layers[0]["growth"] > 3 * layers[1]["growth"]
    assert load_manifest(bundles["report"]).model_extra["layer_report"]["worst"][0] == "conv3"


def test_debug_command_ranks_against_the_sibling_fp32_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("debug", str(bundles["int8"]), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["layer"] == "conv3"
    assert run_cli("verify", str(bundles["int8"])).returncode == 0


def test_debug_keeps_the_build_report_and_writes_outside_the_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    listed = (bundles["report"] / "layers.json").read_bytes()
    proc = run_cli("debug", str(bundles["report"]), "--reference", str(bundles["fp32"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"{bundles['report'].name}.layers.json").is_file() and "conv3" in proc.stdout
    assert (bundles["report"] / "layers.json").read_bytes() == listed and not (bundles["report"] / "layers.debug.json").exists()
    assert run_cli("verify", str(bundles["report"])).returncode == 0  # the listed layers.json is untouched


def test_max_drop_keeps_only_the_fragile_layer_in_float_with_nncf_ignored_scope(mixed: BuildOutcome) -> None:
    mp = mixed.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02 >= mp["drop"]
    assert mp["float_layers"] == ["conv3"] and mp["float_nodes"] == ["conv3/WithoutBiases"]
    assert mixed.manifest.target_details["quantization"]["kept_float"] == ["conv3/WithoutBiases"]
    assert _ignored_convs(mixed.bundle_dir) == {"conv3"}  # conv1, conv2, conv4-6 still int8
    assert mixed.manifest.parity["outputs"]["logits"]["cosine"] > 0.98
    assert mixed.mixed_precision_cost["latency_ms"] > 0 and mixed.mixed_precision_cost["size"] > 0
    assert run_cli("verify", str(mixed.bundle_dir)).returncode == 0


def test_fp32_and_int8_bundles_share_op_names(bundles: dict[str, Path]) -> None:
    core = ov.Core()
    names = [{op.get_friendly_name() for op in core.read_model(str(bundles[k] / "model.xml")).get_ordered_ops()
              if op.get_type_name() != "Constant"} for k in ("fp32", "int8")]
    assert len(names[0]) > 10 and names[0] <= names[1]  # quantization adds ops (and int8 weights) only


def test_unknown_op_to_keep_in_float_is_refused(fragile: dict[str, Path], tmp_path: Path) -> None:
    from edgec.calibration.dataset import load_calibration
    from edgec.frameworks.onnx_utils import artifact_from_file
    from edgec.targets.base import PrecisionRequest
    from edgec.targets.openvino import OpenVinoTarget

    artifact = artifact_from_file(fragile["model"])
    calib = load_calibration(fragile["calib"], artifact.inputs)
    request = PrecisionRequest("int8", calibration=calib, exclude=("no_such_op",))
    with pytest.raises(errors.ConfigError, match="no_such_op"):
        OpenVinoTarget().export(artifact, tmp_path, request, tmp_path)


