"""A Core ML export leaves nothing in the system temp folder: coremltools writes every converted model as a
package there and removes it only at interpreter exit, so a build farm worker or a matrix build kept one per
Core ML build (fp32, and int8's float model plus its compressed copy) until it stopped."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from edgec.compiler.importers.torch import TorchImporter
from edgec.targets.base import PrecisionRequest
from edgec.targets.coreml import CoreMLOptions, CoreMLTarget
from tests.support.models import make_tiny_pt2

pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")


def test_int8_export_removes_the_packages_coremltools_left_in_the_temp_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = TorchImporter().load(str(make_tiny_pt2(tmp_path / "tiny.pt2")), None, lambda m: None).artifact  # type: ignore[arg-type]
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where coremltools' mkdtemp writes
    bundle, work = tmp_path / "bundle", tmp_path / "work"
    bundle.mkdir()
    work.mkdir()
    result = CoreMLTarget().export(artifact, bundle, PrecisionRequest("int8", options=CoreMLOptions()), work)
    assert (bundle / result.model_file / "Manifest.json").is_file()  # the bundle's own package is written
    assert [p.name for p in temp.iterdir() if p.name.endswith(".mlpackage")] == []
