"""Full-integer INT8 on the tflite target keeps a detector's class sigmoid float, not only the output ``Concat``.

A SiLU detector (YOLOv5/v8) ends in ``Concat(boxes, Sigmoid(class logits))``. TFLite's int8 ``LOGISTIC`` has a
fixed output scale, 1/256 from 0, so every class probability became a multiple of 0.0039 even with the ``Concat``
kept float: YOLOv8n's best anchors on photos without its classes score 0.001-0.03 and kept 0.856 of FP32's
detections. The head here (SiLU trunk, class logits around -5) on the code before: every class probability on the
1/256 grid (none off it); now none on it, median relative error 0.02, the ``LOGISTIC`` float and in
``kept_float_outputs``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.core.bundle import load_manifest  # noqa: E402
from tests.support.models import make_detector_head  # noqa: E402
from tests.support.tflite import int8_beside_onnxruntime  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_int8_keeps_low_class_probabilities_off_the_logistic_grid(tmp_path: Path) -> None:
    src = make_detector_head(tmp_path / "head.onnx", silu_trunk=True)
    bundle, want, got = int8_beside_onnxruntime(src, tmp_path, (1, 3, 8, 8))
    want, got = want[:, 4:], (got if got.shape[1] == 6 else np.transpose(got, (0, 2, 1)))[:, 4:]
    assert want.max() < 0.2  # low probabilities: a 1/256 grid holds them in a few steps
    off_grid = np.abs(got * 256 - np.round(got * 256)) > 1e-3
    assert off_grid.mean() > 0.9  # not multiples of 1/256
    assert float(np.median(np.abs(got - want) / want)) < 0.1
    kept = load_manifest(bundle).target_details["kept_float_outputs"]
    assert [k["output"] for k in kept] == ["y"]
    assert len(kept[0]["nodes"]) == 6  # the join, its moves and the class LOGISTIC (before: 5)
    assert _float_logistics(bundle / "model.tflite") == 1


def _float_logistics(model: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    return sum(1 for op in interpreter._get_ops_details()
               if op["op_name"] == "LOGISTIC" and dtypes[op["outputs"][0]] == np.float32)
