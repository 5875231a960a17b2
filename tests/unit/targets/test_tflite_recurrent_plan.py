"""The tflite target's INT8 plan for a model that keeps a recurrent node (one ``unroll_rnn`` could not unroll):
onnx2tf makes it a WHILE loop, and TensorFlow's full-integer quantizer crashes the process on those, so ``auto``
takes dynamic-range and an explicit full-integer request is refused before anything is converted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import UnsupportedError
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils
from edgec.targets.base import PrecisionRequest
from edgec.targets.tflite import quant_plan
from tests.support.recurrent import make_recurrent_onnx

pytest.importorskip("onnx")


def artifact_and_calibration(path: Path, **kwargs: object) -> tuple[ModelArtifact, CalibrationSet]:
    artifact = onnx_utils.artifact_from_file(make_recurrent_onnx(path, "LSTM", **kwargs))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    arrays = {s.name: rng.standard_normal((4, *s.shape)).astype(np.float32) for s in artifact.inputs}
    return artifact, CalibrationSet.from_arrays(arrays, artifact.inputs)


def test_auto_int8_of_a_remaining_lstm_is_dynamic_range(tmp_path: Path) -> None:
    artifact, calib = artifact_and_calibration(tmp_path / "m.onnx", clip=1.0)
    assert quant_plan(PrecisionRequest("int8", calibration=calib), "float", artifact).kind == "dynamic"


@pytest.mark.parametrize(("mode", "io_dtype"), [("static", "float"), ("auto", "int8")])
def test_full_integer_int8_of_a_remaining_lstm_is_refused_naming_the_node(mode: str, io_dtype: str,
                                                                         tmp_path: Path) -> None:
    artifact, calib = artifact_and_calibration(tmp_path / "m.onnx", clip=1.0)
    with pytest.raises(UnsupportedError, match=r"full-integer INT8 of LSTM '/rec/LSTM'.*WHILE loop") as info:
        quant_plan(PrecisionRequest("int8", mode, calib), io_dtype, artifact)
    assert "--int8-mode dynamic" in (info.value.hint or "")


def test_unrolled_model_keeps_full_integer_int8(tmp_path: Path) -> None:
    from edgec.compiler.passes.unroll_rnn import unroll

    artifact, calib = artifact_and_calibration(tmp_path / "m.onnx")
    model = onnx_utils.load_model(artifact.path)
    assert unroll(model)[0] == {"LSTM": 1}
    unrolled = onnx_utils.save_artifact(model, tmp_path)
    assert quant_plan(PrecisionRequest("int8", "static", calib), "float", unrolled).kind == "full"


def test_sequence_and_state_inputs_keep_their_layout_and_conv1d_inputs_do_not(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.targets._tflite_onnx import sequence_inputs

    lstm = onnx.load(str(make_recurrent_onnx(tmp_path / "lstm.onnx", "LSTM")))
    assert sequence_inputs(lstm) == ["x", "h0", "c0"]
    w = numpy_helper.from_array(np.ones((4, 2, 3), np.float32), "w")
    nodes = [helper.make_node("Relu", ["audio"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    graph = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 14])], [w])
    assert sequence_inputs(helper.make_model(graph)) == []  # [N, C, W] through a Relu into a Conv
