"""Per-layer comparison and mixed precision on the tflite target (ONNX route through onnx2tf), on the fragile
six-conv model of ``make_fragile`` (``tests/support/models.py``): conv2's output channel 0 is 300x larger and conv3
scales it back down, so full-integer INT8's per-tensor range for the activation between them crushes the
other channels, and the error appears in conv3.

Bundles are built once per module (onnx2tf and each conversion take seconds) and shared between tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import BuildOutcome, build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import load_interpreter_class  # noqa: E402
from tests.support.cli import run_cli  # noqa: E402
from tests.support.models import fragile_assets  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fragile_assets(tmp_path_factory.mktemp("fragile-tflite"))


def _config(fragile: dict[str, Path], out: Path, **kw) -> BuildConfig:
    return BuildConfig(source=str(fragile["model"]), target="tflite", precision="int8", calib=fragile["calib"], out=out,
                       allow_degraded=True, **kw)  # naive INT8 of the fragile model collapses: written to study it


@pytest.fixture(scope="module")
def bundles(fragile: dict[str, Path]) -> dict[str, Path]:
    """The FP32 bundle, the naive full-integer INT8 bundle beside it, and one built with its layer report
    in a folder of its own (so the naive bundle's sibling is the FP32 one)."""
    out = fragile["dir"] / "out"
    fp32 = build(BuildConfig(source=str(fragile["model"]), target="tflite", out=out)).bundle_dir
    report = build(_config(fragile, fragile["dir"] / "report", report_layers=True)).bundle_dir
    return {"fp32": fp32, "int8": build(_config(fragile, out)).bundle_dir, "report": report}


@pytest.fixture(scope="module")
def mixed(fragile: dict[str, Path]) -> BuildOutcome:
    return build(_config(fragile, fragile["dir"] / "mixed", max_drop=0.02, metric="top1"))


def _op_outputs(model: Path) -> dict[str, list[tuple[str, str]]]:
    """Op type -> (output tensor name, dtype) for each op of a ``.tflite`` file."""
    interpreter_class, _ = load_interpreter_class()
    interpreter = interpreter_class(model_path=str(model))
    found: dict[str, list[tuple[str, str]]] = {}
    for op in interpreter._get_ops_details():
        detail = interpreter._get_tensor_details(op["outputs"][0], 0)
        found.setdefault(op["op_name"], []).append((detail["name"], np.dtype(detail["dtype"]).name))
    return found


def test_naive_full_integer_int8_collapses_the_output(bundles: dict[str, Path]) -> None:
    m = load_manifest(bundles["int8"])
    assert m.target_details["quantization"] == "full-integer int8"
    assert m.parity["outputs"]["logits"]["cosine"] < 0.95


def test_layer_report_ranks_conv3_first_by_its_onnx_layer_name(bundles: dict[str, Path]) -> None:
    report = json.loads((bundles["report"] / "layers.json").read_text())
    first, second = report["layers"][:2]
    assert first["layer"] == "conv3" and first["op"] == "CONV_2D"
    assert "conv3" in first["node"]  # the op's output tensor: what the quantizer's denylist takes
    assert first["growth"] > 3 * second["growth"]
    assert load_manifest(bundles["report"]).model_extra["layer_report"]["worst"][0] == "conv3"


def test_debug_command_ranks_against_the_sibling_fp32_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("debug", str(bundles["int8"]), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)
    assert layers[0]["layer"] == "conv3" and layers[0]["op"] == "CONV_2D"
    assert {d["layer"] for d in layers} >= {f"conv{i}" for i in range(1, 7)} | {"fc"}
    assert run_cli("verify", str(bundles["int8"])).returncode == 0


def test_max_drop_keeps_conv3_and_its_producer_in_float(mixed: BuildOutcome) -> None:
    mp = mixed.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02  # naive INT8 broke the budget on the calibration samples
    assert mp["drop"] <= 0.02
    assert mp["float_layers"] == ["conv3", "conv2"]  # conv3 and the producer of the int8 activation it reads
    assert mixed.manifest.target_details["quantization_excluded"] == mp["float_nodes"]
    outputs = {name: dtype for ops in _op_outputs(mixed.bundle_dir / "model.tflite").values() for name, dtype in ops}
    by_layer = {layer: next(d for n, d in outputs.items() if f"/{layer}/" in n) for layer in ("conv2", "conv3", "conv5")}
    assert by_layer == {"conv2": "float32", "conv3": "float32", "conv5": "int8"}
    assert run_cli("verify", str(mixed.bundle_dir)).returncode == 0


def test_mixed_precision_rebuild_is_byte_identical(fragile: dict[str, Path], mixed: BuildOutcome, tmp_path: Path) -> None:
    again = build(_config(fragile, tmp_path, max_drop=0.02, metric="top1", cache=False))
    assert (again.bundle_dir / "model.tflite").read_bytes() == (mixed.bundle_dir / "model.tflite").read_bytes()


