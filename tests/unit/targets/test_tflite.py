"""The tflite target on tiny models built in the test: Keras, SavedModel and ONNX sources, every precision,
layouts, int8 model IO, and converter failures that name the op and the route.

Bundles are built once per module (each conversion takes seconds) and shared between tests.

The checks that build nothing; the builds are in tests/integration/targets/test_tflite.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.core import errors  # noqa: E402
from edgec.runtime_shims.litert import dequantize, quantize  # noqa: E402
from edgec.targets.base import PrecisionRequest  # noqa: E402
from edgec.targets.tflite import quant_plan  # noqa: E402

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the tflite target: pip install 'edgec[tflite]'")


def test_int8_plan_is_full_integer_with_calibration_and_dynamic_range_without() -> None:
    from edgec.calibration.dataset import CalibrationSet
    from edgec.core.types import TensorSpec

    calib = CalibrationSet.from_arrays({"x": np.zeros((4, 1, 3), np.float32)}, (TensorSpec("x", (1, 3), "float32"),))
    assert quant_plan(PrecisionRequest("int8", calibration=calib), "float").kind == "full"
    assert quant_plan(PrecisionRequest("int8", int8_mode="dynamic", calibration=calib), "float").kind == "dynamic"
    assert quant_plan(PrecisionRequest("int8"), "float").kind == "dynamic"
    assert quant_plan(PrecisionRequest("fp16"), "float").kind == "float16"
    with pytest.raises(errors.CalibrationError, match="needs calibration data"):
        quant_plan(PrecisionRequest("int8", int8_mode="static"), "float")
    with pytest.raises(errors.UnsupportedError, match="full-integer"):
        quant_plan(PrecisionRequest("fp16"), "int8")
    with pytest.raises(errors.ConfigError, match="io_dtype"):
        quant_plan(PrecisionRequest("int8", calibration=calib), "int16")


def test_runner_quantization_round_trips_within_half_a_step_and_saturates() -> None:
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}  # represents [-6.25, 6.5]
    x = np.linspace(-6.2, 6.4, 101, dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == np.int8
    assert np.max(np.abs(dequantize(q, detail) - x)) <= 0.025 + 1e-6
    assert quantize(np.array([-100.0, 100.0], np.float32), detail).tolist() == [-128, 127]
    assert np.array_equal(quantize(q, detail), q)  # integer feeds pass through unchanged
