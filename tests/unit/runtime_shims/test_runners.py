"""The one runner lookup: a bundle's target -> the shim module that runs it, with no table."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.runtime_shims import runners
from edgec.runtime_shims.base import RunnerError
from edgec.runtime_shims.ort import OrtRunner
from edgec.targets.base import TARGETS
from tests.support.models import make_conv_onnx


@pytest.mark.parametrize("target", TARGETS.names())
def test_every_registered_target_has_exactly_one_shim_module(target: str) -> None:
    module = runners.shim_module(target)
    assert module.__name__.rsplit(".", 1)[1] == target or runners.declares(module, target)
    assert callable(getattr(module, "open_runner", None)) or runners.runner_class(module)


def test_a_target_named_unlike_its_shim_is_found_by_declaration(tmp_path: Path) -> None:
    make_conv_onnx(tmp_path / "model.onnx")
    runner = runners.open_model("onnx", str(tmp_path), "model.onnx", threads=1)
    assert isinstance(runner, OrtRunner) and runner.threads == 1
    assert runners.shim_module("tflite").__name__.endswith(".litert")


@pytest.mark.parametrize("target", ["", "../ort", "ort.OrtRunner", "os", "__main__", "_private", "runners", "quantumchip"])
def test_untrusted_target_names_find_no_runner(target: str, tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="no runner for target"):
        runners.open_model(target, str(tmp_path), "model.onnx")


@pytest.mark.parametrize("target", ["base", "measure"])
def test_a_shim_helper_module_is_not_a_runner(target: str, tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="defines 0 runners"):
        runners.open_model(target, str(tmp_path), "model.onnx")
