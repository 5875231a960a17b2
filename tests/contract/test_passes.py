"""Every registered pass through the same checks (like ``test_targets.py``, after nncf's cross-framework
test templates): options that refuse unknown fields, formats it does not accept refused with one
:class:`EdgecError`, an output artifact that describes its file, JSON-able stats, byte-identical reruns
(a ``.pt2`` up to the ids ``torch.export.save`` makes up: see :func:`content`), and ``modified=False`` with
the input's bytes when there is nothing to do. The torch passes add about 6 s (importing torch, exporting).

The tiny models are built here, one per format (:data:`BUILDERS`); a pass whose formats have no builder
fails :func:`test_every_registered_pass_has_a_tiny_model_and_options` until one is added. A pass whose
toolchain is not installed is skipped with the install hint.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler.passes.base import PASSES, Pass, PassContext, PassResult, make_pass
from edgec.core import errors
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2, ModelArtifact, sha256_file
from edgec.frameworks.tf_utils import FORMAT_KERAS
from edgec.targets.base import TARGETS
from tests.support.recurrent import make_lstm_onnx

OPTIONS: dict[str, dict[str, Any]] = {
    "fix_shapes": {"shapes": {"x": [1, 3, 8, 8]}},
    "prune_structured": {"ratio": 0.5, "round_to": 4},
    "prune_unstructured": {"ratio": 0.5},
    "fold_inputs": {"values": {"gain": 3}},
}
"""The options a pass needs to run on the tiny model of its format (passes not listed take none)."""

NOTHING_TO_DO = ("fuse_gelu", "split_reduce_l2", "upgrade_opset", "unroll_rnn")
"""Passes that must report ``modified=False`` on a plain CNN (no GELU, no ReduceL2, opset 17, no Constant nodes,
no recurrent node)."""

def make_onnx(path: Path) -> Path:
    """Conv-Relu-GlobalAveragePool-Gemm, a GELU as ``torch.onnx.export`` writes it, and an L2 normalisation."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "fc": rng.standard_normal((8, 10)) * 0.3,
             "fcb": np.zeros(10), "sqrt2": np.array(2 ** 0.5), "one": np.array(1.0), "half": np.array(0.5)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["h"], name="fc"),
             helper.make_node("Div", ["h", "sqrt2"], ["s"], name="div"),
             helper.make_node("Erf", ["s"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "half"], ["m"], name="mul_half"),
             helper.make_node("Mul", ["h", "m"], ["g"], name="mul_x"),
             helper.make_node("ReduceL2", ["g", "axes"], ["n"], keepdims=1, name="l2"),
             helper.make_node("Div", ["g", "n"], ["y"], name="normalize")]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    initializers.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgec-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_old_onnx(path: Path) -> Path:
    """Conv-Relu-GlobalAveragePool-MatMul at opset 12 with its weights in ``Constant`` nodes, as older
    exporters (paddle2onnx, torch before 1.12) write them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "fc": rng.standard_normal((8, 10)) * 0.3}
    nodes = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v.astype(np.float32), k), name=f"{k}_const")
             for k, v in weights.items()]
    nodes += [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
              helper.make_node("Relu", ["c"], ["r"], name="relu"),
              helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], producer_name="paddle2onnx")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_setting_onnx(path: Path) -> Path:
    """Conv on ``x`` scaled by ``gain``, a 0-d int64 setting (``--input-value gain=3 --fold-input-values``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Cast", ["gain"], ["g"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["c", "g"], ["y"], name="scale")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8]),
              helper.make_tensor_value_info("gain", TensorProto.INT64, [])]
    graph = helper.make_graph(nodes, "setting", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_pt2(path: Path) -> Path:
    """Two convolutions and a linear head as a ``torch.export`` program with a dynamic batch."""
    torch = pytest.importorskip("torch", reason="pip install 'edgec[torch]'")

    class Tiny(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.mid = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x: Any) -> Any:
            return self.fc(torch.relu(self.mid(torch.relu(self.conv(x)))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))
    return path


def describe(path: Path, fmt: str) -> ModelArtifact:
    """The artifact an importer makes of ``path``: specs read from the file, digest of its bytes."""
    if fmt == FORMAT_ONNX:
        from edgec.frameworks import onnx_utils

        return onnx_utils.artifact_from_file(path)
    from edgec.compiler.cache import StageCache
    from edgec.compiler.importers.tensorflow import TensorflowImporter
    from edgec.compiler.importers.torch import TorchImporter

    importer = TensorflowImporter() if fmt == FORMAT_KERAS else TorchImporter()
    return importer.load(str(path), StageCache(path.parent, enabled=False), lambda m: None).artifact


def content(path: Path, fmt: str) -> bytes | dict[str, bytes]:
    """What two runs must agree on: the file's bytes; for a ``.pt2``, its members but for the two ids that
    ``torch.export.save`` makes up on every save (``.data/serialization_id``, and ``graph_id``, a Python
    ``id()``, in each node's provenance), which no pass controls."""
    if fmt != FORMAT_PT2:
        return path.read_bytes() if path.is_file() else {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if not n.endswith(".data/serialization_id")}
    return {n: re.sub(rb'graph_id\\+": \d+', b"graph_id", data) for n, data in members.items()}


def make_keras(path: Path) -> Path:
    """A tiny Keras 3 model on input ``x`` of shape (batch, 3, 8, 8) (Dense only: no layout question)."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((3, 8, 8), name="x")
    y = keras.layers.Dense(10, name="fc")(keras.layers.Flatten()(x))
    keras.Model(x, y).save(path)
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {FORMAT_ONNX: make_onnx, FORMAT_PT2: make_pt2, FORMAT_KERAS: make_keras}
SUFFIX = {FORMAT_ONNX: ".onnx", FORMAT_PT2: ".pt2", FORMAT_KERAS: ".keras"}
PASS_BUILDERS: dict[str, Callable[[Path], Path]] = {"upgrade_opset": make_old_onnx, "fold_inputs": make_setting_onnx,
                                                  "unroll_rnn": make_lstm_onnx}
"""Passes that find nothing to do on their format's tiny model get a model of their own."""
FOLDS_INPUTS = ("fold_inputs",)
"""Passes that remove the inputs named in their ``values`` option (the one exception to unchanged input names)."""


class Models:
    """Tiny models and runs, built on first use and shared by the module's tests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._artifacts: dict[str, ModelArtifact] = {}
        self._runs: dict[str, tuple[PassResult, PassResult]] = {}

    def artifact(self, fmt: str) -> ModelArtifact:
        if fmt not in self._artifacts:
            self._artifacts[fmt] = describe(BUILDERS[fmt](self.folder / f"tiny{SUFFIX[fmt]}"), fmt)
        return self._artifacts[fmt]

    def source(self, name: str) -> ModelArtifact:
        """The tiny model pass ``name`` runs on: its own (:data:`PASS_BUILDERS`), else its format's."""
        if name not in PASS_BUILDERS:
            return self.artifact(input_format(make_pass(name, OPTIONS.get(name))))
        if name not in self._artifacts:
            self._artifacts[name] = describe(PASS_BUILDERS[name](self.folder / f"{name}.onnx"), FORMAT_ONNX)
        return self._artifacts[name]

    def calibration(self, artifact: ModelArtifact) -> CalibrationSet:
        fixed = [s.shape for s in artifact.inputs if s.name == "x" and all(isinstance(d, int) for d in s.shape)]
        x = np.random.default_rng(1).standard_normal((8, *(fixed or [(1, 3, 8, 8)])[0])).astype(np.float32)
        others = {s.name: np.ones((8, *s.shape), s.dtype) for s in artifact.inputs if s.name != "x"}  # settings: fixed shapes
        return CalibrationSet.from_arrays({"x": x, **others}, artifact.inputs)

    def run(self, name: str, work: Path, artifact: ModelArtifact | None = None) -> PassResult:
        step = make_pass(name, OPTIONS.get(name))
        artifact = artifact or self.source(name)
        work.mkdir(parents=True)
        return step.run(artifact, PassContext(work, self.calibration(artifact)))

    def twice(self, name: str) -> tuple[PassResult, PassResult]:
        """The pass run twice on its tiny model, in two work directories."""
        if name not in self._runs:
            self._runs[name] = (self.run(name, self.folder / name / "a"), self.run(name, self.folder / name / "b"))
        return self._runs[name]


def input_format(step: Pass) -> str:
    return next(f for f in step.accepts if f in BUILDERS)


def skip_without_toolchain(name: str) -> None:
    """Skip with the install hint when the pass's toolchain is missing (found by trying its format's import)."""
    fmt = input_format(make_pass(name, OPTIONS.get(name)))
    module = {FORMAT_ONNX: "onnx", FORMAT_PT2: "torch", FORMAT_KERAS: "tf2onnx"}[fmt]
    pytest.importorskip(module, reason=f"the {name} pass: pip install 'edgec[{module}]'")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("pass-contract"))


