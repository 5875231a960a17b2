"""Third-party graph shapes on the tflite target's ONNX route (onnx2tf 1.28), each on a small model made to have it:

- an ``LSTM`` whose initial state is a model input (a streaming model; onnx2tf alone fails with "An
  ``initial_state`` was passed that is not compatible"), exported at opsets 13 and 17, and a ``GRU`` whose state is
  a constant: the ``unroll_rnn`` pass makes both plain ops, the 3-D inputs keep their source layout, and the
  bundles (fp32, int8) run in LiteRT like onnxruntime runs the source, one chunk after another with the state fed back;
- a grouped convolution, which onnx2tf makes a Keras ``Conv2D`` whose kernel the SavedModel export found
  untracked ("Tried to export a function which references an 'untracked' resource");
- what stays unsupported or needs sizes: one line on stderr, the family's exit code, no traceback, no bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402
from tests.support.cli import assert_one_line_error, cli, run_cli  # noqa: E402
from tests.support.recurrent import make_recurrent_onnx  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, FEATURES, HIDDEN = 10, 8, 16


class StreamingLstm(torch.nn.Module):
    """A chunk of audio features and the state in, per-step scores and the next state out."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, 4)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h, c) = self.rnn(x, (h0, c0))
        return self.head(y), h, c


class ConstantStateGru(torch.nn.Module):
    """A GRU whose initial state is a learned constant (a parameter, not an input)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.h0 = torch.nn.Parameter(torch.randn(1, 1, HIDDEN) * 0.5)
        self.head = torch.nn.Linear(HIDDEN, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x, self.h0)[0])


class GroupedConvNet(torch.nn.Module):
    """A grouped (not depthwise) convolution: onnx2tf makes it a Keras Conv2D layer with a kernel variable."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.grouped(torch.relu(self.stem(x)))).mean((2, 3)))


def export(model: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str], path: Path,
           opset: int, dynamic: dict[str, dict[int, str]] | None = None) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(model.eval(), args, str(path), opset_version=opset, dynamo=False, input_names=names,
                      output_names=outputs, dynamic_axes=dynamic)
    return path


def streaming_lstm(path: Path, opset: int, dynamic: dict[str, dict[int, str]] | None = None) -> Path:
    torch.manual_seed(0)
    args = (torch.randn(1, STEPS, FEATURES), torch.randn(1, 1, HIDDEN), torch.randn(1, 1, HIDDEN))
    return export(StreamingLstm(), args, ["x", "h0", "c0"], ["y", "hn", "cn"], path, opset, dynamic)


def lstm_calib(path: Path, count: int = 48, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    waves = np.sin(np.linspace(0, 6, STEPS)[None, :, None] * rng.uniform(0.5, 3, (count, 1, FEATURES)))
    x = (waves + 0.1 * rng.standard_normal(waves.shape)).astype(np.float32)[:, None]
    h0 = np.tanh(rng.standard_normal((count, 1, 1, HIDDEN))).astype(np.float32) * 0.5
    c0 = rng.standard_normal((count, 1, 1, HIDDEN)).astype(np.float32) * 0.5
    np.savez(path, x=x, h0=h0, c0=c0)
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def stream(bundle: Path, source: Path, chunks: int = 3, seed: int = 7) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """LiteRT and onnxruntime outputs chunk after chunk, each fed its own previous state, from held-out chunks."""
    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 1, HIDDEN), np.float32)
    want_state = got_state = (zeros, zeros)
    pairs = []
    with LiteRtRunner(str(bundle / load_manifest(bundle).model_file), threads=2) as runner:
        for _ in range(chunks):
            x = np.sin(np.cumsum(rng.uniform(0.1, 0.6, (1, STEPS, FEATURES)), axis=1)).astype(np.float32)
            want = dict(zip(["y", "hn", "cn"], session.run(None, {"x": x, "h0": want_state[0], "c0": want_state[1]}),
                            strict=True))
            got = runner.infer({"x": x, "h0": got_state[0], "c0": got_state[1]})
            pairs.append((got, want))
            want_state, got_state = (want["hn"], want["cn"]), (got["hn"], got["cn"])
    return pairs


