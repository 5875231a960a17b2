"""The onnx target's options: which ops static INT8 quantizes (``quantize_ops``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib, make_conv_onnx

pytest.importorskip("onnxruntime")


def _dequantized_readers(model_path: Path) -> set[str]:
    """Op types that read a DequantizeLinear output, i.e. run on quantized activations or weights."""
    import onnx

    model = onnx.load(str(model_path))
    dq = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {node.op_type for node in model.graph.node if node.op_type != "QuantizeLinear" and set(node.input) & dq}


def _int8(tmp_path: Path, name: str, *pairs: tuple[str, str]) -> Path:
    model, calib = make_conv_onnx(tmp_path / "m.onnx"), make_calib(tmp_path / "c.npz")
    config = BuildConfig(source=str(model), out=tmp_path / name, precision="int8", calib=calib, cache=False,
                         target_options=list(pairs))
    return build(config).bundle_dir / "model.onnx"


def test_compute_op_set_leaves_pooling_in_float_where_the_default_quantizes_it(tmp_path: Path) -> None:
    default = _dequantized_readers(_int8(tmp_path, "default"))
    compute = _dequantized_readers(_int8(tmp_path, "compute", ("quantize_ops", "compute")))
    assert "GlobalAveragePool" in default and {"Conv", "Gemm"} <= default
    assert {"Conv", "Gemm"} <= compute and "GlobalAveragePool" not in compute


def test_an_unknown_op_set_is_a_config_error_naming_the_choices(tmp_path: Path) -> None:
    model = make_conv_onnx(tmp_path / "m.onnx")
    proc = run_cli("build", str(model), "--precision", "int8", "--target-option", "quantize_ops=most",
                   "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "quantize_ops")
    assert not (tmp_path / "out").exists()
