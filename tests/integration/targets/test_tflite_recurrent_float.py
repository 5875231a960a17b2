"""Full-integer INT8 on the tflite target keeps an unrolled LSTM and its state path float (the ``recurrent`` option,
``float`` by default; ``int8`` quantizes them), on a streaming LSTM made to need it: its state is one input
``state`` ``[2, 1, H]`` (``h`` then ``c``, as silero-vad carries it) sliced into the LSTM's initial states, and one
output ``stateN`` that joins the last ``h`` and ``c``; the forget gate is biased open so that ``c`` runs to ~20 while
``h`` stays in -1..1. Quantized, the state and every step's gates take one scale each and the error is fed back
at every call. Both builds fail on the code before the option (``recurrent`` was an unknown option key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")
ort = pytest.importorskip("onnxruntime")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402
from tests.support.recurrent import make_recurrent_onnx  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HIDDEN, FEATURES, STEPS, SAMPLES = 16, 8, 6, 32


def make_streaming_lstm(path: Path) -> Path:
    """``x`` ``[STEPS, 1, FEATURES]`` and ``state`` ``[2, 1, HIDDEN]`` in; ``y`` (every step's ``h``) and ``stateN``
    out. The LSTM node is ``/rec/LSTM`` (the ``unroll_rnn`` pass names what it writes after it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    make_recurrent_onnx(path, "LSTM", hidden=HIDDEN, features=FEATURES, steps=STEPS, batch=1)
    model = onnx.load(str(path))
    graph = model.graph
    bias = next(i for i in graph.initializer if i.name == "B")
    values = numpy_helper.to_array(bias).copy()
    values[0, 2 * HIDDEN:3 * HIDDEN] += 3.0  # gates i, o, f, c: the forget gate near 1, so c carries over
    bias.CopyFrom(numpy_helper.from_array(values, "B"))
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), n)
                             for n, v in (("zero", [0]), ("one", [1]), ("two", [2])))
    nodes = [helper.make_node("Slice", ["state", "zero", "one", "zero"], ["h0"], name="/state_h"),
             helper.make_node("Slice", ["state", "one", "two", "zero"], ["c0"], name="/state_c"),
             *graph.node, helper.make_node("Concat", ["y_h", "y_c"], ["stateN"], axis=0, name="/state_join")]
    x, y = graph.input[0], graph.output[0]
    del graph.node[:], graph.input[:], graph.output[:]
    graph.node.extend(nodes)
    graph.input.extend([x, helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, HIDDEN])])
    graph.output.extend([y, helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, HIDDEN])])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def states(rng: np.random.Generator, count: int) -> np.ndarray:
    """``[count, 2, 1, HIDDEN]``: h in -1..1, c ~ N(0, 6) (what the stream reaches)."""
    h = np.tanh(rng.standard_normal((count, 1, 1, HIDDEN)))
    return np.concatenate([h, rng.standard_normal((count, 1, 1, HIDDEN)) * 6.0], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The source and its full-integer INT8 bundles: the default and ``--target-option recurrent=int8``."""
    tmp = tmp_path_factory.mktemp("tflite_recurrent_float")
    src = make_streaming_lstm(tmp / "lstm.onnx")
    rng = np.random.default_rng(0)
    calib = tmp / "calib.npz"
    np.savez(calib, x=rng.standard_normal((SAMPLES, STEPS, 1, FEATURES)).astype(np.float32), state=states(rng, SAMPLES))
    built = {}
    for label, options in (("default", ()), ("int8", (("recurrent", "int8"),))):
        built[label] = build(BuildConfig(source=str(src), target="tflite", precision="int8", int8_mode="static",
                                         calib=calib, out=tmp / label, simplify=False,
                                         target_options=options)).bundle_dir
    return {"src": src, **built}


def int8_tensors(bundle: Path) -> list[str]:
    """Names of the model's int8 tensors (every op of this model is the LSTM's or its state path's)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(bundle / "model.tflite")).get_tensor_details()
    return [d["name"] for d in details if np.dtype(d["dtype"]) == np.int8]


def stream_error(bundle: Path, src: Path, calls: int = 8) -> float:
    """Largest error of ``stateN`` against onnxruntime over ``calls`` chunks, each bundle feeding back its own
    state (a device runs it so)."""
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    want = got = states(rng, 1)[0]
    worst = 0.0
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        for _ in range(calls):
            x = rng.standard_normal((STEPS, 1, FEATURES)).astype(np.float32)
            want = session.run(["stateN"], {"x": x, "state": want})[0]
            got = runner.infer({"x": x, "state": got})["stateN"]
            worst = max(worst, float(np.abs(got - want).max()))
    return worst


def test_int8_keeps_the_unrolled_lstm_and_its_state_path_float_by_default(bundles: dict[str, Any]) -> None:
    m = load_manifest(bundles["default"])
    details = m.target_details
    assert details["quantization"] == "full-integer int8" and details["recurrent"] == "float"
    assert details["recurrent_float"] == ["/rec/LSTM"] and details["recurrent_float_ops"] >= 6 * STEPS
    assert int8_tensors(bundles["default"]) == []
    for name in ("y", "stateN"):  # float all through: only rounding differs
        assert m.parity["outputs"][name]["min_part_cosine" if name == "stateN" else "cosine"] > 0.99999
        assert m.parity["outputs"][name]["max_abs"] < 1e-3


def test_recurrent_int8_quantizes_the_lstm_and_is_measurably_worse(bundles: dict[str, Any]) -> None:
    default, quantized = load_manifest(bundles["default"]), load_manifest(bundles["int8"])
    assert quantized.target_details["recurrent"] == "int8" and "recurrent_float" not in quantized.target_details
    assert len([n for n in int8_tensors(bundles["int8"]) if "rec_LSTM_t" in n]) >= 6 * STEPS  # every step's ops
    for name in ("y", "stateN"):
        assert quantized.parity["outputs"][name]["mean_abs"] > 20 * default.parity["outputs"][name]["mean_abs"]
    float_error, int8_error = stream_error(bundles["default"], bundles["src"]), stream_error(bundles["int8"], bundles["src"])
    assert float_error < 1e-3 < 0.05 < int8_error
