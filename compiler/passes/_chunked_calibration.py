"""Histogram calibration (entropy, percentile) that holds a few samples' intermediate tensors at a time.

onnxruntime's ``HistogramCalibrater.collect_data`` keeps every intermediate output of every sample it reads
before it builds one histogram per tensor: 6.8 GB on PP-OCRv4's recognizer (1x3x48x320) at 32 samples, 0.2 GB a
sample. Its ``HistogramCollector`` merges histograms across ``collect_data`` calls, so feeding ``chunk`` samples
per call bounds memory; but a merge keeps the first chunk's bin width and adds bins as larger values arrive,
which is not the histogram one all-at-once call makes (measured on the six-conv test model: entropy ranges 44%
off, percentile 0.09%). So here a first pass takes each tensor's bounds over all samples (one sample at a time),
the collector starts from empty histograms over exactly the bins the all-at-once call would make, and every chunk
only adds counts to them. Entropy and non-symmetric percentile then count the same values into the same bins;
symmetric percentile (onnxruntime's default) bins ``|x|`` with explicit edges, where a value within rounding of
an edge could fall in the neighbouring bin (ranges within one bin, 1/2048 of the largest ``|x|``; measured
identical on the test models and on PP-OCRv4's recognizer). The price is one more FP32 inference per sample.

The ranges reach ``quantize_static`` through its ``calibration_cache_path`` (a cache file that exists replaces
its calibration; an onnxruntime without the argument calibrates as before), written in a folder removed once it
has quantized (:func:`cache_option`).
``minmax`` stays onnxruntime's: its calibrator keeps a min and a max per tensor and sample, not the tensors, and
its ``CalibMaxIntermediateOutputs`` option (unused here) drops every full chunk's samples in onnxruntime 1.32.

Inside the onnx target's :meth:`~edgec.targets.onnx.OnnxTarget.reuse` scope (a ``--max-drop`` search's candidates,
:mod:`edgec.targets._calibration_reuse`) the ranges of every method, minmax included (onnxruntime's own MinMax calibrator,
created as ``quantize_static`` creates it: :func:`ranges_file`), are calibrated for every op type once per model
file, calibration set, method and extra options (:func:`shared_key`) and reach each candidate, restricted to the
tensors its op types calibrate (:func:`shared_file`), through the same argument: one calibration per key instead
of one per candidate.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.types import sha256_file
from edgec.targets import _calibration_reuse as _onnx_reuse

Feeds = Callable[[], Iterator[dict[str, np.ndarray]]]
CALIBRATOR_OPTIONS = {"CalibTensorRangeSymmetric": "symmetric", "CalibPercentile": "percentile"}
"""The ``quantize_static`` extra options its histogram calibrators read, and their ``create_calibrator`` names."""
MINMAX_OPTIONS = {"CalibTensorRangeSymmetric": "symmetric", "CalibMovingAverage": "moving_average",
                  "CalibMovingAverageConstant": "averaging_constant", "CalibMaxIntermediateOutputs": "max_intermediate_outputs"}
"""The ``quantize_static`` extra options its MinMax calibrator reads, and their ``create_calibrator`` names (1.32)."""
UNSHARED_MINMAX = ("CalibStridedMinMax", "BlockSize", "TensorQuantOverrides")
"""Extra options under which ``quantize_static``'s MinMax calibration is not :func:`ranges_file`'s: strided
collection, or a model it first moves to another opset (``update_opset_version``); such builds share nothing."""


def ranges_file(model: Path, feeds: Feeds, method: Any, op_types: list[str] | None, extra_options: dict[str, Any],
                folder: Path, chunk: int = 1) -> Path:
    """Calibrate ``model`` with onnxruntime's calibrator for ``method`` (a ``CalibrationMethod``) and save the
    ranges where ``quantize_static(calibration_cache_path=)`` reads them: histograms ``chunk`` samples per
    collection; MinMax as ``quantize_static`` does (every sample in one ``collect_data``, the same options).

    Args:
        model: the ONNX model ``quantize_static`` will quantize.
        feeds: makes a fresh iterator over the calibration feeds (called twice).
        method: ``CalibrationMethod.Entropy``, ``CalibrationMethod.Percentile`` or ``CalibrationMethod.MinMax``.
        op_types: the op types to quantize (None: every type onnxruntime quantizes, as ``quantize_static``).
        extra_options: ``quantize_static``'s extra options (the calibrator reads :data:`CALIBRATOR_OPTIONS`,
            MinMax :data:`MINMAX_OPTIONS`).
        folder: where the augmented model and the ranges file go.
        chunk: samples per collection; peak memory holds this many samples' intermediate tensors.

    Returns:
        The ranges file (``onnxruntime.quantization.save_tensors_data`` JSON).

    Raises:
        ValueError: when ``feeds`` yields nothing (onnxruntime's "No data is collected.").
    """
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    minmax = method.name == "MinMax"
    names = MINMAX_OPTIONS if minmax else CALIBRATOR_OPTIONS
    options = {key: extra_options[name] for name, key in names.items() if name in extra_options}
    calibrator = create_calibrator(model, op_types or all_quantized_op_types(),
                                   augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=method, extra_options=options)
    if minmax:  # every sample in one collect_data, as quantize_static does: its calibrator keeps no tensors
        calibrator.collect_data(_Reader(feeds()))
    else:
        collect(calibrator, feeds, chunk)
    ranges = calibrator.compute_data()
    del calibrator
    save_tensors_data(ranges, folder / "ranges.json")
    return folder / "ranges.json"


def all_quantized_op_types() -> list[str]:
    """Every op type onnxruntime's quantizers handle: what ``quantize_static`` calibrates when given none."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted({*QLinearOpsRegistry, *QDQRegistry})


def collect(calibrator: Any, feeds: Feeds, chunk: int = 1) -> None:
    """Fill ``calibrator``'s histograms from ``feeds``, ``chunk`` samples per ``collect_data`` call, over the
    bins one call with every sample would use (see the module docstring).

    Raises:
        ValueError: when ``feeds`` yields nothing.
    """
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins, num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile, scenario=calibrator.scenario)
    absolute = collector.method == "percentile" and collector.symmetric
    bounds = tensor_bounds(calibrator, feeds(), absolute)
    if not bounds:
        raise ValueError("No data is collected.")
    collector.histogram_dict = {name: empty_histogram(*bound, bins=collector.num_bins, absolute=absolute)
                                for name, bound in bounds.items()}
    calibrator.collector = collector
    samples = feeds()
    while batch := [feed for _, feed in zip(range(chunk), samples, strict=False)]:
        calibrator.collect_data(_Reader(batch))


