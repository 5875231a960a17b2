"""Long LSTMs in the executorch target (issue 18): ExecuTorch unrolled ``aten.lstm`` into one XNNPACK delegate
per step and layer, so lowering grew faster than the steps (Resemblyzer's 3 layers over 160 steps ran past
900 s). Now an LSTM lowers as one loop per layer with its body in one XNNPACK delegate, in seconds and with the
same outputs, and a recurrent op that would still unroll into more than 64 cells is refused with one line
before lowering."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.core import errors
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.runtime_shims.executorch import ExecuTorchRunner
from edgec.targets.base import PrecisionRequest
from edgec.targets.executorch import ExecuTorchOptions, ExecuTorchTarget

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")
pytestmark = pytest.mark.timeout(180)  # the unrolled lowering ran for minutes

STEPS = 100
"""2 layers x 100 steps: 200 unrolled cells, minutes to lower before (60 cells took about 30 s)."""


class Encoder(torch.nn.Module):  # type: ignore[name-defined,misc]  # torch from importorskip
    """Resemblyzer's shape, smaller: a stacked LSTM, its last hidden state through a linear layer."""

    def __init__(self, layers: int = 2, bidirectional: bool = False, gru: bool = False) -> None:
        super().__init__()
        kind = torch.nn.GRU if gru else torch.nn.LSTM
        self.rnn = kind(8, 16, layers, batch_first=True, bidirectional=bidirectional)
        self.fc = torch.nn.Linear(32 if bidirectional else 16, 4)

    def forward(self, x: Any) -> Any:
        out = self.rnn(x)[0]
        return torch.relu(self.fc(out[:, -1])) + out.mean(dim=1).sum(dim=1, keepdim=True)


def _artifact(module: Any, folder: Path) -> ModelArtifact:
    torch.manual_seed(0)
    path = folder / "m.pt2"
    with warnings.catch_warnings():  # torch.export's note on nn.LSTM's _flat_weights
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module.eval(), (torch.randn(1, STEPS, 8),)), str(path))
    return ModelArtifact(path, FORMAT_PT2, (TensorSpec("x", (1, STEPS, 8), "float32"),),
                         (TensorSpec("y", (1, 4), "float32"),), "0" * 64)


def _build(module: Any, folder: Path, precision: str) -> tuple[dict[str, Any], float, float]:
    """The manifest details, the seconds the export took and the largest difference from torch."""
    torch.manual_seed(0)
    artifact = _artifact(module, folder)
    target = ExecuTorchTarget()
    request = PrecisionRequest(precision, options=ExecuTorchOptions(), int8_mode="dynamic")
    target.validate(request)
    start = time.monotonic()
    result = target.export(artifact, folder, request, folder)
    seconds = time.monotonic() - start
    x = np.random.default_rng(2).standard_normal((1, STEPS, 8)).astype(np.float32)
    with ExecuTorchRunner(str(folder / result.model_file)) as runner:
        got = runner.infer({"x": x})["y"]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    return result.details, seconds, float(np.abs(got - want).max())


def test_a_two_layer_lstm_over_100_steps_lowers_as_loops_in_seconds_with_torch_outputs(tmp_path: Path) -> None:
    details, seconds, diff = _build(Encoder(), tmp_path, "fp32")
    assert details["rewrites"] == {"lstm_as_loop": 1}
    assert details["operators"]["portable"]["scan"] == 2  # one loop per layer, not one cell per step
    assert details["operators"]["delegated"]["aten.mm.default"] == 2  # each loop body's matmul runs on XNNPACK
    assert seconds < 60, f"lowering took {seconds:.0f} s"
    assert diff < 1e-5


@pytest.mark.slow
def test_a_bidirectional_lstm_as_loops_keeps_torch_outputs(tmp_path: Path) -> None:
    details, _, diff = _build(Encoder(layers=1, bidirectional=True), tmp_path, "fp32")
    assert details["operators"]["portable"]["scan"] == 2  # the backward direction is a reversed loop
    assert diff < 1e-5


@pytest.mark.slow
def test_int8_keeps_the_lstm_loops_float_and_quantizes_the_linear_layer(tmp_path: Path) -> None:
    details, _, diff = _build(Encoder(layers=1), tmp_path, "int8")
    assert details["quantization"]["kept_float_ops"] == {"aten.lstm.input": 1}
    assert details["rewrites"] == {"lstm_as_loop": 1}
    assert details["operators"]["delegated"]["quantized_decomposed.dequantize_per_channel.default"] == 1  # fc
    assert diff < 0.05


def test_a_gru_that_would_unroll_into_200_cells_is_refused_before_lowering(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(errors.UnsupportedError) as caught:
        _build(Encoder(gru=True), tmp_path, "fp32")
    assert time.monotonic() - start < 20
    message = str(caught.value)
    assert "\n" not in message and "aten.gru.input over 100 steps into 200 cells" in message, message
    assert "--target onnx" in (caught.value.hint or "")
    assert caught.value.exit_code == 4
    assert not (tmp_path / "model.pte").exists()


@pytest.mark.slow
def test_fp16_lstm_loops_run_on_xnnpack_and_stay_close(tmp_path: Path) -> None:
    details, _, diff = _build(Encoder(layers=1), tmp_path, "fp16")
    assert details["operators"]["delegated"]["aten.mm.default"] == 1  # the float16 loop body, not portable kernels
    assert diff < 0.01
