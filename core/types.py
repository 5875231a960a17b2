"""Core value types: tensor specs and model artifacts (handles, never loaded models)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Dim = int | str | None
"""One dimension: a fixed size, a symbolic name, or None for unknown."""

Feed = dict[str, np.ndarray]
"""Input (or output) name -> array: one inference's worth of data (``edgec.runtime_shims.base`` keeps its own copy)."""

FORMAT_ONNX = "onnx"
FORMAT_PT2 = "pt2"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    Args:
        name: tensor name as the runtime sees it.
        shape: dims, each an int, a symbolic name or None.
        dtype: numpy dtype name, e.g. ``"float32"``.
        extra: target-specific details (layout, quantization parameters).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_static(self) -> bool:
        """True when every dim is a fixed int."""
        return all(isinstance(d, int) for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        """JSON form used in manifests."""
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_json`."""
        rest = {k: v for k, v in data.items() if k not in ("name", "shape", "dtype")}
        return cls(str(data["name"]), tuple(data["shape"]), str(data["dtype"]), rest)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete shape fits this spec: fixed dims equal, symbolic dims any size, or a size within
        the dim's range where ``extra["ranges"]`` records one (``[low, high]`` or None per dim)."""
        if len(shape) != len(self.shape):
            return False
        ranges = self.dim_ranges()
        return all(d == s if isinstance(d, int) else r is None or r[0] <= s <= r[1]
                   for d, s, r in zip(self.shape, shape, ranges))

    def dim_ranges(self) -> list[tuple[int, int] | None]:
        """Per dim, the ``(low, high)`` sizes a dynamic dim takes, or None (any size); a malformed record
        (manifests are untrusted) counts as none."""
        recorded = self.extra.get("ranges")
        if not isinstance(recorded, list) or len(recorded) != len(self.shape):
            return [None] * len(self.shape)
        return [(r[0], r[1]) if isinstance(r, list) and len(r) == 2 and all(type(v) is int for v in r) else None
                for r in recorded]


@dataclass(frozen=True)
class ModelArtifact:
    """A model on disk in one format, with its interface and content digest.

    Args:
        path: file (or directory) holding the model.
        format: one of the ``FORMAT_*`` names.
        inputs: input tensor specs, in the model's order.
        outputs: output tensor specs, in the model's order.
        digest: sha256 of the content, used for cache keys and provenance.
    """

    path: Path
    format: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    digest: str

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name``.

        Raises:
            KeyError: when there is no such input.
        """
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def batch_dims(inputs: tuple[TensorSpec, ...]) -> frozenset[str]:
    """Names of the symbolic dims that are the batch: the first dim of some input (a recurrent state
    ``[2, batch, 128]`` shares its batch with ``audio [batch, 512]``)."""
    return frozenset(s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], str))


SYNTHETIC_DIM = 16
"""Size first used for dynamic non-batch dims of synthetic inputs (see :mod:`edgec.compiler.synthetic`)."""


def default_shape(spec: TensorSpec, batch: frozenset[str], spatial: int = SYNTHETIC_DIM) -> tuple[int, ...]:
    """The shared rule for the size of each dynamic dim when no data says it: 1 for the batch (the first
    dim, or a dim named like some input's first dim: :func:`batch_dims`), ``spatial`` for the others;
    fixed dims as they are. The compiler's synthetic inputs and TensorRT's default profiles both use it."""
    return tuple(d if isinstance(d, int) else (1 if i == 0 or d in batch else spatial) for i, d in enumerate(spec.shape))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: Path) -> str:
    """Hex sha256 over a file, or over a directory's relative paths and file contents in sorted order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            digest.update(str(full.relative_to(path)).encode() + b"\0")
            digest.update(sha256_file(full).encode())
    return digest.hexdigest()
