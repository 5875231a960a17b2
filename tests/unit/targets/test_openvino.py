"""The openvino target on tiny models built inline: IR files, routes, fp16/int8 mechanics, runner, bad input.

The checks that build nothing; the builds are in tests/integration/targets/test_openvino.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.calibration.nncf_adapter import to_nncf_dataset
from edgec.core import errors
from edgec.frameworks import onnx_utils
from edgec.runtime_shims.openvino import OpenVinoRunner
from edgec.targets.base import PrecisionRequest
from edgec.targets.openvino import OpenVinoOptions, OpenVinoTarget

pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")


def test_runner_applies_the_precision_the_bundle_declares(tmp_path: Path, conv_onnx: Path) -> None:
    artifact = onnx_utils.artifact_from_file(conv_onnx)
    (tmp_path / "b").mkdir()
    request = PrecisionRequest("fp32", options=OpenVinoOptions(inference_precision="bf16"))
    result = OpenVinoTarget().export(artifact, tmp_path / "b", request, tmp_path)
    assert result.details["runtime_options"] == {"INFERENCE_PRECISION_HINT": "bf16"}
    with OpenVinoRunner(str(tmp_path / "b" / result.model_file)) as runner:
        assert runner.compile_config["INFERENCE_PRECISION_HINT"] == "bf16"
    with OpenVinoRunner(str(tmp_path / "b" / result.model_file), inference_precision="f32") as runner:
        assert runner.property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_model_type_and_preset_options_reach_nncf(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    artifact = onnx_utils.artifact_from_file(conv_onnx)
    calib = load_calibration(conv_calib, artifact.inputs)
    out = {}
    for name, options in {"default": {}, "mixed": {"preset": "mixed", "model_type": "transformer"}}.items():
        (tmp_path / name).mkdir()
        request = PrecisionRequest("int8", "static", calib, options=OpenVinoOptions(**options))
        result = OpenVinoTarget().export(artifact, tmp_path / name, request, tmp_path)
        out[name] = result.details["quantization"]
    assert out["default"]["model_type"] == "default" and out["default"]["preset"] == "auto"
    assert out["mixed"]["model_type"] == "transformer" and out["mixed"]["preset"] == "mixed"
    rt = ov.Core().read_model(str(tmp_path / "mixed" / "model.xml")).get_rt_info(["nncf", "quantization", "preset"])
    assert rt.astype(str) == "mixed"


def test_unknown_target_options_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="model_type"):
        OpenVinoOptions.from_pairs([("model_type", "rnn")], "openvino")
    with pytest.raises(errors.ConfigError, match="threads_please"):
        OpenVinoOptions.from_pairs([("threads_please", "4")], "openvino")


def test_nncf_adapter_yields_the_calibration_feeds_in_order(conv_onnx: Path, conv_calib: Path) -> None:
    artifact = onnx_utils.artifact_from_file(conv_onnx)
    calib = load_calibration(conv_calib, artifact.inputs, samples=5)
    items = list(to_nncf_dataset(calib).get_inference_data())
    assert len(items) == 5
    for item, feed in zip(items, calib.feeds()):
        assert item.keys() == {"x"} and item["x"].shape == (1, 3, 8, 8)
        np.testing.assert_array_equal(item["x"], feed["x"])
    tuples = list(to_nncf_dataset(calib, ["x"]).get_inference_data([1, 3]))
    np.testing.assert_array_equal(tuples[1][0], calib.feed(3)["x"])
    with pytest.raises(errors.CalibrationError, match="'mask'"):
        to_nncf_dataset(calib, ["x", "mask"])


def test_nncf_adapter_keeps_integer_inputs_as_given(tmp_path: Path) -> None:
    from edgec.core.types import TensorSpec

    specs = (TensorSpec("ids", ("b", "s"), "int64"), TensorSpec("mask", ("b", "s"), "int64"))
    ids = np.arange(24, dtype=np.int64).reshape(3, 8)
    calib = CalibrationSet.from_arrays({"ids": ids, "mask": np.ones_like(ids)}, specs)
    first = next(iter(to_nncf_dataset(calib).get_inference_data()))
    assert first["ids"].dtype == np.int64 and first["ids"].shape == (1, 8) and list(first["ids"][0]) == list(range(8))
