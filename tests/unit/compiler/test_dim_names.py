"""Symbolic dims of PyTorch sources are named after what they are (``batch``, ``seq``, the user's
``Dim`` name), never torch.export's shape symbols (``s77``): in the manifest, ``edgec inspect``, the
ONNX and OpenVINO bundles, and serving's errors.

The checks that build nothing; the builds are in tests/integration/compiler/test_dim_names.py."""

from __future__ import annotations

import pytest

from edgec.compiler.importers.torch import dim_hints, name_dims
from edgec.core.types import TensorSpec


def _spec(name: str, shape: tuple[int | str, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, shape, dtype)


def test_a_symbol_shared_by_input_and_output_gets_one_name() -> None:
    inputs, outputs = name_dims((_spec("x", ("s77", 1, 8, 8)),), (_spec("logits", ("s77", 10)),), {})
    assert inputs[0].shape == ("batch", 1, 8, 8) and outputs[0].shape == ("batch", 10)


def test_token_dims_of_integer_inputs_are_seq_and_other_dims_are_numbered() -> None:
    inputs, outputs = name_dims(
        (_spec("ids", ("s0", "s1"), "int64"), _spec("mask", ("s0", "s1"), "int64"), _spec("image", ("s0", 3, "s2", "s3"))),
        (_spec("out", ("s0", "s1 + 1", "u0")),), {})
    assert [s.shape for s in inputs] == [("batch", "seq"), ("batch", "seq"), ("batch", 3, "dim1", "dim2")]
    assert outputs[0].shape == ("batch", "seq + 1", "dim3")


def test_the_users_dim_names_win_and_every_name_is_used_once() -> None:
    hints = {("ids", 1): "tokens", ("b", 0): "batch"}
    inputs, _ = name_dims((_spec("ids", ("s0", "s1"), "int64"), _spec("b", ("s2", "s3"), "int64")), (), hints)
    assert [s.shape for s in inputs] == [("batch_2", "tokens"), ("batch", "seq")]


def test_dim_hints_read_named_dims_by_argument_name_or_position_and_skip_unnamed_ones() -> None:
    torch = pytest.importorskip("torch")
    Dim = torch.export.Dim
    batch, seq = Dim("batch"), Dim("seq")
    assert dim_hints({"ids": {0: batch, 1: seq}, "mask": None}, ["ids", "mask"]) == {("ids", 0): "batch", ("ids", 1): "seq"}
    assert dim_hints(({0: batch}, (None, seq)), ["a", "b"]) == {("a", 0): "batch", ("b", 1): "seq"}
    assert dim_hints({"x": {0: Dim.AUTO, 1: 2 * batch}}, ["x"]) == {}
    assert dim_hints(None, ["x"]) == {}
