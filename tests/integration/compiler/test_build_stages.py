"""The build as a :class:`Build` with one method per stage: what is prepared once serves every precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgec.compiler.cache import StageCache
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.base import find_importer
from edgec.compiler.pipeline import Build, build, get_target


def test_one_preparation_finishes_every_precision_like_separate_builds(conv_onnx: Path, conv_calib: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = BuildConfig(source=str(conv_onnx), out=tmp_path / "cells", calib=conv_calib, cache=False)
    target, importer = get_target("onnx"), find_importer(config.source)
    cache = StageCache(tmp_path / "unused", enabled=False, scratch=tmp_path / "scratch")
    first = Build(config, target, importer, cache)
    imported = first.import_source()
    prepared = first.prepare(imported)

    def no_second_reference(*args: Any) -> Any:
        raise AssertionError("the reference ran again")

    monkeypatch.setattr(importer, "reference", no_second_reference)
    monkeypatch.setattr(importer, "load", no_second_reference)
    for precision in ("fp32", "fp16", "int8"):
        cell = Build(config.model_copy(update={"precision": precision}), target, importer, cache)
        outcome = cell.finish(prepared, cell.claim_output(imported))
        alone = build(config.model_copy(update={"precision": precision, "out": tmp_path / "alone"})).bundle_dir
        assert outcome.bundle_dir.name == alone.name == f"tiny-onnx-{precision}"
        for name in ("manifest.json", "model.onnx", "golden.npz"):
            assert (outcome.bundle_dir / name).read_bytes() == (alone / name).read_bytes(), (precision, name)


def test_pass_records_of_one_precision_do_not_leak_into_another(conv_onnx: Path, conv_calib: Path, tmp_path: Path) -> None:
    config = BuildConfig(source=str(conv_onnx), out=tmp_path / "cells", calib=conv_calib)
    target, importer = get_target("onnx"), find_importer(config.source)
    cache = StageCache(tmp_path / "cache", scratch=tmp_path / "scratch")
    first = Build(config.model_copy(update={"precision": "int8"}), target, importer, cache)
    imported = first.import_source()
    prepared = first.prepare(imported)
    int8 = first.finish(prepared, first.claim_output(imported)).manifest
    fp32_build = Build(config, target, importer, cache)
    fp32 = fp32_build.finish(prepared, fp32_build.claim_output(imported)).manifest
    assert [p["name"] for p in int8.passes] == ["simplify", "quantize_static"]
    assert [p["name"] for p in fp32.passes] == ["simplify"]
