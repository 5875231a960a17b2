"""The onnx target's default INT8 op sets: static leaves elementwise Add/Mul float, dynamic leaves Conv float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib, make_conv_onnx, save_graph

pytest.importorskip("onnxruntime")

TOKENS, WIDTH = 16, 32


def _svtr_block(path: Path) -> Path:
    """A transformer block as paddle2onnx writes PP-OCR's SVTR: LayerNorm decomposed into ReduceMean/Sub/Mul/
    Add/Sqrt/Div, softmax attention, HardSwish as ``x * clip(x + 3, 0, 6) / 6``, a residual Add."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.qkv, self.out = (torch.nn.Linear(WIDTH, n) for n in (WIDTH, 3 * WIDTH, 10))
            self.gain = torch.nn.Parameter(1 + 0.1 * torch.randn(WIDTH))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            d = h - h.mean(-1, keepdim=True)
            h = d / torch.sqrt((d * d).mean(-1, keepdim=True) + 1e-5) * self.gain
            q, k, v = self.qkv(h).chunk(3, -1)
            a = torch.softmax(q @ k.transpose(-1, -2) / WIDTH ** 0.5, -1) @ v
            return self.out(a * torch.clamp(a + 3, 0, 6) / 6 + h)

    torch.onnx.export(Block().eval(), (torch.randn(1, TOKENS, WIDTH),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    return path


def _tokens(path: Path) -> Path:
    """Calibration tokens whose magnitudes span four decades (as real text-line features do), so that one
    per-tensor range over the LayerNorm's variance rounds the quiet tokens' variance to zero."""
    rng = np.random.default_rng(1)
    scale = 10.0 ** rng.uniform(-3, 1, (32, 1, TOKENS, 1))
    np.savez(path, x=(rng.standard_normal((32, 1, TOKENS, WIDTH)) * scale).astype(np.float32))
    return path


def _config(model: Path, out: Path, calib: Path | None, ops: str | None = None, mode: str = "static") -> BuildConfig:
    pairs = [("quantize_ops", ops)] if ops else []
    return BuildConfig(source=str(model), out=out, precision="int8", calib=calib, int8_mode=mode, cache=False,
                       target_options=pairs)


def test_default_static_int8_keeps_an_svtr_block_that_onnxruntimes_own_op_list_collapses(tmp_path: Path) -> None:
    model, calib = _svtr_block(tmp_path / "svtr.onnx"), _tokens(tmp_path / "calib.npz")
    with pytest.raises(errors.AccuracyGateError, match="collapsed"):
        build(_config(model, tmp_path / "ort", calib, "onnxruntime"))
    bundle = build(_config(model, tmp_path / "default", calib)).bundle_dir
    manifest = load_manifest(bundle)
    assert manifest.parity["outputs"]["y"]["cosine"] > 0.95
    step = manifest.passes[-1]
    assert step["name"] == "quantize_static" and step["stats"]["float_op_types"] == ["Add", "Mul"]
    assert step["stats"]["ops"]["QuantizeLinear"] > 0


def _conv_only(path: Path) -> Path:
    """Conv-Relu on input ``x`` (1, 3, 8, 8): nothing dynamic INT8 quantizes by default."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
                              "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    return save_graph(graph, path)


def test_dynamic_int8_of_a_conv_only_model_is_refused_naming_static_int8(tmp_path: Path) -> None:
    model = _conv_only(tmp_path / "convs.onnx")
    proc = run_cli("build", str(model), "--precision", "int8", "--int8-mode", "dynamic", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_UNSUPPORTED, "nothing to quantize", "1 convolutions stay float",
                          "--int8-mode static --calib DATA")
    assert not (tmp_path / "out").exists()


def _ops(bundle: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}


def test_dynamic_int8_quantizes_the_gemm_leaves_the_conv_float_and_convinteger_is_opt_in(tmp_path: Path) -> None:
    model = make_conv_onnx(tmp_path / "m.onnx")
    default = build(_config(model, tmp_path / "default", None, mode="dynamic")).bundle_dir
    compute = build(_config(model, tmp_path / "compute", None, "compute", mode="dynamic")).bundle_dir
    assert {"Conv", "MatMulInteger"} <= _ops(default) and "ConvInteger" not in _ops(default)
    assert "ConvInteger" in _ops(compute)
    assert load_manifest(default).passes[-1]["options"]["op_types"] == ["MatMul", "Gemm", "Gather"]


def _one_big_conv_two_small_matmuls(path: Path) -> Path:
    """Conv (9216 weights) -> GlobalAveragePool -> Flatten -> MatMul (512) -> MatMul (32), as magika is shaped."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
             for name, shape in (("w", (64, 16, 3, 3)), ("m1", (64, 8)), ("m2", (8, 4)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("MatMul", ["f", "m1"], ["h"]),
             helper.make_node("MatMul", ["h", "m2"], ["y"])]
    graph = helper.make_graph(nodes, "convmm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return save_graph(graph, path)


def test_auto_int8_is_static_when_convolutions_hold_most_weights_though_matmuls_outnumber_them(tmp_path: Path) -> None:
    model = _one_big_conv_two_small_matmuls(tmp_path / "m.onnx")
    calib = make_calib(tmp_path / "c.npz", shape=(16, 4, 4))
    bundle = build(BuildConfig(source=str(model), out=tmp_path / "out", precision="int8", calib=calib, cache=False)).bundle_dir
    assert load_manifest(bundle).passes[-1]["name"] == "quantize_static"

