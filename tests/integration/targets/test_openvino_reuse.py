"""The openvino target's shared work between the candidates of one ``--max-drop`` search
(:meth:`OpenVinoTarget.reuse`, :mod:`edgec.targets._openvino_reuse`): one conversion per model and one nncf
statistics collection per model, calibration set, method and options, with bundles byte-identical to builds
that share nothing. Conversions and collections are counted by wrapping the real OpenVINO and nncf calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.types import ModelArtifact
from edgec.frameworks.onnx_utils import artifact_from_file
from edgec.targets.base import PrecisionRequest
from edgec.targets.openvino import OpenVinoOptions, OpenVinoTarget
from tests.support.models import fragile_assets

ov = pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
pytest.importorskip("nncf", reason="pip install 'edgec[openvino]'")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times OpenVINO converted a model and nncf collected statistics (the real calls, counted)."""
    from nncf.quantization.algorithms import pipeline

    counts = {"convert": 0, "collect": 0}

    def counting(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ov, "convert_model", counting("convert", ov.convert_model))
    monkeypatch.setattr(pipeline, "collect_statistics", counting("collect", pipeline.collect_statistics))
    return counts


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fragile_assets(tmp_path_factory.mktemp("fragile-reuse"))


def _export(artifact: ModelArtifact, out: Path, precision: str = "int8", calib: CalibrationSet | None = None,
            exclude: tuple[str, ...] = (), model_type: str = "auto") -> bytes:
    out.mkdir(parents=True)
    request = PrecisionRequest(precision, calibration=calib, exclude=exclude, options=OpenVinoOptions(model_type=model_type))
    OpenVinoTarget().export(artifact, out, request, out.parent)
    return (out / "model.xml").read_bytes() + (out / "model.bin").read_bytes()


def _a_convolution(artifact: ModelArtifact, tmp_path: Path) -> str:
    _export(artifact, tmp_path / "probe", "fp32")
    model = ov.Core().read_model(str(tmp_path / "probe" / "model.xml"))
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"][2]


@pytest.mark.parametrize(("model_type", "steps"), [("default", 1), ("transformer", 2)])  # transformer: SmoothQuant first
def test_candidates_in_one_scope_convert_once_collect_once_and_match_builds_that_share_nothing(
        fragile: dict[str, Path], tmp_path: Path, calls: dict[str, int], model_type: str, steps: int) -> None:
    artifact = artifact_from_file(fragile["model"])
    calib = load_calibration(fragile["calib"], artifact.inputs)
    conv = _a_convolution(artifact, tmp_path)
    calls.update(convert=0, collect=0)
    with OpenVinoTarget().reuse():
        _export(artifact, tmp_path / "fp32", "fp32")
        shared = {exclude: _export(artifact, tmp_path / f"shared-{len(exclude)}", calib=calib, exclude=exclude,
                                   model_type=model_type) for exclude in ((), (conv,))}
    assert calls == {"convert": 1, "collect": steps}  # the second candidate's statistic points are the first's
    alone = {exclude: _export(artifact, tmp_path / f"alone-{len(exclude)}", calib=calib, exclude=exclude, model_type=model_type)
             for exclude in ((), (conv,))}
    assert calls == {"convert": 3, "collect": 3 * steps}  # outside the scope nothing is kept
    assert shared == alone and shared[()] != shared[(conv,)]


def test_another_calibration_set_method_or_model_gets_its_own_statistics(
        fragile: dict[str, Path], tmp_path: Path, calls: dict[str, int], conv_onnx: Path, conv_calib: Path) -> None:
    artifact, other = artifact_from_file(fragile["model"]), artifact_from_file(conv_onnx)
    calib = load_calibration(fragile["calib"], artifact.inputs)
    fewer = calib.select(range(32))  # other samples: another digest
    with OpenVinoTarget().reuse():
        built = {name: _export(artifact, tmp_path / name, calib=c) for name, c in
                 {"minmax": calib, "percentile": load_calibration(fragile["calib"], artifact.inputs, method="percentile"),
                  "fewer": fewer, "again": calib}.items()}
        _export(other, tmp_path / "other", calib=load_calibration(conv_calib, other.inputs))
    assert calls == {"convert": 2, "collect": 4}  # minmax, percentile, fewer samples, the other model
    assert built["again"] == built["minmax"] and built["percentile"] != built["minmax"] and built["fewer"] != built["minmax"]


def test_max_drop_search_on_openvino_converts_once_and_chooses_as_before(
        fragile: dict[str, Path], tmp_path: Path, calls: dict[str, int]) -> None:
    outcome = build(BuildConfig(source=str(fragile["model"]), target="openvino", precision="int8", calib=fragile["calib"],
                                out=tmp_path, max_drop=0.02, metric="cosine", calib_method="minmax", cache=False))
    record = outcome.manifest.model_extra["mixed_precision"]
    assert record["builds"] >= 2 and record["float_layers"] == ["conv3"]
    assert calls["convert"] == 1  # the FP32 reference and every candidate: one conversion
    assert calls["collect"] == len(record["calibration"]["tried"])  # one per calibration method tried
