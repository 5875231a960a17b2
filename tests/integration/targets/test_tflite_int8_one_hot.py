"""Full-integer INT8 on the tflite target keeps a one-hot byte embedding's ``ONE_HOT`` float and says so.

magika (a JAX model through tf2onnx) embeds its int32 byte input as ``Cast(Equal(ids, range))`` followed by a
``MatMul``, which TensorFlow turns into a ``ONE_HOT``. TensorFlow 2.21's quantizer gives the ``ONE_HOT``'s
``off_value`` a scale of its own where the kernel copies it into an output of another zero point: every 'off'
reads 0.5. The model here, on the code before: collapsed (cosine 0.887 to FP32, exit 7); now 0.9999, with the
op in ``target_details.kept_float_constant_outputs``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.models import save_graph

IDS, VOCAB, WIDTH = 64, 16, 32
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not importlib.util.find_spec("onnx2tf"), reason="pip install 'edgec[tflite]'")]


def make_byte_embedding(folder: Path) -> tuple[Path, Path]:
    """``MatMul(mean(Relu(one_hot(ids) @ W)))`` with the one-hot written as tf2onnx writes it, and its calibration."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Unsqueeze", ["ids", "axis"], ["ids3"], name="expand"),
             helper.make_node("Equal", ["ids3", "vocab"], ["hit"], name="onehot/equal"),
             helper.make_node("Cast", ["hit"], ["onehot"], to=TensorProto.FLOAT, name="onehot/cast"),
             helper.make_node("MatMul", ["onehot", "w"], ["emb"], name="embed"),
             helper.make_node("Relu", ["emb"], ["act"], name="act"),
             helper.make_node("ReduceMean", ["act"], ["pooled"], axes=[1], keepdims=0, name="pool"),
             helper.make_node("MatMul", ["pooled", "head_w"], ["y"], name="head")]
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axis"),
             numpy_helper.from_array(np.arange(VOCAB, dtype=np.int32), "vocab"),
             numpy_helper.from_array(rng.normal(size=(VOCAB, WIDTH)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(WIDTH, 8)).astype(np.float32), "head_w")]
    graph = helper.make_graph(nodes, "byte_embedding", [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, IDS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    model = save_graph(graph, folder / "embedding.onnx", opset=17)
    np.savez(folder / "calib.npz", ids=rng.integers(0, VOCAB, size=(48, 1, IDS)).astype(np.int32))
    return model, folder / "calib.npz"


def test_full_integer_int8_keeps_one_hot_float_and_lists_it(tmp_path: Path) -> None:
    model, calib = make_byte_embedding(tmp_path)
    result = build(BuildConfig(source=str(model), target="tflite", precision="int8", int8_mode="static", calib=calib,
                               out=tmp_path / "out", cache=False))
    manifest = result.manifest.model_dump()
    details = manifest["target_details"]
    assert details["quantization"] == "full-integer int8" and details["ops"]["ONE_HOT"] == 1
    assert details["ops"]["FULLY_CONNECTED"] == 2  # the embedding and the head are INT8 around it
    assert len(details["kept_float_constant_outputs"]) == 1 and "onehot" in details["kept_float_constant_outputs"][0]
    assert manifest["parity"]["outputs"]["y"]["cosine"] > 0.999  # 0.887 with the ONE_HOT quantized