def test_every_registered_pass_has_a_tiny_model_and_options() -> None:
    assert {"fuse_gelu", "split_reduce_l2", "export_onnx", "simplify", "quantize_static"} <= set(PASSES.names())
    for cls in PASSES.all():
        assert set(cls.accepts) & set(BUILDERS), f"pass {cls.name!r}: add a tiny model builder for {cls.accepts}"
        make_pass(cls.name, OPTIONS.get(cls.name))  # the listed options are enough to construct it
    assert set(OPTIONS) <= set(PASSES.names()) and set(NOTHING_TO_DO) <= set(PASSES.names())


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_options_refuse_unknown_fields_with_a_config_error(name: str) -> None:
    cls = PASSES.get(name)
    assert cls.Options.model_config.get("extra") == "forbid" and cls.Options.model_config.get("frozen")
    with pytest.raises(errors.ConfigError, match=f"bad option for pass '{name}': no_such_option"):
        make_pass(name, {**OPTIONS.get(name, {}), "no_such_option": 1})
    assert json.loads(json.dumps(make_pass(name, OPTIONS.get(name)).options_json())) is not None


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_refuses_a_format_it_does_not_accept_before_touching_the_file(name: str, tmp_path: Path) -> None:
    step = make_pass(name, OPTIONS.get(name))
    wrong = next(f for f in (FORMAT_ONNX, FORMAT_PT2, "savedmodel") if f not in step.accepts)
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"not a model")
    artifact = ModelArtifact(junk, wrong, (), (), sha256_file(junk))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(errors.EdgecError) as caught:
        step.run(artifact, PassContext(work))
    assert isinstance(caught.value, errors.UnsupportedError)
    assert f"pass {name!r} takes" in str(caught.value) and wrong in str(caught.value)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("name", [n for n in PASSES.names() if PASSES.get(n).requires_calibration])
