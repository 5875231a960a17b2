"""The demo's model: a wider, deeper CNN on scikit-learn's digits upsampled to 32x32.

The shipped :mod:`~edgec.benchmarks.zoo.digits` CNN runs in about 10 µs, too little work for precision or
runtime to matter: quantize/dequantize overhead and per-call dispatch dominate, and INT8 shows as slower.
This one does about 150 M multiply-accumulates per image (six 3x3 conv layers, 64-128-256 channels,
1.15 M parameters, 4.6 MB at fp32), so one batch-1 inference costs about a millisecond on one x86 core and
INT8 kernels (AVX-512 VNNI, AVX-VNNI, ARM dot product) have real work to speed up.

Same data as :mod:`digits` (1,797 real 8x8 handwritten digits, the same stratified 75/25 split), each image
resized to 32x32 by bilinear interpolation (half-pixel centres, as ``torch.nn.functional.interpolate`` with
``align_corners=False``). ``train()`` reaches 99-100% held-out accuracy in 4 epochs, about 15 s on 2 free
cores (training in channels-last layout, which oneDNN runs about 20% faster on CPU than NCHW).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.zoo import digits

SEED = 0
SIZE = 32
"""Side of the upsampled images."""
WIDTHS = (64, 128, 256)
"""Channels of the three conv stages (two 3x3 convs each, then a 2x2 max pool)."""
EPOCHS = 4


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` bilinear interpolation weights with half-pixel centres (edges clamped)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.clip(np.floor(centres).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    frac = np.clip(centres - lo, 0.0, 1.0)
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Resize ``(N, 1, h, w)`` images to ``(N, 1, size, size)`` float32 by separable bilinear interpolation."""
    rows = resize_matrix(images.shape[-2], size)
    cols = resize_matrix(images.shape[-1], size)
    return np.einsum("ih,nchw,jw->ncij", rows, images.astype(np.float64), cols).astype(np.float32)


def load_data(size: int = SIZE) -> digits.DigitsData:
    """The :func:`digits.load_data` split, images upsampled to ``(N, 1, size, size)``."""
    data = digits.load_data()
    return digits.DigitsData(upsample(data.x_train, size), data.y_train, upsample(data.x_test, size), data.y_test)


def build_model(widths: tuple[int, ...] = WIDTHS) -> Any:
    """VGG-style stages (conv-BN-ReLU twice, then max pool), global average pool and a linear classifier."""
    import torch
    from torch import nn

    layers: list[Any] = []
    channels = 1
    for width in widths:
        for c_in in (channels, width):
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        channels = width

    class DigitsWideCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(channels, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    return DigitsWideCNN()


def train(data: digits.DigitsData | None = None, epochs: int = EPOCHS, threads: int | None = None) -> Any:
    """Train deterministically (fixed seed; AdamW with a one-cycle learning rate, batches of 64).

    Args:
        data: the upsampled split; loaded when None.
        epochs: passes over the 1,347 training images.
        threads: torch intra-op threads while training; None keeps torch's default (one per core).
    """
    import torch

    data = data or load_data()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = build_model().to(memory_format=torch.channels_last)  # oneDNN's fast layout for CPU training
    try:
        _fit(model, data, epochs)
    finally:
        torch.set_num_threads(previous)
    return model.to(memory_format=torch.contiguous_format).eval()


def _fit(model: Any, data: digits.DigitsData, epochs: int) -> None:
    import torch

    x = torch.from_numpy(data.x_train).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(data.y_train)
    steps = -(-len(x) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=max(1, epochs * steps))
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            schedule.step()


def export_pt2(model: Any, path: Path, size: int = SIZE) -> Path:
    """Capture with ``torch.export`` (dynamic batch, input ``x`` of ``(batch, 1, size, size)``) and save as ``.pt2``."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model, (torch.zeros(2, 1, size, size),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))
    return path


def prepare(folder: Path, model_name: str = "digits-wide.pt2", epochs: int = EPOCHS) -> digits.DigitsAssets:
    """Load and upsample the data, train the CNN, save it as a ``.pt2`` and write ``calib.npz``/``eval.npz``."""
    data = load_data()
    folder.mkdir(parents=True, exist_ok=True)
    pt2 = export_pt2(train(data, epochs), folder / model_name)
    calib, evaluation = digits.save_splits(data, folder)
    return digits.DigitsAssets(data, pt2, calib, evaluation)
