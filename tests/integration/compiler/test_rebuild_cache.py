"""An unchanged rebuild reuses the target's export and the FP32 reference from the stage cache, ships the
same bytes as a fresh build, and anything that changes the export misses; an existing bundle is refused
before the source is imported."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.compiler.cache import scan
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import BuildOutcome, build
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib


def _files(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def _twice(config: BuildConfig, tmp_path: Path) -> tuple[BuildOutcome, BuildOutcome, Path]:
    """A build into an empty cache, the same build again, and the same build without the cache."""
    cache = tmp_path / "cache"
    first = build(config.model_copy(update={"out": tmp_path / "first", "cache_dir": cache}))
    again = build(config.model_copy(update={"out": tmp_path / "again", "cache_dir": cache}))
    fresh = build(config.model_copy(update={"out": tmp_path / "fresh", "cache": False})).bundle_dir
    return first, again, fresh


@pytest.mark.parametrize(("target", "precision"), [("onnx", "int8"), ("onnx", "fp16"), ("openvino", "int8"), ("openvino", "fp32")])
def test_unchanged_rebuild_reuses_every_stage_and_ships_the_same_bytes(tmp_path: Path, conv_onnx: Path, conv_calib: Path,
                                                                       target: str, precision: str) -> None:
    config = BuildConfig(source=str(conv_onnx), target=target, precision=precision, calib=conv_calib)
    first, again, fresh = _twice(config, tmp_path)
    assert first.cache_hits == 0 and first.cache_misses >= 3  # passes, the FP32 reference, the export
    assert again.cache_misses == 0 and again.cache_hits == first.cache_misses
    assert _files(again.bundle_dir) == _files(first.bundle_dir) == _files(fresh)
    assert again.manifest.parity["measured"] and again.manifest.parity == first.manifest.parity  # measured again, same
    assert scan(tmp_path / "cache").by_kind()["export"]["entries"] == 1


@pytest.mark.slow  # 8 s alone, TensorFlow's import included; 20 s on a loaded machine
def test_unchanged_tflite_rebuild_reuses_the_conversion_and_ships_the_same_bytes(tmp_path: Path, conv_onnx: Path,
                                                                                conv_calib: Path) -> None:
    config = BuildConfig(source=str(conv_onnx), target="tflite", precision="int8", calib=conv_calib)
    first, again, fresh = _twice(config, tmp_path)
    assert again.cache_misses == 0 and again.cache_hits == first.cache_misses
    assert _files(again.bundle_dir) == _files(first.bundle_dir) == _files(fresh)


def test_another_calibration_set_or_method_exports_again(tmp_path: Path, conv_onnx: Path, conv_calib: Path) -> None:
    cache = tmp_path / "cache"
    base = BuildConfig(source=str(conv_onnx), target="openvino", precision="int8", calib=conv_calib, cache_dir=cache)
    build(base.model_copy(update={"out": tmp_path / "a"}))
    other_data = make_calib(tmp_path / "other.npz", seed=7)
    changed = build(base.model_copy(update={"out": tmp_path / "b", "calib": other_data}))
    assert changed.cache_misses == 2  # other golden inputs (the reference) and the export, where openvino quantizes
    method = build(base.model_copy(update={"out": tmp_path / "c", "calib_method": "percentile"}))
    assert method.cache_misses == 1  # the export only: the float passes and the reference are reused
    assert scan(cache).by_kind()["export"]["entries"] == 3




FACTORY = '''
from pathlib import Path

Path(__file__).with_name("factory-was-called").write_text("imported")


def make():
    raise AssertionError("the factory ran")
'''


@pytest.mark.parametrize("name_args", [(), ("--name", "custom")])
def test_an_existing_bundle_is_refused_before_the_factory_is_imported(tmp_path: Path, name_args: tuple[str, ...]) -> None:
    (tmp_path / "net.py").write_text(FACTORY)
    name = name_args[1] if name_args else "net"
    (tmp_path / "out" / f"{name}-onnx-int8").mkdir(parents=True)
    proc = run_cli("build", f"{tmp_path / 'net.py'}:make", "--precision", "int8", "--out", str(tmp_path / "out"), *name_args)
    assert_one_line_error(proc, 2, f"{name}-onnx-int8 already exists", "--force")
    assert not (tmp_path / "factory-was-called").exists()


def test_an_existing_pruned_bundle_is_refused_before_the_factory_is_imported(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(FACTORY)
    (tmp_path / "out" / "net-pruned30-onnx-fp32").mkdir(parents=True)
    proc = run_cli("build", f"{tmp_path / 'net.py'}:make", "--prune", "0.3", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, "net-pruned30-onnx-fp32 already exists")
    assert not (tmp_path / "factory-was-called").exists()


@pytest.mark.parametrize(("flags", "fragment"), [(("--calib", "nowhere.npz"), "calibration path"),
                                                 (("--max-drop", "0.01", "--metric", "accuracy", "--eval", "nowhere.npz"), "--eval")])
def test_missing_calibration_or_eval_data_is_refused_before_the_factory_is_imported(
        tmp_path: Path, flags: tuple[str, ...], fragment: str) -> None:
    (tmp_path / "net.py").write_text(FACTORY)
    proc = run_cli("build", f"{tmp_path / 'net.py'}:make", "--precision", "int8", *flags[:-1], str(tmp_path / flags[-1]),
                   "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 6, fragment, "nowhere.npz does not exist")
    assert not (tmp_path / "factory-was-called").exists() and not (tmp_path / "out").exists()




@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="coremltools is not installed")
def test_coreml_readiness_check_does_not_import_coremltools() -> None:
    code = ("import sys; from edgec.targets.coreml import CoreMLTarget; CoreMLTarget().check_available(); "
            "print('coremltools' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
