"""The tensorrt target's ``--max-drop`` candidates share calibration as the onnx target's do (the same pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.calibration.dataset import load_calibration
from edgec.compiler.passes.base import PassContext, make_pass
from edgec.frameworks.onnx_utils import artifact_from_file
from edgec.targets.base import PrecisionRequest
from edgec.targets.tensorrt import TensorRTTarget
from tests.integration.targets.test_onnx_search_reuse import calibrations  # noqa: F401 (a fixture)
from tests.support.models import fragile_assets

pytest.importorskip("onnxruntime.quantization")


def test_tensorrt_candidates_calibrate_once_and_match_unshared_builds(tmp_path: Path, calibrations: list[bool]) -> None:  # noqa: F811
    (tmp_path / "assets").mkdir()
    assets = fragile_assets(tmp_path / "assets")
    artifact = artifact_from_file(assets["model"])
    calib = load_calibration(assets["calib"], artifact.inputs)
    target = TensorRTTarget()

    def qdq(name: str, exclude: tuple[str, ...]) -> bytes:
        [(step, options)] = target.precision_passes(PrecisionRequest("int8", calibration=calib, exclude=exclude), artifact)
        (tmp_path / name).mkdir()
        return make_pass(step, options).run(artifact, PassContext(tmp_path / name, calib)).artifact.path.read_bytes()

    node = next(n for n in __import__("onnx").load(str(assets["model"])).graph.node if n.op_type == "Conv").name
    with target.reuse() as scope:
        shared = [qdq("a", ()), qdq("b", (node,))]
        assert scope.calibrations == 1 and scope.served == 1
    assert calibrations == [True]
    assert [qdq("c", ()), qdq("d", (node,))] == shared and shared[0] != shared[1]
    assert calibrations == [True, False, False]  # outside the scope each build calibrates
