"""Adding a target is two files: a ``Target`` subclass and a runtime shim module, and no table anywhere.

The toy target below is defined in this module (as ``targets/toy.py`` would define it) and its shim is a
file written to a temporary folder added to ``edgec.runtime_shims.__path__`` (as ``runtime_shims/toy.py``
would be). Everything else finds them by name: the build, named flags and ``edgec targets``, verify, the
one runner lookup, the device health check, the shim shipped inside the bundle, the report palette, the
package command and the pruning stats.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgec.runtime_shims as shims
from edgec.cloud_sync.health import check_health
from edgec.compiler.cli import main
from edgec.compiler.verify import verify_bundle
from edgec.core.bundle import load_manifest
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.runtime_shims.runners import open_runner
from edgec.targets.base import TARGETS, ExportResult, PassStep, PrecisionRequest, Target
from edgec.targets.options import TargetOptions, option
from tests.support.models import make_conv_onnx

TOY_SHIM = '''"""Toy runner: the bundle's ONNX file through onnxruntime on the CPU."""

from __future__ import annotations

from typing import Any

from .base import Runner


class ToyRunner(Runner):
    runtime = "toy"

    def activate_impl(self) -> None:
        import onnxruntime

        self._session: Any = onnxruntime.InferenceSession(self.model_path, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def infer_impl(self, feed):
        return dict(zip(self.output_names, self._session.run(self.output_names, feed)))

    def deactivate_impl(self) -> None:
        self._session = None
'''


class ToyOptions(TargetOptions):
    """The toy target's one option."""

    note: str = option("", "a note recorded in the manifest's target_details", flag="--toy-note")


def define_toy_target() -> type[Target]:
    """What ``targets/toy.py`` would hold: registered by being defined."""

    class ToyTarget(Target):
        name = "toy"
        extra = "onnx"
        routes = (FORMAT_ONNX,)
        precisions = ("fp32",)
        modules = ("onnxruntime",)
        Options = ToyOptions
        color = "#123456"
        sparsity_gain = "nothing, it is a toy"

        def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
            return []

        def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
            shutil.copyfile(artifact.path, bundle_dir / "toy.onnx")
            details = {"runtime": "toy", "note": request.options_as(ToyOptions).note}
            return ExportResult("toy.onnx", ("toy.onnx",), artifact.inputs, artifact.outputs, details)

    return ToyTarget


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The toy target registered and its shim module on the shim package's path, both gone afterwards."""
    TARGETS.discover()
    monkeypatch.setattr(TARGETS, "_items", dict(TARGETS._items))
    folder = tmp_path / "toy_shims"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY_SHIM)
    monkeypatch.setattr(shims, "__path__", [*shims.__path__, str(folder)])
    define_toy_target()
    yield folder
    sys.modules.pop("edgec.runtime_shims.toy", None)


def test_a_toy_target_is_two_files_and_runs_everywhere_a_bundle_runs(toy: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = make_conv_onnx(tmp_path / "tiny.onnx")
    code = main(["build", str(source), "--target", "toy", "--toy-note", "hello", "--out", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err
    bundle = tmp_path / "out" / "tiny-toy-fp32"
    manifest = load_manifest(bundle)
    assert manifest.target == "toy" and manifest.model_file == "toy.onnx"
    assert manifest.target_details == {"runtime": "toy", "note": "hello"}
    assert "edgec_shim/toy.py" in {f.path for f in manifest.files}  # the shim ships with the bundle

    report = verify_bundle(bundle)
    assert report.measured["logits"]["cosine"] > 0.99999
    with open_runner(str(bundle), manifest.model_dump(mode="json")) as runner:
        assert runner.runtime == "toy" and runner.input_names == ["x"]
    health = check_health(bundle)
    assert health.parity["logits"]["cosine"] > 0.99999 and health.latency_ms > 0

    env = {**os.environ, "PYTHONPATH": str(bundle)}  # as on a device: only the bundle's own shim
    device = subprocess.run([sys.executable, "-m", "edgec_shim", "verify", "."], cwd=bundle, env=env,
                            capture_output=True, text=True, timeout=120)
    assert device.returncode == 0, device.stderr
    assert "parity within tolerance" in device.stdout


def test_a_toy_target_declares_its_facts_instead_of_tables(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgec.benchmarks.report import color
    from edgec.cloud_sync.serving.package import served_extra
    from edgec.compiler.passes.prune_unstructured import exploited_by

    assert color("toy", ["onnx", "toy"]) == "#123456"
    assert served_extra("toy") == "onnx"
    assert exploited_by()["toy"] == "nothing, it is a toy"
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "toy: a note recorded in the manifest's target_details" in capsys.readouterr().out
    TARGETS._items = {"toy": TARGETS.get("toy")}  # list only the toy: the others' toolchains take seconds to import
    assert main(["targets"]) == 0
    listing = capsys.readouterr().out
    assert "--target-option note=...  a note recorded in the manifest's target_details; also --toy-note" in listing
    assert listing.startswith("toy ") and "routes onnx" in listing and "ready" in listing


def test_a_toy_target_option_is_checked_before_anything_is_imported(toy: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(tmp_path / "missing.onnx"), "--target", "toy", "--target-option", "colour=red",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "edgec: config error: the toy target has no option 'colour'; it accepts: note"
    assert not (tmp_path / "out").exists()
