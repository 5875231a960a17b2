"""Full-integer INT8 tflite bundles of small ONNX graphs, run beside onnxruntime on the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build


def int8_beside_onnxruntime(src: Path, folder: Path, shape: tuple[int, ...]) -> tuple[Path, np.ndarray, np.ndarray]:
    """The int8 tflite bundle of ``src`` (input ``x`` of NCHW ``shape``, output ``y``) calibrated on 32 standard
    normal samples (seed 1), and ``y`` from onnxruntime and from LiteRT (fed NHWC, its output as it comes) on one
    more sample: ``(bundle, want, got)``."""
    import onnxruntime as ort

    from edgec.runtime_shims.litert import LiteRtRunner

    rng = np.random.default_rng(1)
    calib = folder / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, *shape)).astype(np.float32))
    bundle = build(BuildConfig(source=str(src), target="tflite", precision="int8", calib=calib,
                               out=folder / "out", simplify=False)).bundle_dir
    x = rng.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:  # XNNPACK, as LiteRT runs it by default
        got = runner.infer({"x": np.transpose(x, (0, 2, 3, 1))})["y"]
    return bundle, want, got
