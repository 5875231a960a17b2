"""Shared fixtures: an isolated stage cache, tiny ONNX models built inline, and the trained digits CNN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["EDGEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgec-cache"))


def make_conv_onnx(path: Path, batch: int | str = "batch", seed: int = 0) -> Path:
    """A tiny CNN (Conv-Relu-GlobalAveragePool-Gemm) on input ``x`` of shape (batch, 3, 8, 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    fc = numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32) * 0.3, "fc")
    fcb = numpy_helper.from_array(np.zeros(10, np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [w, b, fc, fcb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_calib(path: Path, count: int = 32, name: str = "x", shape: tuple[int, ...] = (3, 8, 8), seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, **{name: rng.standard_normal((count, *shape)).astype(np.float32)})
    return path


@pytest.fixture
def conv_onnx(tmp_path: Path) -> Path:
    return make_conv_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def conv_calib(tmp_path: Path) -> Path:
    return make_calib(tmp_path / "calib.npz")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edgec.compiler`` as a user would run ``edgec``."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgec.compiler", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


@pytest.fixture(scope="session")
def digits_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN trained once per session, saved as .pt2, with calibration and held-out data."""
    from edgec.benchmarks.zoo import digits

    folder = tmp_path_factory.mktemp("digits")
    assets = digits.prepare(folder)
    return {"pt2": assets.pt2, "calib": assets.calib, "eval": assets.eval, "dir": folder}
