"""Paths are made absolute once, at the edge (BuildConfig, the cache's environment variable): converters that run
in a worker with another working directory (onnx2tf) still find the cache, the model and the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.models import make_calib, make_conv_onnx


def test_build_config_makes_every_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgec.compiler.config import BuildConfig

    monkeypatch.chdir(tmp_path)
    make_conv_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "net.py").write_text("def make():\n    return None\n")
    config = BuildConfig(source="tiny.onnx", out=Path("out"), calib=Path("data/calib.npz"), eval=Path("../eval.npz"),
                         cache_dir=Path("cache"))
    assert config.source == str(tmp_path / "tiny.onnx")
    assert config.out == tmp_path / "out" and config.calib == tmp_path / "data" / "calib.npz"
    assert config.eval == tmp_path.parent / "eval.npz" and config.cache_dir == tmp_path / "cache"
    assert BuildConfig(source="net.py:make").source == f"{tmp_path / 'net.py'}:make"
    assert BuildConfig(source="pkg.module:make").source == "pkg.module:make"  # a module path, not a file




def _build_in(cwd: Path, *args: str, env: dict[str, str] | None = None, old_paths: bool = False) -> subprocess.CompletedProcess[str]:
    """``edgec build`` run from ``cwd``; ``old_paths`` keeps paths as given (the behaviour before this fix)."""
    patch = textwrap.dedent("""
        import edgec.compiler.config as config, edgec.compiler.pipeline as pipeline, os
        from pathlib import Path
        config.absolute_path, config.absolute_source = Path, str
        pipeline.default_cache_dir = lambda: Path(os.environ["EDGEC_CACHE_DIR"])
    """) if old_paths else ""
    code = patch + f"import sys\nfrom edgec.compiler.cli import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_tflite_build_from_onnx_with_relative_cache_dir_and_paths(tmp_path: Path, how: str) -> None:
    pytest.importorskip("onnx2tf", reason="the tflite target: pip install 'edgec[tflite]'")
    make_conv_onnx(tmp_path / "tiny.onnx")
    make_calib(tmp_path / "calib.npz")
    common = ["build", "tiny.onnx", "--target", "tflite", "--precision", "int8", "--calib", "calib.npz", "-q"]
    args = [*common, "--out", "out", *(["--cache-dir", "cache"] if how == "flag" else [])]
    env = {"EDGEC_CACHE_DIR": "cache"}
    proc = _build_in(tmp_path, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing from TensorFlow or onnx2tf's worker (oneDNN, cpu_feature_guard, absl)
    bundle = tmp_path / "out" / "tiny-tflite-int8"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["outputs"]["logits"]["cosine"] > 0.98
    assert any((tmp_path / "cache").iterdir()), "the relative cache dir was used, under the build's directory"
    if how == "flag":  # the same build with paths as given fails in onnx2tf's worker, which runs elsewhere
        old = _build_in(tmp_path, *common, "--out", "old", "--cache-dir", "old-cache", env=env, old_paths=True)
        assert old.returncode != 0 and not (tmp_path / "old" / "tiny-tflite-int8").exists()
