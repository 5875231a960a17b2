"""The :class:`CalibrationSet`: named input arrays matched to a model's inputs, a fixed subset and a digest.

Like nncf's ``Dataset``, a set is a data source (a reader) plus a transform into the model's named
inputs. It is validated once, against the model's input specs, when it is made; afterwards every pass
and target sees the same frozen feeds, in the same order, with the same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.core.errors import CalibrationError
from edgec.core.types import TensorSpec

from .npyio import DEFAULT_MAX_MB, MIB
from .readers import ImagePreprocess, read_path

METHODS = ("minmax", "entropy", "percentile")
IGNORED_ARRAYS = frozenset({"labels", "label"})

Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class CalibrationSet:
    """Feeds for calibration: ``arrays[name][i]`` is sample ``i`` of input ``name``, batch axis included.

    Args:
        arrays: per input, an array of shape ``(samples, *feed_shape)``.
        source: where the data came from, for messages and provenance.
        method: calibration method name (one of :data:`METHODS`).
        digest: sha256 over names, dtypes, shapes and bytes of ``arrays``.
    """

    arrays: dict[str, np.ndarray]
    source: str
    method: str
    digest: str

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def feed(self, index: int) -> dict[str, np.ndarray]:
        """The model feed for sample ``index``: arrays, 0-d ones included (never NumPy scalars, which
        runtimes refuse)."""
        return {name: np.asarray(arr[index]) for name, arr in self.arrays.items()}

    def feeds(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds in order, at most ``limit`` of them."""
        count = len(self) if limit is None else min(limit, len(self))
        for i in range(count):
            yield self.feed(i)

    def select(self, index: Sequence[int]) -> CalibrationSet:
        """The samples at ``index``, in that order, as a set of their own (its own digest)."""
        feeds = {name: np.ascontiguousarray(arr[np.asarray(index, dtype=np.int64)]) for name, arr in self.arrays.items()}
        return CalibrationSet(feeds, self.source, self.method, _digest(feeds))

    def summary(self, bins: int = 10) -> dict[str, dict[str, object]]:
        """Per input: mean, std and a quantile histogram (inner bin edges and the share of values per
        bin) of all calibration values; a server compares live inputs with it to score drift."""
        stats: dict[str, dict[str, object]] = {}
        for name, arr in self.arrays.items():
            values = arr.astype(np.float64).ravel()
            edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
            counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
            stats[name] = {
                "mean": _round(values.mean()), "std": _round(values.std()),
                "edges": [_round(e) for e in edges], "expected": [_round(c / values.size) for c in counts],
            }
        return stats

    def to_manifest(self) -> dict[str, object]:
        """The ``calibration`` entry of a bundle manifest."""
        return {"samples": len(self), "method": self.method, "digest": self.digest, "source": Path(self.source).name}

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        inputs: tuple[TensorSpec, ...],
        *,
        source: str = "<memory>",
        method: str = "minmax",
        samples: int | None = None,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> CalibrationSet:
        """Validate raw arrays (first axis = samples) against the model inputs and freeze them.

        Raises:
            CalibrationError: on unknown or missing names, wrong shapes or dtypes, NaN/inf or no samples.
        """
        if method not in METHODS:
            raise CalibrationError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
        if transform is not None:
            arrays = transform(arrays)
        arrays = _match_names(arrays, inputs, source)
        count = _sample_count(arrays, source)
        index = _subset(count, samples, seed)
        feeds = {spec.name: _to_feeds(arrays[spec.name][index], spec, source) for spec in inputs}
        return cls(feeds, source, method, _digest(feeds))


