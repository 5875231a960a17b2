"""The onnx target's shared calibration between the candidates of one ``--max-drop`` search
(:meth:`OnnxTarget.reuse`, :mod:`edgec.targets._calibration_reuse`): one calibration per model file, calibration set,
method and options (every op list's ranges restricted from one calibration), with INT8 models byte-identical to builds that share nothing, and nothing kept
after the scope. Calibrations are counted by wrapping onnxruntime's real ``create_calibrator`` (the one its
``quantize_static`` calls and the one edgec calls)."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.calibration.dataset import CalibrationSet, load_calibration
from edgec.compiler.config import BuildConfig
from edgec.compiler.passes import _chunked_calibration
from edgec.compiler.passes.base import PassContext, make_pass
from edgec.compiler.pipeline import build
from edgec.core.types import ModelArtifact
from edgec.frameworks.onnx_utils import artifact_from_file
from edgec.targets import _calibration_reuse as _onnx_reuse
from edgec.targets.base import PrecisionRequest
from edgec.targets.onnx import OnnxOptions, OnnxTarget
from tests.support.models import fragile_assets, make_calib, save_graph

quantization = pytest.importorskip("onnxruntime.quantization")


@pytest.fixture
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per calibrator onnxruntime created (the real calls, counted): whether a reuse scope was active."""
    made: list[bool] = []

    def counting(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            made.append(_onnx_reuse.current() is not None)
            return function(*args, **kwargs)
        return wrapper

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the package's `quantize` is a function
    monkeypatch.setattr(ort_quantize, "create_calibrator", counting(ort_quantize.create_calibrator))
    monkeypatch.setattr(quantization, "create_calibrator", counting(quantization.create_calibrator))
    return made


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fragile_assets(tmp_path_factory.mktemp("fragile-onnx-reuse"))


def _int8(artifact: ModelArtifact, work: Path, calib: CalibrationSet, exclude: tuple[str, ...] = (),
          quantize_ops: str = "default") -> bytes:
    """The onnx target's static INT8 model of ``artifact`` (its precision passes, run as a build runs them)."""
    request = PrecisionRequest("int8", calibration=calib, exclude=exclude, options=OnnxOptions(quantize_ops=quantize_ops))
    [(name, options)] = OnnxTarget().precision_passes(request, artifact)
    work.mkdir(parents=True)
    return make_pass(name, options).run(artifact, PassContext(work, calib)).artifact.path.read_bytes()


def test_candidates_in_one_scope_calibrate_once_per_method_and_match_builds_that_share_nothing(
        fragile: dict[str, Path], tmp_path: Path, calibrations: list[bool]) -> None:
    artifact = artifact_from_file(fragile["model"])
    sets = {m: load_calibration(fragile["calib"], artifact.inputs, method=m) for m in ("minmax", "percentile")}
    cases = [(m, exclude) for m in sets for exclude in ((), ("conv2", "relu2"), ("conv3", "relu3"))]

    def candidates(name: str) -> list[bytes]:
        return [_int8(artifact, tmp_path / f"{name}-{i}", sets[m], exclude) for i, (m, exclude) in enumerate(cases)]

    with OnnxTarget().reuse() as scope:
        shared = candidates("shared")
        assert scope.calibrations == 2 and scope.served == 4 and len(scope.ranges) == 2
    assert calibrations == [True, True]  # one per method; the exclusions are onnxruntime's quantizer's alone
    assert scope.ranges == {} and _onnx_reuse.current() is None  # nothing kept after the scope
    alone = candidates("alone")
    assert calibrations[2:] == [False] * len(cases)  # outside the scope every build calibrates again
    assert shared == alone and len(set(shared)) == len(cases)  # byte-identical, and every candidate its own model


def _residual_detector(path: Path) -> Path:
    """Conv-Relu-Conv, a residual Add, a scale Mul, Conv-Swish, pooled to an output that concatenates boxes
    (0-300) with probabilities (0-1): each ``quantize_ops`` list calibrates other tensors, and the output
    ``Concat`` stays float (:mod:`edgec.compiler.passes._mixed_outputs`)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(1.7, np.float32), "k"), numpy_helper.from_array(np.array(300.0, np.float32), "big")]
    nodes = []
    for i, (src, cin) in enumerate((("x", 3), ("r1", 8), ("m", 8)), start=1):
        inits += [numpy_helper.from_array((rng.standard_normal((8, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(8, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [src, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
    nodes[1:1] = [helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    nodes[3:3] = [helper.make_node("Add", ["c2", "r1"], ["a"], name="add"), helper.make_node("Mul", ["a", "k"], ["m"], name="mul")]
    nodes += [helper.make_node("Sigmoid", ["c3"], ["s"], name="sigmoid"), helper.make_node("Mul", ["c3", "s"], ["sw"], name="swish"),
              helper.make_node("GlobalAveragePool", ["sw"], ["g"], name="pool"), helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Mul", ["f", "big"], ["boxes"], name="boxes"), helper.make_node("Sigmoid", ["f"], ["probs"], name="probs"),
              helper.make_node("Concat", ["boxes", "probs"], ["y"], axis=1, name="concat")]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    return save_graph(graph, path)


def test_quantize_ops_lists_share_one_calibration_per_method_and_match_builds_that_share_nothing(
        tmp_path: Path, calibrations: list[bool]) -> None:
    artifact = artifact_from_file(_residual_detector(tmp_path / "detector.onnx"))
    calib = make_calib(tmp_path / "calib.npz")
    cases = [(m, ops) for m in ("minmax", "percentile") for ops in ("default", "onnxruntime", "compute")]

    def candidates(name: str) -> list[bytes]:
        return [_int8(artifact, tmp_path / f"{name}-{i}", load_calibration(calib, artifact.inputs, method=m), quantize_ops=ops)
                for i, (m, ops) in enumerate(cases)]

    with OnnxTarget().reuse() as scope:
        shared = candidates("shared")
        assert (scope.calibrations, scope.served, scope.output_checks) == (2, 4, 1)  # the Concat check: once
    assert scope.ranges == {} and scope.outputs == {}  # dropped with the scope
    alone = candidates("alone")
    assert calibrations == [True, True] + [False] * len(cases)
    assert shared == alone and len(set(shared)) == len(cases)
    producers = {out: node.op_type for node in onnx.load_from_string(shared[0]).graph.node for out in node.output}
    assert producers["y"] == "Concat" and "QuantizeLinear" in producers.values()  # the mixed output stays float


def test_another_calibration_set_or_model_gets_its_own_ranges(
        fragile: dict[str, Path], tmp_path: Path, calibrations: list[bool], conv_onnx: Path, conv_calib: Path) -> None:
    artifact, other = artifact_from_file(fragile["model"]), artifact_from_file(conv_onnx)
    calib = load_calibration(fragile["calib"], artifact.inputs)
    builds = {"minmax": calib, "percentile": load_calibration(fragile["calib"], artifact.inputs, method="percentile"),
              "fewer": calib.select(range(32)), "again": calib}
    with OnnxTarget().reuse() as scope:
        built = {name: _int8(artifact, tmp_path / name, c) for name, c in builds.items()}
        _int8(other, tmp_path / "other", load_calibration(conv_calib, other.inputs))
        assert scope.calibrations == 4 and scope.served == 1  # all but "again"
    assert len(calibrations) == 4
    assert built["again"] == built["minmax"] and len({built[n] for n in ("minmax", "percentile", "fewer")}) == 3


@pytest.mark.parametrize("extra", [{"SmoothQuant": True}, {"CalibStridedMinMax": 16}])
def test_smoothquant_or_strided_minmax_share_nothing(fragile: dict[str, Path], tmp_path: Path,
                                                     extra: dict[str, Any]) -> None:
    """SmoothQuant calibrates its own rewritten model; strided MinMax is not one collection: onnxruntime calibrates."""
    model = fragile["model"]
    with _onnx_reuse.sharing() as scope, _chunked_calibration.cache_option(
            quantization.quantize_static, model, lambda: iter([]), quantization.CalibrationMethod.MinMax, None, extra,
            tmp_path, ("digest", 64)) as option:
        assert option == {} and scope.ranges == {}


def test_max_drop_search_on_onnx_calibrates_once_per_method_and_chooses_as_before(
        fragile: dict[str, Path], tmp_path: Path, calibrations: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    def searched(out: str) -> dict[str, Any]:
        config = BuildConfig(source=str(fragile["model"]), target="onnx", precision="int8", calib=fragile["calib"],
                             out=tmp_path / out, max_drop=0.005, metric="cosine", cache=False)
        return build(config).manifest.model_extra["mixed_precision"]

    record = searched("shared")
    steps = [(s["calibration"], s["variant"]) for s in record["steps"]]
    assert len(steps) > len(set(steps)) >= 3  # candidates that differ only in their float layers
    assert calibrations.count(True) == len({method for method, _ in steps})  # one per method inside the search
    assert calibrations.count(False) == 0  # and the final precision passes, after it, reuse the chosen one's
    monkeypatch.setattr(OnnxTarget, "reuse", lambda self: contextlib.nullcontext())
    calibrations.clear()
    unshared = searched("alone")
    assert calibrations.count(False) >= len(steps)
    assert unshared["steps"] == record["steps"] and unshared["float_layers"] == record["float_layers"]
