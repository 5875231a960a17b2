"""MTCNN's ONet, a real pretrained CNN for the benchmarks: its weights come from the ``facenet-pytorch`` wheel
on PyPI (no model hub needed), its inputs are 48x48 windows cut from scikit-learn's bundled photos.

ONet is the last stage of the MTCNN face detector (Zhang et al. 2016): four 3x3/2x2 convolutions with PReLU
and max pooling, a 256-wide dense layer, then three heads: the box correction (4), five landmarks (10) and
the face probability (softmax over 2). 390k parameters, 1.5 MB in float32.

- Weights: ``facenet-pytorch==2.6.0``'s ``data/onet.pt`` (a state dict), the zoo's ``mtcnn_onet`` entry
  (:mod:`edgec.benchmarks.zoo.models`: ``pip download --no-deps``, hash-checked, loaded with
  ``torch.load(weights_only=True)``, nothing unpickled); the module is written after facenet-pytorch's
  definition in :mod:`edgec.benchmarks.zoo.nets`; facenet-pytorch itself is not installed.
- Inputs: what ONet sees in MTCNN, candidate windows of a photo resized to 48x48, RGB, ``(x - 127.5) / 128``,
  NCHW. Calibration windows come from ``china.jpg``, evaluation windows from ``flower.jpg``
  (``sklearn.datasets.load_sample_images``), at random positions and scales, so the evaluation is held out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SIZE = 48
INPUT_NAME = "x"
OUTPUT_NAMES = ("box", "landmarks", "face_prob")
CALIB_IMAGE, EVAL_IMAGE = 0, 1
"""Indices into ``load_sample_images().images``: china.jpg for calibration, flower.jpg for evaluation."""


def load_onet() -> Any:
    """ONet with the pretrained weights, in eval mode: the zoo's ``mtcnn_onet`` entry (the wheel fetched once and
    hash-checked by :func:`edgec.benchmarks.zoo.models.fetch`, the module written in :mod:`~edgec.benchmarks.zoo.nets`).

    Raises:
        ZooError: the wheel cannot be fetched or its weights do not match their SHA-256.
    """
    from edgec.benchmarks.zoo import nets

    return nets.mtcnn_onet()[0]


def factory() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """edgec torch source: pretrained ONet, a (2, 3, 48, 48) example, a dynamic batch and named outputs."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.from_numpy(windows(2, seed=0))
    return load_onet(), (example,), {"dynamic_shapes": {INPUT_NAME: {0: batch}}, "output_names": list(OUTPUT_NAMES)}


def windows(count: int, seed: int, image: int = CALIB_IMAGE) -> np.ndarray:
    """``count`` square windows of a sample photo at random positions and sizes (24 to 160 pixels), resized
    to 48x48 (bilinear, antialiased) and normalised as MTCNN does: float32 ``(count, 3, 48, 48)``."""
    import torch
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[image]
    rng = np.random.default_rng(seed)
    height, width = photo.shape[:2]
    crops = []
    for _ in range(count):
        side = int(rng.integers(24, 161))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(photo[top:top + side, left:left + side])).permute(2, 0, 1)[None].float()
        crops.append(torch.nn.functional.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", antialias=True)[0])
    return ((torch.stack(crops).numpy() - 127.5) / 128.0).astype(np.float32)


def save_calib(path: Path, count: int = 128) -> Path:
    """Calibration windows (china.jpg) as ``x`` in an ``.npz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{INPUT_NAME: windows(count, seed=1, image=CALIB_IMAGE)})
    return path


def eval_windows(count: int = 256) -> np.ndarray:
    """Held-out windows (flower.jpg) for fidelity."""
    return windows(count, seed=2, image=EVAL_IMAGE)
