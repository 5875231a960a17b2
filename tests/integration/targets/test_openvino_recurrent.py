"""Recurrent models on the openvino target (issues 18 and 19): static INT8 leaves recurrent ops in float by
default, and when asked to quantize them (``--target-option recurrent=int8``) the layer ranking and the
``--max-drop`` search name the LSTM.

The model is a tiny streaming LSTM exported by torch, ``x, h, c -> Linear, ReLU -> LSTM(h, c) -> Linear``, with
its final states ``hn``, ``cn`` as outputs, and calibration data whose cell state reaches 40 now and then
where it is mostly under 1 (silero-vad's LSTM variant: 21 where it is mostly under 1). OpenVINO feeds each
state to its ``LSTMSequence`` through a ``Transpose`` it adds (auto-named, ``Transpose_c5``); nncf puts the
state's quantizer there. Before, that ``Transpose`` carried the error and was never a candidate (an op that
only moves values), the ``LSTMSequence`` was named after a consumer, and its state outputs were never compared.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _export_lstm(folder: Path) -> dict[str, Path]:
    """The tiny streaming LSTM as ONNX (torch's TorchScript exporter: one ``LSTM`` node) and 48 calibration samples."""
    from torch import nn

    class Streaming(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.lstm, self.out = nn.Linear(8, 16), nn.LSTM(16, 16, batch_first=True), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
            y, (hn, cn) = self.lstm(torch.relu(self.inp(x)), (h, c))
            return self.out(y[:, -1]), hn, cn

    torch.manual_seed(0)
    path = folder / "lstm.onnx"
    example = (torch.zeros(1, 6, 8), torch.zeros(1, 1, 16), torch.zeros(1, 1, 16))
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(Streaming().eval(), example, str(path), input_names=["x", "h", "c"],
                          output_names=["logits", "hn", "cn"], dynamo=False, opset_version=17)
    rng = np.random.default_rng(1)
    c = (rng.standard_normal((48, 1, 1, 16)) * 0.5).astype(np.float32)
    c[::8, 0, 0, 0] = 40.0
    np.savez(folder / "calib.npz", x=rng.standard_normal((48, 1, 6, 8)).astype(np.float32),
             h=(np.tanh(rng.standard_normal((48, 1, 1, 16))) * 0.5).astype(np.float32), c=c)
    return {"model": path, "calib": folder / "calib.npz", "dir": folder}


@pytest.fixture(scope="module")
def lstm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _export_lstm(tmp_path_factory.mktemp("lstm-openvino"))


def _build(lstm: dict[str, Path], name: str, **kw) -> Path:
    config = BuildConfig(source=str(lstm["model"]), target="openvino", precision="int8", calib=lstm["calib"],
                         out=lstm["dir"] / name, allow_degraded=True, **kw)
    return build(config).bundle_dir


@pytest.fixture(scope="module")
def quantized_lstm(lstm: dict[str, Path]) -> Path:
    """``recurrent=int8`` with ``--report-layers``: the LSTM's weights and states quantized."""
    return _build(lstm, "int8", report_layers=True, target_options=(("recurrent", "int8"),))


def _lstm_inputs_quantized(bundle: Path) -> list[str]:
    """Types of the ops right behind the LSTMSequence's inputs (looking through Transposes)."""
    model = ov.Core().read_model(str(bundle / "model.xml"))
    lstm = next(op for op in model.get_ordered_ops() if op.get_type_name() == "LSTMSequence")
    found = []
    for port in lstm.inputs():
        node = port.get_source_output().get_node()
        while node.get_type_name() == "Transpose":
            node = node.input_value(0).get_node()
        found.append(node.get_type_name())
    return found


def test_static_int8_keeps_the_lstm_in_float_by_default_and_says_so(lstm: dict[str, Path], quantized_lstm: Path) -> None:
    bundle = _build(lstm, "default")
    manifest = load_manifest(bundle)
    details = manifest.target_details["quantization"]
    assert details["recurrent"] == "float" and details["recurrent_float"] == ["LSTMSequence"]
    assert "FakeQuantize" not in _lstm_inputs_quantized(bundle) and "Multiply" not in _lstm_inputs_quantized(bundle)
    assert {"FakeQuantize", "Multiply"} <= set(_lstm_inputs_quantized(quantized_lstm))  # states and weights int8
    assert manifest.parity["outputs"]["hn"]["cosine"] > 0.999
    quantized = load_manifest(quantized_lstm)
    assert quantized.parity["outputs"]["hn"]["cosine"] < 0.5  # the state's 8 bits span 40: most of it rounds away
    assert quantized.target_details["quantization"]["recurrent_float"] == []


def test_layer_report_names_the_lstm_and_compares_its_state_outputs(quantized_lstm: Path) -> None:
    layers = json.loads((quantized_lstm / "layers.json").read_text())["layers"]
    cell = next(d for d in layers if d["op"] == "LSTMSequence")
    assert cell["layer"] == cell["node"]  # a layer of its own, not named after the Squeeze that reads it
    assert cell["tensor"] in (f"{cell['node']}:1", f"{cell['node']}:2")  # its worst output is a final state
    top = layers[0]
    assert top["op"] == "Transpose" and top["layer"] == cell["layer"]  # the state's quantizer sits on the Transpose
    assert top["growth"] > 0.5


def test_max_drop_keeps_the_lstm_in_float_when_asked_to_quantize_it(lstm: dict[str, Path]) -> None:
    bundle = _build(lstm, "searched", max_drop=0.005, metric="cosine", target_options=(("recurrent", "int8"),))
    record = load_manifest(bundle).model_extra["mixed_precision"]
    assert len(record["float_layers"]) == 1 and record["float_layers"][0].startswith("LSTMSequence_c")
    assert record["drop"] <= 0.005 and record["builds"] <= 3
    assert "FakeQuantize" not in _lstm_inputs_quantized(bundle)


def _export_unrolled_lstm(folder: Path) -> dict[str, Path]:
    """A two-layer LSTM as a ``.pt2`` program (``torch.export`` unrolls it: no LSTMSequence in the IR) and
    calibration inputs with a few loud samples."""
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.lstm, self.out = nn.Linear(8, 16), nn.LSTM(16, 16, num_layers=2, batch_first=True), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.lstm(torch.relu(self.inp(x)))[0][:, -1])

    torch.manual_seed(0)
    with warnings.catch_warnings():  # torch.export's note on the LSTM's flat weights
        warnings.simplefilter("ignore")
        program = torch.export.export(Encoder().eval(), (torch.zeros(1, 6, 8),))
    torch.export.save(program, str(folder / "lstm.pt2"))
    x = np.random.default_rng(1).standard_normal((48, 1, 6, 8)).astype(np.float32)
    x[::8] *= 20
    np.savez(folder / "calib.npz", x=x)
    return {"model": folder / "lstm.pt2", "calib": folder / "calib.npz", "dir": folder}


def test_a_torch_lstm_that_export_unrolled_stays_in_float_by_its_module(tmp_path: Path) -> None:
    unrolled = _export_unrolled_lstm(tmp_path)
    default = load_manifest(_build(unrolled, "default")).target_details
    quantized = load_manifest(_build(unrolled, "int8", target_options=(("recurrent", "int8"),))).target_details
    assert default["route"] == "pt2" and default["quantization"]["recurrent_float"] == ["lstm"]
    assert quantized["quantization"]["recurrent_float"] == []
    assert default["quantization"]["fake_quantize_ops"] == 2  # the two Linears' inputs; the unrolled cells none
    assert quantized["quantization"]["fake_quantize_ops"] > 10
