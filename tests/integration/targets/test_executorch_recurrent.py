"""Recurrent models in the executorch target's INT8 (issue 18): ``XNNPACKQuantizer`` does not annotate
``aten.lstm``, so a model whose only weighted op is an LSTM was quantized in nothing and still called int8. Now
that build is refused with one line (exit 4) naming what builds, and a model with linear layers beside its LSTM
says in its manifest that the LSTM stayed float. The LSTMs are tiny: lowering big ones takes minutes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.calibration.dataset import CalibrationSet
from edgec.core import errors
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.targets.base import PrecisionRequest
from edgec.targets.executorch import ExecuTorchOptions, ExecuTorchTarget
from tests.support.cli import assert_one_line_error, run_cli

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")

LSTM_ONLY = """import torch


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def factory():
    torch.manual_seed(0)
    return M().eval(), (torch.randn(1, 5, 4),)
"""


class Head(torch.nn.Module):
    """An LSTM and a linear layer after it: the linear layer is quantized, the LSTM is not."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.fc = torch.nn.LSTM(4, 8, batch_first=True), torch.nn.Linear(8, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(self.lstm(x)[0][:, -1])


class LstmOnly(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)

    def forward(self, x: Any) -> Any:
        return self.lstm(x)[0]


def _artifact(module: Any, folder: Path, out_shape: tuple[int, ...]) -> ModelArtifact:
    torch.manual_seed(0)
    path = folder / "m.pt2"
    with warnings.catch_warnings():  # torch.export's note on nn.LSTM's _flat_weights
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module.eval(), (torch.randn(1, 5, 4),)), str(path))
    return ModelArtifact(path, FORMAT_PT2, (TensorSpec("x", (1, 5, 4), "float32"),),
                         (TensorSpec("y", out_shape, "float32"),), "0" * 64)


def _export(artifact: ModelArtifact, folder: Path, mode: str) -> dict[str, Any]:
    calibration = CalibrationSet({"x": np.random.default_rng(1).standard_normal((4, 1, 5, 4)).astype(np.float32)},
                                 "inline", "minmax", "0" * 64)
    target = ExecuTorchTarget()
    request = PrecisionRequest("int8", options=ExecuTorchOptions(), int8_mode=mode, calibration=calibration)
    target.validate(request)
    return target.export(artifact, folder, request, folder).details


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_of_an_lstm_only_program_is_refused_naming_the_lstm(mode: str, tmp_path: Path) -> None:
    artifact = _artifact(LstmOnly(), tmp_path, (1, 5, 8))
    with pytest.raises(errors.UnsupportedError, match=r"quantized nothing: .*\(1 aten\.lstm\.input\)") as caught:
        _export(artifact, tmp_path, mode)
    assert "--target onnx" in (caught.value.hint or "")
    assert not (tmp_path / "model.pte").exists()


def test_cli_int8_of_an_lstm_only_model_exits_4_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "lstm_model.py").write_text(LSTM_ONLY)
    proc = run_cli("build", f"{tmp_path / 'lstm_model.py'}:factory", "--target", "executorch", "--precision", "int8",
                   "--int8-mode", "dynamic", "--out", str(tmp_path / "out"), "--no-cache")
    assert_one_line_error(proc, 4, "executorch INT8 quantized nothing", "aten.lstm.input", "DynamicQuantizeLSTM")
    assert not (tmp_path / "out" / "lstm_model-executorch-int8").exists()


@pytest.mark.slow
def test_an_lstm_beside_a_linear_layer_is_recorded_as_kept_float(tmp_path: Path) -> None:
    details = _export(_artifact(Head(), tmp_path, (1, 3)), tmp_path, "dynamic")
    assert details["quantization"]["kept_float_ops"] == {"aten.lstm.input": 1}
    assert details["operators"]["delegated"]["quantized_decomposed.dequantize_per_channel.default"] == 1  # fc only
