"""An unchanged rebuild reuses the target's export and the FP32 reference from the stage cache, ships the
same bytes as a fresh build, and anything that changes the export misses; an existing bundle is refused
before the source is imported.

The checks that build nothing; the builds are in tests/integration/compiler/test_rebuild_cache.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgec.compiler.cache import StageCache, scan
from edgec.compiler.cached_stages import export_key
from edgec.compiler.pipeline import get_target
from edgec.core.types import ModelArtifact, TensorSpec
from edgec.targets.base import PrecisionRequest, target_options
from tests.support.models import make_conv_onnx


def test_export_key_covers_model_target_request_options_version_and_toolchain(conv_onnx: Path) -> None:
    target = get_target("tflite")
    art = ModelArtifact(conv_onnx, "onnx", (TensorSpec("x", ("batch", 3, 8, 8), "float32"),),
                        (TensorSpec("logits", ("batch", 4), "float32"),), "d" * 64)
    request = PrecisionRequest("int8", options=target_options("tflite", None))
    tools = {"onnx2tf": "1.0"}
    key = export_key(target, art, request, tools)
    assert export_key(get_target("tflite"), art, request, dict(tools)) == key  # stable
    changed = [
        export_key(target, replace(art, digest="e" * 64), request, tools),
        export_key(target, replace(art, inputs=(TensorSpec("x", (1, 3, 8, 8), "float32"),)), request, tools),
        export_key(get_target("onnx"), art, replace(request, options=None), tools),
        export_key(target, art, replace(request, precision="fp16"), tools),
        export_key(target, art, replace(request, int8_mode="dynamic"), tools),
        export_key(target, art, replace(request, exclude=("conv1",)), tools),
        export_key(target, art, replace(request, options=target_options("tflite", [("io_dtype", "int8")])), tools),
        export_key(target, art, request, {"onnx2tf": "1.1"}),
    ]
    type(target).export_version = "test-bump"
    try:
        changed.append(export_key(target, art, request, tools))
    finally:
        del type(target).export_version
    assert len({key, *changed}) == len(changed) + 1


def test_a_failed_export_is_not_stored(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    """An export that raises leaves no cache entry (the next build exports again) and nothing in the bundle."""
    store = StageCache(tmp_path / "cache")
    target = get_target("onnx")
    art = ModelArtifact(tmp_path / "missing.onnx", "onnx", (), (), "f" * 64)
    from edgec.compiler.cached_stages import cached_export

    (tmp_path / "staging").mkdir()
    with pytest.raises(FileNotFoundError):
        cached_export(store, target, art, PrecisionRequest("fp32"), {}, tmp_path / "staging", tmp_path, lambda m: None)
    assert scan(tmp_path / "cache").entries == [] and not list((tmp_path / "staging").iterdir())


def test_bundle_names_known_before_the_import_match_the_imported_ones(tmp_path: Path) -> None:
    from edgec.compiler.importers.base import find_importer

    onnx_file = make_conv_onnx(tmp_path / "model.v2.onnx")
    imported = find_importer(str(onnx_file)).load(str(onnx_file), StageCache(tmp_path / "c"), lambda m: None)
    assert imported.name == find_importer(str(onnx_file)).source_name(str(onnx_file)) == "model.v2"
    for source, name in [("models/net.py:make", "net"), ("pkg.sub.net:make", "net"), ("exported/m.pt2", "m"),
                         ("m.keras", "m")]:
        assert find_importer(source).source_name(source) == name, source
