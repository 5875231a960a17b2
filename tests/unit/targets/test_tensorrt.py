"""The tensorrt target: TensorRT-ready Q/DQ and fp16 graphs, profiles, errors; engines where a GPU is.

On a host without TensorRT or an NVIDIA GPU the bundle's ONNX is checked by reading the graph and by
running it in onnxruntime; the engine tests are skipped, naming what is missing.

The checks that build nothing; the builds are in tests/integration/targets/test_tensorrt.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.core import errors
from edgec.core.types import TensorSpec
from edgec.frameworks.onnx_utils import artifact_from_file
from edgec.runtime_shims import tensorrt as shim
from edgec.targets.base import PrecisionRequest
from edgec.targets.tensorrt import TensorRTTarget, check_trt_qdq, optimization_profiles
from tests.support.models import make_calib, make_conv_onnx

onnx = pytest.importorskip("onnx")


NO_CUDA = None if shim.gpu_info() else "no NVIDIA GPU: the CUDA driver (libcuda) is not loadable or sees no device"


def test_default_profiles_follow_the_golden_shapes_and_overrides_replace_them() -> None:
    tokens = TensorSpec("input_ids", ("batch", "seq"), "int64")
    image = TensorSpec("image", ("batch", 3, "h", "w"), "float32")
    fixed = TensorSpec("scale", (1,), "float32")
    golden = {"input_ids": (1, 32), "image": (2, 3, 64, 48), "scale": (1,)}
    profiles = optimization_profiles((tokens, image, fixed), golden, {})
    assert profiles == {
        "input_ids": {"min": [1, 1], "opt": [1, 32], "max": [32, 512]},
        "image": {"min": [1, 3, 64, 48], "opt": [2, 3, 64, 48], "max": [32, 3, 64, 48]},
    }
    custom = optimization_profiles((tokens,), golden, {"input_ids": ((1, 8), (4, 128), (64, 256))})
    assert custom == {"input_ids": {"min": [1, 8], "opt": [4, 128], "max": [64, 256]}}
    with pytest.raises(errors.ConfigError, match="does not fit"):
        optimization_profiles((image,), golden, {"image": ((1, 4, 8, 8), (1, 4, 8, 8), (2, 4, 8, 8))})
    with pytest.raises(errors.ConfigError, match="not a model input"):
        optimization_profiles((tokens,), golden, {"mask": ((1, 1), (1, 1), (1, 1))})


def _bad_qdq_model():
    """A Q/DQ graph breaking each TensorRT rule once."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value) -> object:
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [
        const("xs", np.float32(0.1)), const("xz", np.uint8(128)),                   # uint8, asymmetric activation
        const("w", np.ones((4, 3, 3, 3), np.int8)), const("ws", np.float32(0.02)),  # per-tensor conv weight
        const("wz", np.int8(0)),
        const("cs", np.full((4,), 0.1, np.float32)), const("cz", np.zeros(4, np.int8)),  # per-channel activation
        const("g", np.ones((4, 5), np.int8)), const("gs", np.full(4, 0.1, np.float32)),  # gemm weight: wrong axis
        const("gz", np.zeros(4, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "cs", "cz"], ["cq"], name="q_c", axis=1),
        helper.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["cd"], name="dq_c", axis=1),
        helper.make_node("GlobalAveragePool", ["cd"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("DequantizeLinear", ["g", "gs", "gz"], ["gd"], name="dq_g", axis=0),
        helper.make_node("Gemm", ["f", "gd"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_qdq_checker_reports_every_rule_a_graph_breaks() -> None:
    problems = check_trt_qdq(_bad_qdq_model())
    text = "\n".join(problems)
    assert "QuantizeLinear 'q_in': quantized type is uint8" in text
    assert "QuantizeLinear 'q_in': zero point is not 0" in text
    assert "DequantizeLinear 'dq_w': weights of Conv 'conv' are per-tensor; TensorRT needs per-channel scales on axis 0" in text
    assert "QuantizeLinear 'q_c': activation scale has shape [4]" in text
    assert "DequantizeLinear 'dq_g': weights of Gemm 'fc' have 4 scales on axis 0; expected 5 on the output-channel axis 1" in text
    assert len(problems) == 8, problems  # q_in and dq_in twice each, dq_w, q_c, dq_c, dq_g


def test_export_refuses_onnxruntime_default_uint8_qdq(tmp_path: Path) -> None:
    from onnxruntime import quantization as q

    source = make_conv_onnx(tmp_path / "m.onnx")
    calib = np.load(make_calib(tmp_path / "c.npz", count=8))["x"]

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.feeds, None)

    q.quantize_static(str(source), str(tmp_path / "u8.onnx"), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8)  # as the onnx target does, for x86 CPUs
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with pytest.raises(errors.ExportError, match="breaks TensorRT's explicit-quantization rules") as info:
        TensorRTTarget().export(artifact_from_file(tmp_path / "u8.onnx"), bundle, PrecisionRequest("int8"), tmp_path)
    log = info.value.log or ""
    assert "quantized type is uint8" in log and "zero point is not 0" in log and "quantized type is int32" in log
    assert not any(bundle.iterdir())


@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_cuda_driver_copies_arrays_to_the_gpu_and_back() -> None:
    cuda = shim.CudaDriver()
    info = cuda.info()
    assert info["name"] and info["compute_capability"].count(".") == 1 and info["memory_mib"] > 0
    cuda.push_primary_context()
    try:
        stream = cuda.stream()
        for arr in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[101, 2023, 102]], np.int64)):
            ptr = cuda.malloc(arr.nbytes)
            back = np.empty_like(arr)
            cuda.to_device(ptr, arr, stream)
            cuda.to_host(back, ptr, stream)
            cuda.sync(stream)
            cuda.free(ptr)
            assert np.array_equal(arr, back)
        cuda.destroy_stream(stream)
    finally:
        cuda.pop_primary_context()
