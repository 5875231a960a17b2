"""openvino keeps dynamic dims, except where OpenVINO cannot convert the model with them: an ``If`` whose
output rank depends on a dynamic dim (torch's squeeze check after an STFT-like framing, as on silero-vad).
Then the dims are fixed to the build's data sizes, recorded in the manifest, and the bundle runs at them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.models import make_calib
from tests.support.squeeze_if import save_squeeze_if

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'edgec[onnx]'")


def test_openvino_alone_refuses_the_model_while_its_length_is_dynamic(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="rank"):
        ov.convert_model(str(save_squeeze_if(tmp_path / "m.onnx")))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_dims_fixed_to_the_data_sizes_where_openvino_cannot_keep_them_dynamic(tmp_path: Path, precision: str) -> None:
    src = save_squeeze_if(tmp_path / "m.onnx")
    calib = make_calib(tmp_path / "calib.npz", count=16, shape=(24,))
    bundle = build(BuildConfig(source=str(src), out=tmp_path / "out", target="openvino", precision=precision,
                               calib=calib)).bundle_dir
    manifest = json.loads((bundle / "manifest.json").read_text())
    details = manifest["target_details"]
    assert details["fixed_dims"] == {"x": [1, 24]} and details["folded_ifs"] == 1
    assert manifest["inputs"][0]["shape"] == [1, 24]
    x = np.load(calib)["x"][5:6]  # a sample of the data's kind (INT8 ranges come from it)
    expected = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ov.Core().compile_model(str(bundle / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"x": x})[0]
    assert got.shape == expected.shape == (1, 3, 24)
    if precision == "fp32":
        np.testing.assert_allclose(got, expected, atol=1e-4)
    else:
        cosine = float(np.dot(got.ravel(), expected.ravel()) / np.linalg.norm(got) / np.linalg.norm(expected))
        assert cosine > 0.99


def test_max_drop_candidates_fix_the_same_dims_as_the_build(tmp_path: Path) -> None:
    """The search's FP32 reference and candidates are exports too: they get the build's data sizes (they failed
    to convert, exit 5, when only the final export had them)."""
    src = save_squeeze_if(tmp_path / "m.onnx")
    calib = make_calib(tmp_path / "calib.npz", count=24, shape=(24,))
    outcome = build(BuildConfig(source=str(src), out=tmp_path / "out", target="openvino", precision="int8",
                                calib=calib, max_drop=0.5, metric="cosine"))
    manifest = json.loads((outcome.bundle_dir / "manifest.json").read_text())
    assert manifest["target_details"]["fixed_dims"] == {"x": [1, 24]}
    assert manifest["mixed_precision"]["builds"] >= 1 and manifest["mixed_precision"]["measured_on"]
