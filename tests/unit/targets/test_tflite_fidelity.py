"""Per-layer comparison and mixed precision on the tflite target (ONNX route through onnx2tf), on the fragile
six-conv model of ``make_fragile`` (``tests/support/models.py``): conv2's output channel 0 is 300x larger and conv3
scales it back down, so full-integer INT8's per-tensor range for the activation between them crushes the
other channels, and the error appears in conv3.

Bundles are built once per module (onnx2tf and each conversion take seconds) and shared between tests.

The checks that build nothing; the builds are in tests/integration/targets/test_tflite_fidelity.py."""

from __future__ import annotations

import pytest

from edgec.core import errors  # noqa: E402
from edgec.targets._tflite_layers import source_layer  # noqa: E402
from edgec.targets.base import PrecisionRequest  # noqa: E402
from edgec.targets.tflite import quant_plan  # noqa: E402

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")


def test_keeping_layers_in_float_needs_full_integer_int8() -> None:
    request = PrecisionRequest("int8", int8_mode="dynamic", exclude=("model_10/conv3/Relu",))
    with pytest.raises(errors.UnsupportedError, match="full-integer INT8"):
        quant_plan(request, "float")


def test_source_layer_is_the_keras_scope_of_the_last_fused_op_that_has_one() -> None:
    assert source_layer("model_2/conv/Relu;model_2/conv/Add;model_2/conv/convolution;Const_31") == "conv"
    assert source_layer("model_10/fc/Reshape;model_10/flatten/Reshape") == "flatten"
    assert source_layer("PartitionedCall:0") is None and source_layer("serving_default_x:0") is None
