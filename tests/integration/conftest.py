"""Bundles for the bench tests: fp32 and int8 siblings of the tiny CNN, built once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.models import make_calib, make_conv_onnx


@pytest.fixture(scope="module")
def siblings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"fp32": dir, "int8": dir, "onnx": model, "calib": npz}``, the bundles side by side in one folder."""
    folder = tmp_path_factory.mktemp("bench-bundles")
    model = make_conv_onnx(folder / "tiny.onnx")
    calib = make_calib(folder / "calib.npz")
    found: dict[str, Path] = {"onnx": model, "calib": calib}
    for precision in ("fp32", "int8"):
        config = BuildConfig(source=str(model), out=folder / "bundles", precision=precision, calib=calib)
        found[precision] = build(config).bundle_dir
    return found






