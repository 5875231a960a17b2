"""Readers that turn a calibration path into raw named arrays (first axis = samples).

Accepted layouts:

1. A ``.npz`` file whose arrays are named after the model inputs.
2. A folder of ``.npz`` files of that kind (concatenated in file-name order).
3. A folder of ``.npy`` files named after the model inputs (``<input>.npy``, first axis = samples), or,
   for a single-input model, one sample per ``.npy`` file (stacked in file-name order).
4. A folder of images (png, jpg, bmp) for a single image input, with a declared :class:`ImagePreprocess`.

Every read is bounded: what a read may decode (arrays, and images after decoding) is limited to
``max_bytes`` (``--calib-max-mb``, default 2048), checked against headers and declared sizes before
anything is inflated or allocated (see :mod:`edgec.calibration.npyio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import CalibrationError, ConfigError, require
from edgec.core.types import TensorSpec

from .npyio import DEFAULT_MAX_MB, MIB, Budget, read_npy, read_npz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class ImagePreprocess:
    """How images become model input: resize, scale, normalise, colour mode and layout.

    Args:
        size: ``(height, width)`` to resize to; None takes it from a static model input.
        mean: per-channel mean subtracted after scaling.
        std: per-channel std divided after subtracting the mean.
        scale: pixel values are divided by this first (255 maps 8-bit pixels to [0, 1]).
        layout: ``"nchw"`` or ``"nhwc"``; None infers it from the model input.
        mode: ``"rgb"`` or ``"l"`` (grayscale); None infers it from the channel count.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 255.0
    layout: str | None = None
    mode: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImagePreprocess:
        """Parse ``"resize=32x32,mean=0.5/0.5/0.5,std=0.25,scale=255,layout=nchw,mode=rgb"``.

        Raises:
            ConfigError: on an unknown key or a malformed value.
        """
        fields: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            try:
                if key == "resize":
                    h, w = value.lower().split("x")
                    fields["size"] = (int(h), int(w))
                elif key in ("mean", "std"):
                    fields[key] = tuple(float(v) for v in value.split("/"))
                elif key == "scale":
                    fields["scale"] = float(value)
                elif key == "layout" and value.lower() in ("nchw", "nhwc"):
                    fields["layout"] = value.lower()
                elif key == "mode" and value.lower() in ("rgb", "l"):
                    fields["mode"] = value.lower()
                else:
                    raise ValueError(key)
            except ValueError:
                raise ConfigError(
                    f"bad --calib-preprocess item {item!r}; expected resize=HxW, mean=a/b/c, std=a/b/c, "
                    "scale=N, layout=nchw|nhwc, mode=rgb|l"
                ) from None
        return cls(**fields)  # type: ignore[arg-type]


def read_path(path: Path, inputs: tuple[TensorSpec, ...], preprocess: ImagePreprocess | None,
              max_bytes: int = DEFAULT_MAX_MB * MIB) -> dict[str, np.ndarray]:
    """Raw arrays from a calibration file or folder, decoding at most ``max_bytes`` in all.

    Raises:
        CalibrationError: when nothing usable is there, a file cannot be read, or the data would decode
            to more than ``max_bytes``.
    """
    budget = Budget(max_bytes)
    if not path.exists():
        raise CalibrationError(f"calibration path {path} does not exist; expected a .npz file or a folder")
    if path.is_file():
        if path.suffix != ".npz":
            raise CalibrationError(f"calibration file {path} is not a .npz; expected a .npz file or a folder")
        return read_npz(path, budget)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    by_suffix = {s: [p for p in files if p.suffix.lower() == s] for s in (".npz", ".npy", *IMAGE_SUFFIXES)}
    if by_suffix[".npz"]:
        return _concat([read_npz(p, budget) for p in by_suffix[".npz"]], path)
    if by_suffix[".npy"]:
        return _read_npy_folder(by_suffix[".npy"], inputs, path, budget)
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if images:
        return _read_images(images, inputs, preprocess or ImagePreprocess(), path, budget)
    raise CalibrationError(f"calibration folder {path} is empty; expected .npz, .npy or image files")


def _concat(parts: list[dict[str, np.ndarray]], folder: Path) -> dict[str, np.ndarray]:
    names = set(parts[0])
    if any(set(p) != names for p in parts):
        raise CalibrationError(f"the .npz files in {folder} do not all hold the same array names")
    try:
        return {name: np.concatenate([p[name] for p in parts]) for name in sorted(names)}
    except ValueError as exc:
        raise CalibrationError(f"the .npz files in {folder} do not concatenate: {exc}") from exc


def _read_npy_folder(files: list[Path], inputs: tuple[TensorSpec, ...], folder: Path, budget: Budget) -> dict[str, np.ndarray]:
    names = {spec.name for spec in inputs}
    if all(p.stem in names for p in files):
        return {p.stem: read_npy(p, budget) for p in files}
    if len(inputs) != 1:
        raise CalibrationError(
            f"the .npy files in {folder} are not named after the model inputs "
            f"({', '.join(sorted(names))}); one-sample-per-file folders need a single-input model"
        )
    samples = [read_npy(p, budget) for p in files]
    if len({s.shape for s in samples}) > 1:
        raise CalibrationError(f"the .npy files in {folder} have different shapes; expected one sample per file")
    return {inputs[0].name: np.stack(samples)}


def _read_images(files: list[Path], inputs: tuple[TensorSpec, ...], prep: ImagePreprocess, folder: Path,
                 budget: Budget) -> dict[str, np.ndarray]:
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CalibrationError(f"image calibration ({folder}) needs a model with one 4-D image input")
    spec = inputs[0]
    layout = prep.layout or _infer_layout(spec)
    channels = spec.shape[1] if layout == "nchw" else spec.shape[3]
    mode = prep.mode or ("l" if channels == 1 else "rgb")
    size = prep.size or _spatial_size(spec, layout, folder)
    budget.take(len(files) * size[0] * size[1] * (1 if mode == "l" else 3) * 4, f"{len(files)} calibration images in {folder}")
    image_mod = require("PIL.Image", "images", "reading calibration images")
    arrays = [_load_image(image_mod, p, mode, size, budget) for p in files]
    batch = (np.stack(arrays).astype(np.float32) / prep.scale - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    if layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return {spec.name: np.ascontiguousarray(batch, dtype=np.float32)}


def _load_image(image_mod: Any, path: Path, mode: str, size: tuple[int, int], budget: Budget) -> np.ndarray:
    try:
        with image_mod.open(path) as img:
            width, height = img.size
            budget.fits(width * height * 4, f"calibration image {path} ({width}x{height} pixels)")
            img = img.convert("L" if mode == "l" else "RGB").resize((size[1], size[0]))
            arr = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError, image_mod.DecompressionBombError) as exc:
        raise CalibrationError(f"could not read calibration image {path}: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _infer_layout(spec: TensorSpec) -> str:
    if spec.shape[1] in (1, 3):
        return "nchw"
    if spec.shape[3] in (1, 3):
        return "nhwc"
    raise CalibrationError(f"cannot tell the layout of input {spec.name!r} {spec.shape}; give --calib-preprocess layout=nchw|nhwc")


def _spatial_size(spec: TensorSpec, layout: str, folder: Path) -> tuple[int, int]:
    h, w = (spec.shape[2], spec.shape[3]) if layout == "nchw" else (spec.shape[1], spec.shape[2])
    if not isinstance(h, int) or not isinstance(w, int):
        raise CalibrationError(f"input {spec.name!r} has dynamic height/width; give --calib-preprocess resize=HxW for {folder}")
    return h, w
