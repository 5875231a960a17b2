"""Full-integer INT8 on the tflite target with activations XNNPACK has no int8 kernel for: ``PRelu`` (MTCNN),
paddle2onnx's hard-swish ``x * Clip(x + 3, 0, 6) / 6`` and ``HardSigmoid`` (PP-OCR, MobileNetV3). onnx2tf and
TensorFlow's converter made them ``PRELU``, ``HARD_SWISH`` and ``RELU_0_TO_1``, which LiteRT ran outside XNNPACK,
between delegated parts (MTCNN ONet int8 took 1.85x its FP32 time, PP-OCR cls 3.7x). The ``expand_activations``
pass writes them with ``Add``, ``Mul`` and ``Clip``: every op of the bundles runs in XNNPACK, and the FP32 bundle
keeps onnxruntime's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tflite target: pip install 'edgec[tflite]'")
pytest.importorskip("onnx2tf", reason="the tflite target's ONNX route: pip install 'edgec[tflite]'")

from edgec.compiler.config import BuildConfig  # noqa: E402
from edgec.compiler.pipeline import build  # noqa: E402
from edgec.core.bundle import load_manifest  # noqa: E402
from edgec.runtime_shims.litert import LiteRtRunner  # noqa: E402

SHAPE = (1, 3, 24, 24)


def not_delegated(model_path: Path) -> dict[str, int]:
    """Ops of a ``.tflite`` that LiteRT's default XNNPACK delegate leaves to LiteRT's own kernels, by op name.

    After the first run, each ``DELEGATE`` node lists the tensors its part reads and writes; the ops between them
    (walking back from what it writes to what it reads) are inside it, every other op is not."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    native = interpreter._interpreter
    nodes = [(native.NodeName(i), list(native.NodeInputs(i)), list(native.NodeOutputs(i))) for i in range(native.NumNodes())]
    ops = [n for n in nodes if n[0] != "DELEGATE"]
    producer = {t: i for i, op in enumerate(ops) for t in op[2]}
    inside: set[int] = set()
    for name, reads, writes in nodes:
        todo = list(writes) if name == "DELEGATE" else []
        while todo:
            tensor = todo.pop()
            op = producer.get(tensor)
            if tensor not in reads and op is not None and op not in inside:
                inside.add(op)
                todo.extend(ops[op][1])
    left: dict[str, int] = {}
    for i, (name, _, _) in enumerate(ops):
        if i not in inside:
            left[name] = left.get(name, 0) + 1
    return left


def tflite_ops(model_path: Path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    return {op["op_name"] for op in Interpreter(model_path=str(model_path))._get_ops_details()}


def conv_net(path: Path, activation: list[Any], inits: dict[str, np.ndarray]) -> Path:
    """Conv(3->8, 3x3, pad 1) -> ``activation`` (reads ``h``, writes ``a``) -> Conv(8->4, 3x3, pad 1) on 1x3x24x24."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.4, "w2": rng.standard_normal((4, 8, 3, 3)) * 0.3, **inits}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"), *activation,
             helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    graph = helper.make_graph(nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 24, 24])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def prelu_net(path: Path) -> Path:
    from onnx import helper

    slope = np.linspace(-0.2, 0.6, 8).reshape(1, 8, 1, 1)  # per channel, as torch exports nn.PReLU(8)
    return conv_net(path, [helper.make_node("PRelu", ["h", "slope"], ["a"], name="prelu")], {"slope": slope})


def hard_net(path: Path) -> Path:
    """paddle2onnx's hard-swish, then a squeeze-excite style gate: ``hs * HardSigmoid(hs)``."""
    from onnx import helper

    nodes = [helper.make_node("Add", ["h", "three"], ["h3"]), helper.make_node("Clip", ["h3", "zero", "six"], ["r6"]),
             helper.make_node("Mul", ["h", "r6"], ["m"]), helper.make_node("Div", ["m", "six"], ["hs"], name="hswish"),
             helper.make_node("HardSigmoid", ["hs"], ["gate"], alpha=0.2, beta=0.5, name="hsig"),
             helper.make_node("Mul", ["hs", "gate"], ["a"], name="gated")]
    return conv_net(path, nodes, {"three": np.array(3.0), "zero": np.array(0.0), "six": np.array(6.0)})


def build_both(src: Path, tmp_path: Path) -> dict[str, Path]:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((32, *SHAPE)).astype(np.float32))
    return {p: build(BuildConfig(source=str(src), target="tflite", precision=p, calib=calib, out=tmp_path / p,
                                 simplify=False)).bundle_dir for p in ("fp32", "int8")}


def check(src: Path, bundles: dict[str, Path], gone: set[str]) -> None:
    import onnxruntime as ort

    model = bundles["int8"] / "model.tflite"
    assert not tflite_ops(model) & gone
    assert not_delegated(model) == {}
    assert tflite_ops(bundles["fp32"] / "model.tflite") & gone  # float keeps the one op XNNPACK runs in float
    fp32_passes = {p["name"] for p in load_manifest(bundles["fp32"]).passes}
    assert "expand_activations" not in fp32_passes
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    for precision, tolerance in (("fp32", 1e-4), ("int8", None)):
        with LiteRtRunner(str(bundles[precision] / "model.tflite")) as runner:  # XNNPACK, as LiteRT runs it by default
            got = np.transpose(runner.infer({"x": np.transpose(x, (0, 2, 3, 1))})["y"], (0, 3, 1, 2))
        if tolerance is not None:
            np.testing.assert_allclose(got, want, atol=tolerance * float(np.abs(want).max()))
        else:
            a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
            assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99


def test_int8_per_channel_prelu_runs_entirely_in_xnnpack(tmp_path: Path) -> None:
    src = prelu_net(tmp_path / "prelu.onnx")
    bundles = build_both(src, tmp_path)
    passes = {p["name"]: p.get("stats", {}) for p in load_manifest(bundles["int8"]).passes}
    assert passes["expand_activations"]["prelu"] == 1
    check(src, bundles, {"PRELU"})


def test_int8_hard_swish_and_hard_sigmoid_run_entirely_in_xnnpack(tmp_path: Path) -> None:
    src = hard_net(tmp_path / "hard.onnx")
    bundles = build_both(src, tmp_path)
    passes = {p["name"]: p.get("stats", {}) for p in load_manifest(bundles["int8"]).passes}
    assert passes["expand_activations"]["hard_swish"] == 1 and passes["expand_activations"]["hard_sigmoid"] == 1
    check(src, bundles, {"HARD_SWISH", "RELU_0_TO_1"})
