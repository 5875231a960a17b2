"""TensorRT INT8 keeps the layer that reads a root of squares float (the ``squares`` option): its Q/DQ quantizes
the magnitude symmetrically, 127 levels over a value never negative. silero-vad 16k (``encoder.0`` reads its STFT
magnitude), 16 held-out chunks: decisions 0.938 -> 1.000.

The model and data are those of the openvino and tflite test (:mod:`.test_int8_square_roots`): a loud tone sets
the magnitude's range and the output sums only the quiet bins."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.integration.targets.test_int8_square_roots import int8_build, kept_squares

pytestmark = [pytest.mark.integration]


def head_input(manifest_dir: Path) -> str:
    """The op type producing the head conv's input in the bundle's ONNX."""
    model = onnx.load(str(manifest_dir / "model.onnx"))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    head = next(n for n in model.graph.node if n.name == "head")
    return producer[head.input[0]]


def test_int8_keeps_the_conv_reading_the_magnitude_float(tmp_path: Path) -> None:
    manifest = int8_build(tmp_path, "tensorrt")
    parity = manifest["parity"]["outputs"]["y"]
    # measured: mean error 0.020 of a largest output 3.39 (0.044 with the magnitude in INT8)
    assert parity["mean_abs"] < 0.01 * parity["ref_max_abs"] and parity["centred_cosine"] > 0.998
    assert kept_squares(manifest) == ["re_sq", "im_sq", "power", "magnitude", "head"]
    assert head_input(tmp_path / "out" / "m-tensorrt-int8") == "Sqrt"  # no Q/DQ between root and head


def test_squares_int8_quantizes_the_magnitude_the_head_reads(tmp_path: Path) -> None:
    manifest = int8_build(tmp_path, "tensorrt", (("squares", "int8"),))
    parity = manifest["parity"]["outputs"]["y"]
    assert parity["mean_abs"] > 0.01 * parity["ref_max_abs"]
    assert kept_squares(manifest) == []
    assert head_input(tmp_path / "out" / "m-tensorrt-int8") == "DequantizeLinear"
