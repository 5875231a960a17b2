"""Per-layer comparison and mixed precision on the executorch target, on the fragile six-conv model of
``make_fragile`` (``tests/support/models.py``) rebuilt in torch with the same weights: conv2's output channel 0 is
300x the others and conv3 scales it back down, so static INT8's per-tensor range for the activation between
them crushes the other channels, and the error appears in conv3. Layers are the torch modules' names; PT2E's
per-module config keeps them in float.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import BuildOutcome, build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from tests.support.cli import run_cli
from tests.support.models import DEPTH, fragile_assets

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Fragile(torch.nn.Module):
    """The ONNX fragile model's graph in torch: conv1..conv6 with ``torch.relu`` in the forward, then ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        for i in range(1, DEPTH + 1):
            setattr(self, f"conv{i}", torch.nn.Conv2d(3 if i == 1 else 8, 8, 3, padding=1))
        self.fc = torch.nn.Linear(8 * 64, 10)

    def forward(self, x: Any) -> Any:
        for i in range(1, DEPTH + 1):
            x = torch.relu(getattr(self, f"conv{i}")(x))
        return self.fc(x.flatten(1))


def fragile_pt2(onnx_path: Path, path: Path) -> Path:
    """The torch twin of the ONNX fragile model (its initializers as the modules' parameters), as a ``.pt2``."""
    import onnx
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    weights["fc.weight"] = weights["fc.weight"].T.copy()  # Gemm reads (in, out); Linear holds (out, in)
    model = Fragile().eval()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    assets = fragile_assets(tmp_path_factory.mktemp("fragile-executorch"))
    return {**assets, "model": fragile_pt2(assets["model"], assets["dir"] / "fragile.pt2")}


def _config(fragile: dict[str, Path], out: Path, **kw: Any) -> BuildConfig:
    return BuildConfig(source=str(fragile["model"]), target="executorch", precision="int8", calib=fragile["calib"],
                       int8_mode="static", out=out, allow_degraded=True, **kw)  # naive INT8 collapses: kept to study it


@pytest.fixture(scope="module")
def report(fragile: dict[str, Path]) -> BuildOutcome:
    return build(_config(fragile, fragile["dir"] / "report", report_layers=True))


@pytest.fixture(scope="module")
def mixed(fragile: dict[str, Path]) -> BuildOutcome:
    return build(_config(fragile, fragile["dir"] / "mixed", max_drop=0.02, metric="cosine"))


def _int8_weights(outcome: BuildOutcome) -> tuple[int, int]:
    """(convolutions, int8 weight tensors) delegated to XNNPACK: a layer kept in float has float weights."""
    delegated = outcome.manifest.target_details["operators"]["delegated"]
    return delegated["aten.convolution.default"], delegated["quantized_decomposed.dequantize_per_channel.default"]


def test_layer_report_ranks_conv3_first_by_its_torch_module_name(report: BuildOutcome) -> None:
    layers = json.loads((report.bundle_dir / "layers.json").read_text())["layers"]
    assert report.manifest.parity["outputs"]["output"]["cosine"] < 0.95  # naive static INT8 collapses
    first, second = layers[0], layers[1]
    assert first["layer"] == "conv3" and first["op"] == "conv2d"
    assert first["growth"] > 3 * second["growth"]
    assert {d["layer"] for d in layers} >= {f"conv{i}" for i in range(1, DEPTH + 1)} | {"fc"}
    assert load_manifest(report.bundle_dir).model_extra["layer_report"]["worst"][0] == "conv3"
    assert run_cli("verify", str(report.bundle_dir)).returncode == 0


def test_max_drop_keeps_conv3_and_its_producer_in_float_and_the_rest_int8(mixed: BuildOutcome) -> None:
    mp = mixed.manifest.model_extra["mixed_precision"]
    assert mp["steps"][0]["drop"] > 0.02 >= mp["drop"]
    assert mp["float_layers"][0] == "conv3" and set(mp["float_layers"]) <= {"conv3", "conv2"}
    assert mixed.manifest.target_details["quantization"]["kept_float"] == mp["float_nodes"] == mp["float_layers"]
    assert _int8_weights(mixed) == (DEPTH, DEPTH - len(mp["float_layers"]) + 1)  # the other convs and fc stay int8
    assert mixed.manifest.parity["outputs"]["output"]["cosine"] > 0.98
    assert run_cli("verify", str(mixed.bundle_dir)).returncode == 0


def test_mixed_precision_rebuild_is_byte_identical(fragile: dict[str, Path], mixed: BuildOutcome, tmp_path: Path) -> None:
    again = build(_config(fragile, tmp_path, max_drop=0.02, metric="cosine", cache=False))
    assert (again.bundle_dir / "model.pte").read_bytes() == (mixed.bundle_dir / "model.pte").read_bytes()


def test_a_name_that_is_no_module_or_op_is_refused(fragile: dict[str, Path], tmp_path: Path) -> None:
    from edgec.calibration.dataset import CalibrationSet
    from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
    from edgec.targets.base import PrecisionRequest
    from edgec.targets.executorch import ExecuTorchTarget

    artifact = ModelArtifact(fragile["model"], FORMAT_PT2, (TensorSpec("x", ("batch", 3, 8, 8), "float32"),),
                             (TensorSpec("output", ("batch", 10), "float32"),), "0" * 64)
    calibration = CalibrationSet({"x": np.load(fragile["calib"])["x"][:8, None]}, "inline", "minmax", "0" * 64)
    request = PrecisionRequest("int8", int8_mode="static", calibration=calibration, exclude=("conv9",))
    with pytest.raises(errors.ConfigError, match="conv9"):
        ExecuTorchTarget().export(artifact, tmp_path, request, tmp_path)


def test_debug_of_a_finished_bundle_is_refused_in_one_line(report: BuildOutcome, tmp_path: Path) -> None:
    proc = run_cli("debug", str(report.bundle_dir), cwd=tmp_path)
    assert proc.returncode == errors.EXIT_UNSUPPORTED and proc.stderr.count("\n") == 1, proc.stderr
