"""Paths are made absolute once, at the edge (BuildConfig, the cache's environment variable): converters that run
in a worker with another working directory (onnx2tf) still find the cache, the model and the data.

The checks that build nothing; the builds are in tests/integration/compiler/test_paths.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_relative_cache_env_var_is_taken_against_the_current_directory(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edgec.compiler.cache import default_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEC_CACHE_DIR", "rel-cache")
    assert default_cache_dir() == tmp_path / "rel-cache"