@pytest.fixture(scope="module", params=[13, 17], ids=["opset13", "opset17"])
def lstm_bundles(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp(f"lstm{request.param}")
    source = streaming_lstm(folder / "lstm.onnx", request.param)
    calib = lstm_calib(folder / "calib.npz")
    bundles = {p: build(BuildConfig(source=str(source), target="tflite", precision=p, calib=calib, int8_mode="static",
                                    out=folder / "out")).bundle_dir for p in ("fp32", "int8")}
    return {"source": source, **bundles}


def test_lstm_with_state_inputs_is_unrolled_and_keeps_its_io_as_the_source_has_it(lstm_bundles: dict[str, Path]) -> None:
    for precision in ("fp32", "int8"):
        m = load_manifest(lstm_bundles[precision])
        unrolled = next(p for p in m.passes if p["name"] == "unroll_rnn")
        assert unrolled["stats"] == {"unrolled": {"LSTM": 1}, "not_unrolled": {}}
        assert "WHILE" not in m.target_details["ops"] and m.target_details["ops"]["LOGISTIC"] == 3 * STEPS
        shapes = {s["name"]: (s["shape"], s["layout"]) for s in [*m.inputs, *m.outputs]}
        assert shapes["x"] == ([1, STEPS, FEATURES], "as_source")  # a sequence is not an image row
        assert shapes["h0"] == shapes["hn"] == shapes["c0"] == shapes["cn"] == ([1, 1, HIDDEN], "as_source")
    assert load_manifest(lstm_bundles["int8"]).target_details["quantization"] == "full-integer int8"


def test_lstm_bundles_stream_like_onnxruntime_with_the_state_fed_back(lstm_bundles: dict[str, Path]) -> None:
    for got, want in stream(lstm_bundles["fp32"], lstm_bundles["source"]):
        for name in ("y", "hn", "cn"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    int8 = [min(cosine(got[n], want[n]) for n in ("y", "hn", "cn"))
            for got, want in stream(lstm_bundles["int8"], lstm_bundles["source"])]
    print(f"tflite full-integer int8 LSTM, worst cosine per chunk vs onnxruntime: {[round(c, 5) for c in int8]}")
    assert min(int8) > 0.995


def test_gru_with_a_constant_state_builds_fp32_and_dynamic_range_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export(ConstantStateGru(), (torch.randn(1, STEPS, FEATURES),), ["x"], ["y"], tmp_path / "gru.onnx", 13)
    x = np.random.default_rng(3).standard_normal((1, STEPS, FEATURES)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for precision, check in (("fp32", 1e-5), ("int8", 0.999)):
        bundle = build(BuildConfig(source=str(source), target="tflite", precision=precision, out=tmp_path / "out")).bundle_dir
        m = load_manifest(bundle)
        assert next(p for p in m.passes if p["name"] == "unroll_rnn")["stats"]["unrolled"] == {"GRU": 1}
        with LiteRtRunner(str(bundle / m.model_file), threads=2) as runner:
            got = runner.infer({"x": x})["y"]
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=check)
        else:
            assert m.target_details["quantization"] == "dynamic-range int8 weights" and cosine(got, want) > check


def test_grouped_convolution_builds_fp32_and_int8_without_an_untracked_resource(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export(GroupedConvNet(), (torch.randn(1, 3, 16, 16),), ["x"], ["y"], tmp_path / "gconv.onnx", 17)
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "calib.npz", x=rng.random((32, 1, 3, 16, 16), dtype=np.float32))
    x = rng.random((1, 3, 16, 16), dtype=np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for precision in ("fp32", "int8"):
        bundle = build(BuildConfig(source=str(source), target="tflite", precision=precision, calib=tmp_path / "calib.npz",
                                   out=tmp_path / "out")).bundle_dir
        m = load_manifest(bundle)
        assert m.target_details["ops"]["CONV_2D"] == 2  # the grouped convolution stays one builtin op
        with LiteRtRunner(str(bundle / m.model_file), threads=2) as runner:
            got = runner.infer({"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})["y"]
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        else:
            assert m.target_details["quantization"] == "full-integer int8" and cosine(got, want) > 0.99


def test_lstm_with_per_item_sequence_lengths_fails_in_one_line_naming_the_op_and_what_to_try(tmp_path: Path) -> None:
    source = make_recurrent_onnx(tmp_path / "ragged.onnx", "LSTM", batch=2, sequence_lens=[4, 2])
    proc = run_cli("build", str(source), "--target", "tflite", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 5, "onnx2tf converted output 'y' wrongly", "sequence_lens of LSTM '/rec/LSTM'",
                          "pad the sequences", "onnx target")
    assert not list((tmp_path / "out").glob("*/manifest.json"))


def test_lstm_left_as_a_while_loop_converts_in_float_and_refuses_full_integer_int8_in_one_line(tmp_path: Path) -> None:
    source = make_recurrent_onnx(tmp_path / "clipped.onnx", "LSTM", batch=1, clip=1.0)  # clip: rule 5 of unroll_rnn
    bundle = build(BuildConfig(source=str(source), target="tflite", precision="fp32", out=tmp_path / "out")).bundle_dir
    m = load_manifest(bundle)
    assert next(p for p in m.passes if p["name"] == "unroll_rnn")["stats"]["unrolled"] == {}
    assert "WHILE" in m.target_details["ops"] and {s["layout"] for s in m.inputs} == {"as_source"}
    feed = {s["name"]: np.random.default_rng(2).standard_normal(s["shape"]).astype(np.float32) for s in m.inputs}
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feed)
    with LiteRtRunner(str(bundle / m.model_file), threads=2) as runner:
        got = runner.infer(feed)
    for name, value in zip(("y", "y_h", "y_c"), want, strict=True):
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{s["name"]: np.random.default_rng(3).standard_normal((16, *s["shape"])).astype(np.float32)
                       for s in m.inputs})
    proc = run_cli("build", str(source), "--target", "tflite", "--precision", "int8", "--int8-mode", "static",
                   "--calib", str(calib), "--out", str(tmp_path / "int8"))
    assert_one_line_error(proc, 4, "full-integer INT8 of LSTM '/rec/LSTM'", "WHILE loop", "--int8-mode dynamic")
    assert not (tmp_path / "int8").exists() or not any((tmp_path / "int8").iterdir())


def test_dynamic_sequence_length_asks_for_input_then_builds(tmp_path: Path) -> None:
    source = streaming_lstm(tmp_path / "lstm.onnx", 17, dynamic={"x": {1: "seq"}, "y": {1: "seq"}})
    proc = run_cli("build", str(source), "--target", "tflite", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, "tflite target needs fixed input sizes", "'x'", "--input x:1xNx8")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # the build itself in-process: the refusal above is the real CLI run; a second one would only load TensorFlow again
    code, _, err = cli("build", str(source), "--target", "tflite", "--input", "x:1x6x8", "--out", str(tmp_path / "out"))
    assert code == 0, err
    m = load_manifest(tmp_path / "out" / "lstm-tflite-fp32")
    assert [s["shape"] for s in m.inputs] == [[1, 6, 8], [1, 1, HIDDEN], [1, 1, HIDDEN]]
    assert next(p for p in m.passes if p["name"] == "unroll_rnn")["stats"]["unrolled"] == {"LSTM": 1}


def test_dynamic_height_and_width_ask_for_input_in_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export(GroupedConvNet(), (torch.randn(1, 3, 16, 16),), ["x"], ["y"], tmp_path / "cnn.onnx", 17,
                    dynamic={"x": {2: "height", 3: "width"}})
    proc = run_cli("build", str(source), "--target", "tflite", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, "tflite target needs fixed input sizes", "'x'", "--input x:1x3xNxN")
