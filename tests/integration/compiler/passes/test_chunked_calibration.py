"""Entropy and percentile calibration hold one sample's intermediate tensors at a time (issue 19), and give the
ranges of onnxruntime's all-at-once calibration.

onnxruntime's histogram calibrator keeps every intermediate output of every sample before it builds its
histograms; edgec's static INT8 pass feeds it one sample per collection, over bins fixed beforehand from each
tensor's range over all samples. On the six-conv fragile model (15 calibrated tensors, 16 samples) the ranges
are bit-identical to the all-at-once ones; merging chunks without fixing the bins first (onnxruntime's own
merge) moves entropy ranges by up to 44% and percentile ones by up to 0.09%.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, create_calibrator, load_tensors_data
from onnxruntime.quantization import quantize_static as ort_quantize_static
from onnxruntime.quantization.calibrate import HistogramCalibrater

from edgec.compiler.config import BuildConfig
from edgec.compiler.passes import _chunked_calibration, quantize_static
from edgec.compiler.pipeline import build
from tests.support.models import fragile_assets, make_fragile

SAMPLES = 16


class Spy:
    """Records how many samples' outputs a histogram calibrator holds when it builds histograms from them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: list[int] = []
        clear = HistogramCalibrater.clear_collected_data

        def recording(calibrator: HistogramCalibrater) -> None:
            self.held.append(len(calibrator.intermediate_outputs))
            clear(calibrator)

        monkeypatch.setattr(HistogramCalibrater, "clear_collected_data", recording)


def fragile_feeds(folder: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    model = make_fragile(folder / "fragile.onnx")
    rng = np.random.default_rng(0)
    return model, [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * (1 + i % 5)} for i in range(SAMPLES)]


def ranges(folder: Path, model: Path, method: CalibrationMethod, options: dict[str, Any],
           feeds: list[dict[str, np.ndarray]], chunk: int | None) -> dict[str, tuple[float, ...]]:
    """Calibrated ranges: all samples in one collection (``chunk`` None, onnxruntime's way), else chunked."""
    calibrator = create_calibrator(model, _chunked_calibration.all_quantized_op_types(), calibrate_method=method,
                                   augmented_model_path=str(folder / f"augmented-{chunk}.onnx"), extra_options=options)
    if chunk is None:
        calibrator.collect_data(_chunked_calibration._Reader(feeds))
    else:
        _chunked_calibration.collect(calibrator, lambda: iter(feeds), chunk)
    return {name: tuple(float(v) for v in data.range_value) for name, data in calibrator.compute_data().items()}


@pytest.mark.parametrize(("method", "options"), [(CalibrationMethod.Entropy, {}), (CalibrationMethod.Percentile, {}),
                                                 (CalibrationMethod.Percentile, {"symmetric": False})],
                         ids=["entropy", "percentile-symmetric", "percentile"])
def test_chunked_ranges_equal_all_at_once_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 method: CalibrationMethod, options: dict[str, Any]) -> None:
    model, feeds = fragile_feeds(tmp_path)
    whole = ranges(tmp_path, model, method, options, feeds, None)
    spy = Spy(monkeypatch)
    for chunk in (1, 5):
        spy.held.clear()
        # equal, not close: every chunk adds counts to the bins one collection of all samples would use
        assert ranges(tmp_path, model, method, options, feeds, chunk) == whole
        assert max(spy.held) == chunk and sum(spy.held) == SAMPLES
    assert len(whole) == 15


def test_percentile_build_holds_one_sample_and_quantizes_as_onnxruntime(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assets = fragile_assets(tmp_path)
    spy = Spy(monkeypatch)

    def bundle(out: str) -> Iterator[tuple[str, np.ndarray]]:
        config = BuildConfig(source=str(assets["model"]), out=tmp_path / out, precision="int8", calib=assets["calib"],
                             calib_samples=SAMPLES, calib_method="percentile", cache=False,
                             allow_degraded=True)  # the fragile model collapses in INT8, by design
        model = onnx.load(str(build(config).bundle_dir / "model.onnx"))
        return ((i.name, numpy_helper.to_array(i)) for i in model.graph.initializer if i.name.endswith("_scale"))

    chunked = dict(bundle("chunked"))
    assert spy.held and max(spy.held) == 1 and sum(spy.held) == SAMPLES
    spy.held.clear()
    monkeypatch.setattr(quantize_static, "cache_option", lambda *args: contextlib.nullcontext({}))  # onnxruntime calibrates
    whole = dict(bundle("whole"))
    assert spy.held == [SAMPLES]
    assert chunked.keys() == whole.keys() and len(whole) > 10
    for name, scale in whole.items():
        np.testing.assert_array_equal(chunked[name], scale, err_msg=name)


def test_only_histogram_methods_calibrate_outside_quantize_static_in_a_folder_removed_after(tmp_path: Path) -> None:
    model, feeds = fragile_feeds(tmp_path)

    def option(method: CalibrationMethod) -> contextlib.AbstractContextManager[dict[str, str]]:
        return _chunked_calibration.cache_option(ort_quantize_static, model, lambda: iter(feeds), method, None, {}, tmp_path)

    before = set(tmp_path.iterdir())
    with option(CalibrationMethod.MinMax) as minmax:
        assert minmax == {} and set(tmp_path.iterdir()) == before
    with option(CalibrationMethod.Percentile) as percentile:
        ranges_file = Path(percentile["calibration_cache_path"])
        assert ranges_file.is_file() and ranges_file.parent.parent == tmp_path
        cached = load_tensors_data(ranges_file)
        assert cached.calibration_method == CalibrationMethod.Percentile and len(cached.data) == 15
    assert set(tmp_path.iterdir()) == before  # the ranges and the augmented model are not left in the pass's folder