Bounds = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A tensor's lowest value, highest value and smallest magnitude (NaN where the magnitude was not asked)."""


def tensor_bounds(calibrator: Any, feeds: Iterable[dict[str, np.ndarray]], magnitude: bool) -> dict[str, Bounds]:
    """Per calibrated tensor, its :data:`Bounds` over ``feeds``, one sample at a time (NaN values ignored);
    the smallest magnitude only when ``magnitude``."""
    names = [o.name for o in calibrator.infer_session.get_outputs()]
    wanted = set(calibrator.tensors_to_calibrate)
    bounds: dict[str, Bounds] = {}
    for feed in feeds:
        for name, value in zip(names, calibrator.infer_session.run(None, feed), strict=True):
            if name not in wanted or not value.size:
                continue
            smallest = np.nanmin(np.abs(value)) if magnitude else value.dtype.type(np.nan)
            new = (np.nanmin(value), np.nanmax(value), smallest)
            old = bounds.get(name, new)
            bounds[name] = (min(old[0], new[0]), max(old[1], new[1]), np.fmin(old[2], new[2]))
    return bounds


def empty_histogram(low: np.ndarray, high: np.ndarray, smallest: np.ndarray, bins: int,
                    absolute: bool) -> tuple[Any, ...]:
    """The ``HistogramCollector`` entry that one collection of every sample would make for a tensor with these
    bounds, with zero counts: over ``|x|`` from ``smallest`` to its largest (``absolute``: symmetric
    percentile), else over ``[-t, t]`` with ``t = max(|low|, |high|)``."""
    if absolute:
        largest = max(abs(low), abs(high))
        hist, edges = np.histogram(np.array([smallest, largest]), bins=bins)
        return np.zeros_like(hist), edges.astype(low.dtype), low, high
    threshold = np.array(max(abs(low), abs(high)), dtype=low.dtype)
    span: Any = (-threshold, threshold)  # 0-d arrays, as onnxruntime passes them (numpy's stubs say floats)
    hist, edges = np.histogram(np.empty(0, low.dtype), bins, range=span)
    return hist, edges, low, high, threshold


