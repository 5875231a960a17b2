"""Small models built inline for the tests: the tiny CNN and its calibration set, the fragile six-conv model, a tiny .pt2, ONNX graphs for rewrites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 8
DEPTH = 6
CONSTS = {"axes": np.array([1], np.int64), "sqrt2": np.array(2 ** 0.5, np.float32), "one": np.array(1.0, np.float32),
          "half": np.array(0.5, np.float32), "inv_sqrt2": np.array(2 ** -0.5, np.float32)}


def make_conv_onnx(path: Path, batch: int | str = "batch", seed: int = 0) -> Path:
    """A tiny CNN (Conv-Relu-GlobalAveragePool-Gemm) on input ``x`` of shape (batch, 3, 8, 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    fc = numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32) * 0.3, "fc")
    fcb = numpy_helper.from_array(np.zeros(10, np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [w, b, fc, fcb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def save_graph(graph: Any, path: Path, opset: int = 17) -> Path:
    """``graph`` (an ``onnx.GraphProto``) saved at ``path`` as a model of the default domain at ``opset``, IR 8
    (what the pinned onnxruntime reads)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_calib(path: Path, count: int = 32, name: str = "x", shape: tuple[int, ...] = (3, 8, 8), seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, **{name: rng.standard_normal((count, *shape)).astype(np.float32)})
    return path


def make_fragile(path: Path, relu6: bool = False) -> Path:
    """Six convs whose conv3 reads an activation with one 300x channel. ``relu6``: every activation is a
    ``Clip`` reading the same two constants, as PyTorch exports ReLU6 (``min_val_cast``, ``max_val_cast``);
    the cap is high so that the outlier channel conv3 reads survives."""
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    if relu6:
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "min_val_cast"),
                  numpy_helper.from_array(np.array(1e4, np.float32), "max_val_cast")]
    for i in range(1, DEPTH + 1):
        w = (rng.standard_normal((CHANNELS, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        if i == 2:
            w[0] *= 300.0
        if i == 3:
            w[:, 0] /= 300.0
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"conv{i}.bias")]
        nodes += [helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Clip", [f"c{i}", "min_val_cast", "max_val_cast"], [f"r{i}"], name=f"clip{i}") if relu6
                  else helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", CHANNELS
    fc = (rng.standard_normal((CHANNELS * 64, 10)) / 8).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc.weight"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")]
    nodes += [helper.make_node("Flatten", [prev], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def fragile_assets(folder: Path) -> dict[str, Path]:
    """The fragile model, 64 calibration samples and the folder they are in (shared by the targets' fidelity tests)."""
    calib = folder / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32))
    return {"model": make_fragile(folder / "fragile.onnx"), "calib": calib, "dir": folder}


def make_tiny_pt2(path: Path) -> Path:
    """Conv(3->16, 3x3) - ReLU - global average pool - Linear(16->10) on x of shape (batch, 3, 8, 8)."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Tiny().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.zeros(2, 3, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path


TORCH_GELU = [helper.make_node("Div", ["x", "sqrt2"], ["s"], name="div"),  # as torch.onnx.export writes it
              helper.make_node("Erf", ["s"], ["e"], name="erf"),
              helper.make_node("Add", ["e", "one"], ["a"], name="add"),
              helper.make_node("Mul", ["a", "half"], ["h"], name="mul_half"),
              helper.make_node("Mul", ["x", "h"], ["g"], name="mul_x")]


def make_onnx(path: Path, nodes: list[Any], outputs: tuple[str, ...] = ("y",), opset: int = 18,
              dtype: int = TensorProto.FLOAT, out_shape: tuple[int, ...] = (2, 6)) -> Path:
    """A graph on input ``x`` (2, 6) over :data:`CONSTS` (unused ones are dropped)."""
    used = {name for n in nodes for name in n.input} - {name for n in nodes for name in n.output}
    graph = helper.make_graph(nodes, "rewrites", [helper.make_tensor_value_info("x", dtype, [2, 6])],
                              [helper.make_tensor_value_info(o, dtype, list(out_shape)) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in CONSTS.items() if k in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def stft_magnitude_nodes(stride: int = 1) -> list[Any]:
    """``Conv(sqrt(re^2 + im^2))`` of an STFT as a convolution (silero-vad's front end): ``x`` -> ``basis`` conv
    (``stride``) -> ``re``/``im`` slices (``s0``:``s1``, ``s1``:``s2`` on axis ``ax``) -> squares (``Pow`` by
    ``two``) -> ``Add`` -> ``Sqrt`` -> ``head`` conv -> ``y``; the caller gives the constants."""
    return [helper.make_node("Conv", ["x", "basis"], ["spec"], strides=[stride], name="stft"),
            helper.make_node("Slice", ["spec", "s0", "s1", "ax"], ["re"], name="re"),
            helper.make_node("Slice", ["spec", "s1", "s2", "ax"], ["im"], name="im"),
            helper.make_node("Pow", ["re", "two"], ["re2"], name="re_sq"),
            helper.make_node("Pow", ["im", "two"], ["im2"], name="im_sq"),
            helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
            helper.make_node("Sqrt", ["power"], ["mag"], name="magnitude"),
            helper.make_node("Conv", ["mag", "head"], ["y"], name="head")]


def save_square_graph(path: Path, nodes: list[Any], consts: dict[str, Any], shape: tuple[int, ...] = (1, 4, 16)) -> Path:
    """The square-root chain tests' graph: ``nodes`` reading ``x`` (float, ``shape``) and writing ``y`` (no shape),
    over ``consts``, saved at opset 13."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return save_graph(graph, path, opset=13)


def small_magnitude() -> tuple[list[Any], dict[str, np.ndarray]]:
    """:func:`stft_magnitude_nodes` over ``x`` (1, 4, 16) with a ones basis of 4 bins and a ones head."""
    consts = {"basis": np.ones((8, 4, 3), np.float32), "head": np.ones((2, 4, 1), np.float32),
              "two": np.array([2.0], np.float32), "s0": np.array([0]), "s1": np.array([4]), "s2": np.array([8]),
              "ax": np.array([1])}
    return stft_magnitude_nodes(), consts


def root_then_square() -> tuple[list[Any], dict[str, np.ndarray]]:
    """``Conv(Pow(Sqrt(Relu(x)), 2))``: a root with no square below it and a square with no root above it."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Sqrt", ["r"], ["s"], name="root"),
             helper.make_node("Pow", ["s", "two"], ["p"], name="square"),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv")]
    return nodes, {"two": np.array([2.0], np.float32), "w": np.ones((2, 4, 1), np.float32)}


def make_detector_head(path: Path, silu_trunk: bool = False) -> Path:
    """A YOLO-style head on ``x`` (1, 3, 8, 8): one output ``y`` (1, 6, 64) that concatenates 4 box rows in 0-320
    (``320 * sigmoid``) with 2 class-probability rows in 0-1 (``sigmoid``). With ``silu_trunk``, a conv and a SiLU
    (``x * sigmoid(x)``) come first, as in YOLOv5/v8, and the class logits sit near -5 (low probabilities)."""
    rng = np.random.default_rng(0)
    if silu_trunk:
        trunk = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")]
        weights = [numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "wb"),
                   numpy_helper.from_array((0.2 * rng.standard_normal((2, 8, 1, 1))).astype(np.float32), "wc"),
                   numpy_helper.from_array(np.full(2, -5.0, np.float32), "bc")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="stem"),
                 helper.make_node("Sigmoid", ["c"], ["g"], name="stem_gate"),
                 helper.make_node("Mul", ["c", "g"], ["f"], name="stem_silu")]
        features, pads, class_inputs = "f", {}, ["f", "wc", "bc"]
    else:
        trunk, nodes, features, pads, class_inputs = [], [], "x", {"pads": [1, 1, 1, 1]}, ["x", "wc"]
        weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "wb"),
                   numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "wc")]
    inits = [*trunk, *weights, numpy_helper.from_array(np.array([1, 4, 64], np.int64), "box_rows"),
             numpy_helper.from_array(np.array([1, 2, 64], np.int64), "class_rows"),
             numpy_helper.from_array(np.array(320.0, np.float32), "size")]
    nodes += [helper.make_node("Conv", [features, "wb"], ["cb"], name="box_conv", **pads),
              helper.make_node("Reshape", ["cb", "box_rows"], ["b"], name="box_flatten"),
              helper.make_node("Sigmoid", ["b"], ["bs"], name="box_sigmoid"),
              helper.make_node("Mul", ["bs", "size"], ["boxes"], name="box_scale"),
              helper.make_node("Conv", class_inputs, ["cc"], name="class_conv", **pads),
              helper.make_node("Reshape", ["cc", "class_rows"], ["s"], name="class_flatten"),
              helper.make_node("Sigmoid", ["s"], ["scores"], name="class_sigmoid"),
              helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1, name="join")]
    graph = helper.make_graph(nodes, "silu_head" if silu_trunk else "head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path
