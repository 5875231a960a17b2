"""Shared fixtures: an isolated stage cache, tiny ONNX models built inline, and the trained digits CNN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.models import make_calib, make_conv_onnx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["EDGEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgec-cache"))






@pytest.fixture
def conv_onnx(tmp_path: Path) -> Path:
    return make_conv_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def conv_calib(tmp_path: Path) -> Path:
    return make_calib(tmp_path / "calib.npz")




@pytest.fixture(scope="session")
def digits_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN trained once per session, saved as .pt2, with calibration and held-out data."""
    from edgec.benchmarks.zoo import digits

    folder = tmp_path_factory.mktemp("digits")
    assets = digits.prepare(folder)
    return {"pt2": assets.pt2, "calib": assets.calib, "eval": assets.eval, "dir": folder}