class _Reader:
    """A ``CalibrationDataReader`` over a list of feeds (onnxruntime checks the ``get_next`` method only)."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@contextlib.contextmanager
def cache_option(quantize_static: Callable[..., Any], model: Path, feeds: Feeds, method: Any,
                 op_types: list[str] | None, extra_options: dict[str, Any], work_dir: Path,
                 calibration: Hashable | None = None) -> Iterator[dict[str, str]]:
    """``quantize_static``'s ``calibration_cache_path`` argument holding ranges calibrated here (in a folder of
    ``work_dir`` removed on exit) when this onnxruntime takes the argument (1.32 does) and SmoothQuant (which
    calibrates its own rewritten model) is off: for the histogram methods, one sample at a time; inside the onnx
    target's reuse scope, for every method, shared per :func:`shared_key` (``calibration``: the calibration set's
    digest and sample count; see :func:`shared_file`). Else no argument, and onnxruntime calibrates.

    Raises:
        ValueError: when ``feeds`` yields nothing.
    """
    if extra_options.get("SmoothQuant") or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        yield {}
        return
    key = shared_key(model, calibration, method, extra_options)
    if key is None and method.name == "MinMax":
        yield {}
        return
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="calibrate-") as tmp:
        path = (shared_file(key, model, feeds, method, op_types, extra_options, Path(tmp)) if key is not None
                else ranges_file(model, feeds, method, op_types, extra_options, Path(tmp)))
        yield {"calibration_cache_path": str(path)}


def shared_key(model: Path, calibration: Hashable | None, method: Any, extra_options: dict[str, Any]) -> Hashable | None:
    """What decides ``quantize_static``'s ranges (onnxruntime 1.32) besides the op types (:func:`shared_file`):
    the model file's digest, the calibration set, the method and the extra options (all of them: the
    calibrator's, and those that move the model to another opset first), never ``nodes_to_exclude``, which
    only the quantizer reads. None outside a reuse scope, without ``calibration``, or for a minmax build
    :func:`ranges_file` would not calibrate as onnxruntime does (:data:`UNSHARED_MINMAX`, opset under 10)."""
    if calibration is None or _onnx_reuse.current() is None:
        return None
    if method.name == "MinMax" and (any(extra_options.get(o) for o in UNSHARED_MINMAX) or opset(model) < 10):
        return None
    return sha256_file(model), calibration, method.name, json.dumps(extra_options, sort_keys=True, default=str)


def opset(model: Path) -> int:
    """The model's ``ai.onnx`` opset (onnxruntime converts models under 10 before calibrating them)."""
    import onnx

    imports = onnx.load(str(model), load_external_data=False).opset_import
    return next((o.version for o in imports if o.domain in ("", "ai.onnx")), 0)


def shared_file(key: Hashable, model: Path, feeds: Feeds, method: Any, op_types: list[str] | None,
                extra_options: dict[str, Any], folder: Path) -> Path:
    """The ranges of the tensors a calibrator for ``op_types`` calibrates, written in ``folder``.

    The reuse scope keeps, per ``key``, the ranges of every tensor of every op type onnxruntime quantizes (and of
    ``op_types``), calibrated once; a calibrator's ranges are per tensor (a min and a max, or a histogram, of that
    tensor alone), so another op list's are those ranges restricted to the tensors its calibrator selects. A
    ``--max-drop`` search's ``quantize_ops`` lists then share one calibration per method.
    """
    every = sorted({*all_quantized_op_types(), *(op_types or ())})
    kept = _onnx_reuse.kept((key, tuple(every)))
    if kept is None:
        kept = ranges_file(model, feeds, method, every, extra_options, folder).read_bytes()
        _onnx_reuse.keep((key, tuple(every)), kept)
    if sorted(set(op_types or all_quantized_op_types())) != every:
        wanted = calibrated_tensors(model, op_types)
        payload = json.loads(kept)
        payload["data"] = {name: value for name, value in payload["data"].items() if name in wanted}
        kept = json.dumps(payload).encode()
    (folder / "ranges.json").write_bytes(kept)
    return folder / "ranges.json"


def calibrated_tensors(model: Path, op_types: list[str] | None) -> set[str]:
    """The tensors onnxruntime's calibrators calibrate for ``op_types`` (None: every type it quantizes), chosen by
    its own ``select_tensors_to_calibrate`` on the model as a calibrator loads it."""
    from types import SimpleNamespace

    from onnxruntime.quantization.calibrate import CalibraterBase
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    selector = SimpleNamespace(op_types_to_calibrate=op_types or all_quantized_op_types())
    tensors, _ = CalibraterBase.select_tensors_to_calibrate(selector, load_model_with_shape_infer(model))  # type: ignore[arg-type]
    return set(tensors)