def test_pass_that_requires_calibration_refuses_to_run_without_it(name: str, models: Models, tmp_path: Path) -> None:
    skip_without_toolchain(name)
    step = make_pass(name, OPTIONS.get(name))
    with pytest.raises(errors.CalibrationError, match="needs calibration data"):
        step.run(models.artifact(input_format(step)), PassContext(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_output_artifact_describes_its_file(name: str, models: Models) -> None:
    skip_without_toolchain(name)
    cls = PASSES.get(name)
    source = models.source(name)
    result, _ = models.twice(name)
    out = result.artifact
    assert isinstance(result.modified, bool)
    assert out.format == cls.produces and out.path.exists()
    assert out.path.parent == models.folder / name / "a"  # written under the pass's work directory
    assert out.digest == sha256_file(out.path)
    folded = OPTIONS[name]["values"] if name in FOLDS_INPUTS else {}
    assert [s.name for s in out.inputs] == [s.name for s in source.inputs if s.name not in folded]
    reread = describe(out.path, out.format)
    assert (reread.inputs, reread.outputs) == (out.inputs, out.outputs)
    assert json.loads(json.dumps(result.stats)) == result.stats
    if not result.modified:
        assert out.digest == source.digest


@pytest.mark.parametrize("name", PASSES.names())
def test_pass_rerun_on_the_same_input_is_byte_identical(name: str, models: Models) -> None:
    skip_without_toolchain(name)
    first, second = models.twice(name)
    fmt = first.artifact.format
    assert content(first.artifact.path, fmt) == content(second.artifact.path, fmt)
    assert (first.modified, first.stats) == (second.modified, second.stats)
    if fmt != FORMAT_PT2:
        assert replace(first.artifact, path=second.artifact.path) == second.artifact


@pytest.mark.parametrize("name", NOTHING_TO_DO)
def test_pass_with_nothing_to_do_reports_unmodified_and_passes_the_bytes_on(name: str, models: Models,
                                                                             tmp_path: Path) -> None:
    skip_without_toolchain(name)
    from tests.support.models import make_conv_onnx

    plain = describe(make_conv_onnx(tmp_path / "plain.onnx"), FORMAT_ONNX)
    result = models.run(name, tmp_path / "work", plain)
    assert result.modified is False
    assert result.artifact.digest == plain.digest and result.artifact.path.read_bytes() == plain.path.read_bytes()
    assert (result.artifact.inputs, result.artifact.outputs) == (plain.inputs, plain.outputs)


@pytest.mark.parametrize("name", NOTHING_TO_DO)
def test_pass_with_something_to_do_reports_modified(name: str, models: Models) -> None:
    skip_without_toolchain(name)
    result, _ = models.twice(name)
    assert result.modified is True and result.artifact.digest != models.source(name).digest


def test_passes_a_target_names_for_its_onnx_route_are_registered_onnx_to_onnx_passes() -> None:
    for target in TARGETS.all():
        for name in target.onnx_rewrites:
            cls = PASSES.get(name)
            assert FORMAT_ONNX in cls.accepts and cls.produces == FORMAT_ONNX, (target.name, name)
            assert not cls.requires_calibration and make_pass(name).options_json() == {}