def load_calibration(
    path: Path,
    inputs: tuple[TensorSpec, ...],
    *,
    method: str = "minmax",
    samples: int | None = None,
    preprocess: ImagePreprocess | None = None,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_MB * MIB,
    values: Mapping[str, np.ndarray] | None = None,
) -> CalibrationSet:
    """Read calibration data from ``path`` (a .npz, a folder of .npy/.npz, or an image folder).

    At most ``max_bytes`` are decoded (``--calib-max-mb``); sizes are checked before reading.

    Args:
        values: inputs set to one value in every sample (``--input-value NAME=VALUE``, as an array of the
            input's shape): the data need not hold them, and where it does the value wins. A name that is not
            an input of ``inputs`` (an input folded into the graph) is dropped from the data.

    Raises:
        CalibrationError: when the data cannot be read, would decode to more than ``max_bytes``, or does
            not match the model inputs.
    """
    given = dict(values or {})
    raw = read_path(path, tuple(s for s in inputs if s.name not in given), preprocess, max_bytes)
    transform = _with_values(given, inputs) if given else None
    return CalibrationSet.from_arrays(raw, inputs, source=str(path), method=method, samples=samples, seed=seed,
                                      transform=transform)


def _with_values(values: dict[str, np.ndarray], inputs: tuple[TensorSpec, ...]) -> Transform:
    """A transform that sets every sample of the inputs in ``values`` to their value and drops arrays named
    in ``values`` that are not inputs (see :func:`load_calibration`)."""
    names = {spec.name for spec in inputs}

    def transform(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kept = {k: v for k, v in arrays.items() if k not in values}
        count = _sample_count({k: np.asarray(v) for k, v in kept.items()}, "the calibration data") if kept else 1
        filled = {k: np.broadcast_to(v, (count, *np.shape(v))) for k, v in values.items() if k in names}
        return {**kept, **filled}

    return transform


def _match_names(arrays: dict[str, np.ndarray], inputs: tuple[TensorSpec, ...], source: str) -> dict[str, np.ndarray]:
    expected = [spec.name for spec in inputs]
    unknown = sorted(set(arrays) - set(expected) - IGNORED_ARRAYS)
    missing = [name for name in expected if name not in arrays]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(repr(m) for m in missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(repr(u) for u in unknown)}")
        raise CalibrationError(
            f"calibration data {source} does not match the model inputs: {'; '.join(parts)}; "
            f"expected arrays named {', '.join(repr(e) for e in expected)}"
        )
    return {name: np.asarray(arrays[name]) for name in expected}


def _sample_count(arrays: dict[str, np.ndarray], source: str) -> int:
    counts = {name: (arr.shape[0] if arr.ndim else 0) for name, arr in arrays.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"calibration arrays in {source} have different sample counts: {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise CalibrationError(f"calibration data {source} holds no samples (first axis is 0)")
    return count


def subset_indices(count: int, samples: int | None, seed: int = 0) -> np.ndarray:
    """The sample indices ``samples=N`` (``--calib-samples``) keeps out of ``count``: all, or a sorted seeded draw.

    Raises:
        CalibrationError: ``samples`` below 1.
    """
    return _subset(count, samples, seed)


def _subset(count: int, samples: int | None, seed: int) -> np.ndarray:
    if samples is None or samples >= count:
        return np.arange(count)
    if samples < 1:
        raise CalibrationError(f"--calib-samples must be at least 1, got {samples}")
    return np.sort(np.random.default_rng(seed).choice(count, size=samples, replace=False))


def _to_feeds(arr: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    arr = _cast(arr, spec, source)
    sample_shape = tuple(int(d) for d in arr.shape[1:])
    if spec.accepts_shape((1, *sample_shape)):
        arr = arr[:, None]
    elif not spec.accepts_shape(sample_shape):
        raise CalibrationError(
            f"calibration array {spec.name!r} in {source} has samples of shape {sample_shape}; "
            f"model input {spec.name!r} expects {_shape_text(spec)} (the array's first axis counts samples)"
        )
    if arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CalibrationError(f"calibration array {spec.name!r} in {source} holds {bad} NaN/inf values; expected finite numbers")
    return np.ascontiguousarray(arr)


def _cast(arr: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iu" and want.kind in "iu"):
        raise CalibrationError(
            f"calibration array {spec.name!r} in {source} has dtype {arr.dtype}; model input expects {want}"
        )
    return arr.astype(want)


def _shape_text(spec: TensorSpec) -> str:
    return "(" + ", ".join("?" if not isinstance(d, int) else str(d) for d in spec.shape) + ")"


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


def _digest(feeds: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(feeds):
        arr = feeds[name]
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()
