"""The shipped example: a small CNN trained on scikit-learn's digits (1,797 real 8x8 handwritten digits).

``train()`` fits it in a few seconds on 2 cores to ~98% held-out accuracy; ``export_pt2()`` saves it
as a ``torch.export`` program, and ``factory()`` is an edgec torch source
(``edgec.benchmarks.zoo.digits:factory``) that trains it and returns it with an example input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0


@dataclass(frozen=True)
class DigitsData:
    """Train/test split, images as float32 ``(N, 1, 8, 8)`` in [0, 1], labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data() -> DigitsData:
    """scikit-learn's digits, split 75/25 with a fixed seed, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return DigitsData(x_tr, y_tr, x_te, y_te)


def build_model() -> Any:
    """The CNN: two conv blocks and a linear classifier (about 24k parameters)."""
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Linear(64 * 2 * 2, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    return DigitsCNN()


def train(data: DigitsData | None = None, epochs: int = 30) -> Any:
    """Train the CNN deterministically (fixed seed, one thread for reproducible sums)."""
    import torch

    data = data or load_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is as fast and immune to oversubscription
    torch.manual_seed(SEED)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class scores."""
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=-1) == labels))


def export_pt2(model: Any, path: Path) -> Path:
    """Capture with ``torch.export`` (dynamic batch) and save as ``.pt2``."""
    import torch

    example = (torch.zeros(2, 1, 8, 8),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model, example, dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))
    return path


def save_splits(data: DigitsData, folder: Path, calib_samples: int = 256) -> tuple[Path, Path]:
    """Write ``calib.npz`` (training images, input name ``x``) and ``eval.npz`` (test images + labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    calib = folder / "calib.npz"
    evaluation = folder / "eval.npz"
    np.savez(calib, x=data.x_train[:calib_samples])
    np.savez(evaluation, x=data.x_test, labels=data.y_test)
    return calib, evaluation


@dataclass(frozen=True)
class DigitsAssets:
    """What :func:`prepare` wrote: the trained CNN as ``.pt2``, ``calib.npz`` and ``eval.npz``, and the data."""

    data: DigitsData
    pt2: Path
    calib: Path
    eval: Path


def prepare(folder: Path, model_name: str = "digits.pt2") -> DigitsAssets:
    """Load the data, train the CNN, save it as a ``.pt2`` and write the calibration and held-out splits."""
    data = load_data()
    folder.mkdir(parents=True, exist_ok=True)
    pt2 = export_pt2(train(data), folder / model_name)
    calib, evaluation = save_splits(data, folder)
    return DigitsAssets(data, pt2, calib, evaluation)


def factory() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """edgec torch source: a freshly trained CNN, example input and a dynamic batch dim."""
    import torch

    model = train()
    batch = torch.export.Dim("batch", min=1, max=4096)
    return model, (torch.zeros(2, 1, 8, 8),), {"dynamic_shapes": {"x": {0: batch}}, "output_names": ["logits"]}
