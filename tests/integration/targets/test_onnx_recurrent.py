"""LSTMs in the onnx target's INT8 (issue 18): onnxruntime's static quantizer has no LSTM, so they stayed float and
a mostly-recurrent model's INT8 bundle was nearly its FP32 size. Now each LSTM becomes onnxruntime's
``DynamicQuantizeLSTM`` (int8 weights) where the calibration set shows it keeps the outputs, ``recurrent=float``
keeps them float, and TensorRT's QDQ ONNX never gets the contrib op."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.passes.base import PassContext
from edgec.compiler.passes.quantize_static import QuantizeStatic
from edgec.compiler.pipeline import build
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.frameworks import onnx_utils
from edgec.targets.base import PrecisionRequest
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.recurrent import make_recurrent_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HIDDEN, FEATURES, STEPS = 48, 16, 8


@pytest.fixture(scope="module")
def lstm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A streaming LSTM (``x, h0, c0 -> y, y_h, y_c``) large enough that its weights dominate the file, and 24
    calibration samples."""
    folder = tmp_path_factory.mktemp("lstm-onnx")
    model = make_recurrent_onnx(folder / "lstm.onnx", hidden=HIDDEN, features=FEATURES, steps=STEPS, batch=1)
    rng = np.random.default_rng(3)
    np.savez(folder / "calib.npz", x=rng.standard_normal((24, STEPS, 1, FEATURES)).astype(np.float32),
             h0=(np.tanh(rng.standard_normal((24, 1, 1, HIDDEN))) * 0.5).astype(np.float32),
             c0=(rng.standard_normal((24, 1, 1, HIDDEN)) * 0.5).astype(np.float32))
    return {"model": model, "calib": folder / "calib.npz", "dir": folder}


def _build(lstm: dict[str, Path], name: str, mode: str = "static", calib: bool = True, **options: str) -> Path:
    config = BuildConfig(source=str(lstm["model"]), target="onnx", precision="int8", int8_mode=mode, cache=False,
                         calib=lstm["calib"] if calib else None, out=lstm["dir"] / name,
                         target_options=tuple(options.items()))
    return build(config).bundle_dir


def _int8_pass(bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return next(p for p in manifest["passes"] if p["name"].startswith("quantize_"))


def _ops(bundle: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node]


def _outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_static_int8_runs_the_lstm_as_dynamic_quantize_lstm_smaller_and_close(lstm: dict[str, Path]) -> None:
    quantized, kept = _build(lstm, "auto"), _build(lstm, "float", recurrent="float")
    assert "DynamicQuantizeLSTM" in _ops(quantized) and "LSTM" not in _ops(quantized)
    graph = onnx.load(str(quantized / "model.onnx")).graph
    assert [n.name for n in graph.node if n.op_type == "DynamicQuantizeLSTM"] == ["/rec/LSTM"]  # its name kept
    assert "LSTM" in _ops(kept) and "DynamicQuantizeLSTM" not in _ops(kept)  # the opt-out
    assert (quantized / "model.onnx").stat().st_size < 0.5 * (kept / "model.onnx").stat().st_size
    record = _int8_pass(quantized)
    assert record["options"]["recurrent"] == "dynamic" and record["stats"]["recurrent"] == {"dynamic": ["/rec/LSTM"]}
    assert "recurrent" not in _int8_pass(kept)["stats"]
    rng = np.random.default_rng(9)
    feed = {"x": rng.standard_normal((STEPS, 1, FEATURES)).astype(np.float32),
            "h0": np.zeros((1, 1, HIDDEN), np.float32), "c0": np.zeros((1, 1, HIDDEN), np.float32)}
    for ref, got in zip(_outputs(lstm["model"], feed), _outputs(quantized / "model.onnx", feed)):
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_dynamic_int8_quantizes_a_checked_lstm_and_without_data_says_why_it_stays_float(lstm: dict[str, Path]) -> None:
    assert "DynamicQuantizeLSTM" in _ops(_build(lstm, "dynamic", mode="dynamic"))
    out = lstm["dir"] / "nodata"
    proc = run_cli("build", str(lstm["model"]), "--target", "onnx", "--precision", "int8", "--int8-mode", "dynamic",
                   "--out", str(out), "--no-cache")
    assert_one_line_error(proc, 4, "nothing to quantize", "1 LSTM", "recurrent=int8")
    unchecked = _build(lstm, "unchecked", mode="dynamic", calib=False, recurrent="int8")
    assert _int8_pass(unchecked)["stats"]["recurrent"] == {"dynamic": ["/rec/LSTM"]}


def test_an_lstm_whose_quantization_alone_breaks_the_outputs_stays_float(lstm: dict[str, Path], tmp_path: Path) -> None:
    """A bound no int8 LSTM meets keeps it float, with the cosine measured; ``None`` quantizes unchecked."""
    from edgec.calibration.dataset import CalibrationSet

    data = np.load(lstm["calib"])
    calibration = CalibrationSet({k: data[k] for k in data.files}, "inline", "minmax", "0" * 64)
    artifact = onnx_utils.artifact_from_file(lstm["model"])
    for bound, work in ((0.99999999, "strict"), (None, "unchecked")):
        (tmp_path / work).mkdir()
        result = QuantizeStatic(recurrent="dynamic", recurrent_min_cosine=bound).run(
            artifact, PassContext(tmp_path / work, calibration))
        ops = result.stats["ops"]
        if bound is None:
            assert result.stats["recurrent"] == {"dynamic": ["/rec/LSTM"]} and "LSTM" not in ops
        else:
            reason = result.stats["recurrent"]["float"]["/rec/LSTM"]
            assert result.stats["recurrent"]["dynamic"] == [] and ops.get("LSTM") == 1
            assert reason.startswith("alone, output cosine 0.99") and float(reason.split()[3]) < bound


def test_tensorrt_qdq_onnx_never_asks_for_the_contrib_lstm(lstm: dict[str, Path]) -> None:
    """TensorRT shares the static pass; its options leave LSTMs float (no com.microsoft op in its ONNX)."""
    from edgec.calibration.dataset import CalibrationSet
    from edgec.targets.tensorrt import TensorRTTarget

    calibration = CalibrationSet({"x": np.zeros((1, STEPS, 1, FEATURES), np.float32)}, "inline", "minmax", "0" * 64)
    target = TensorRTTarget()
    request = PrecisionRequest("int8", calibration=calibration)
    artifact = ModelArtifact(lstm["model"], FORMAT_ONNX, (), (), "0" * 64)
    steps = target.precision_passes(request, artifact)
    assert steps and all(options.get("recurrent", "float") == "float" for _, options in steps)
