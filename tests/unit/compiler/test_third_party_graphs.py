"""Graphs as third-party exporters write them, each property on a tiny model built here (issue 18): old
opsets with ``Constant`` weights, 0-d integer settings, ``If`` outputs in OpenVINO, a detector's output that
joins boxes and class probabilities, dynamic dims a stride-32 network cannot run at 16, and reduced-precision
bundles that collapsed.

The checks that build nothing; the builds are in tests/integration/compiler/test_third_party_graphs.py."""

from __future__ import annotations

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler import parity, synthetic
from edgec.core.types import TensorSpec
from edgec.runtime_shims import measure


def test_calibration_feeds_keep_a_0d_input_a_0d_array() -> None:
    specs = (TensorSpec("audio", ("batch", 64), "float32"), TensorSpec("sr", (), "int64"))
    calib = CalibrationSet.from_arrays({"audio": np.zeros((3, 1, 64), np.float32), "sr": np.full(3, 16000, np.int64)}, specs)
    feed = calib.feed(1)
    assert isinstance(feed["sr"], np.ndarray) and feed["sr"].shape == () and int(feed["sr"]) == 16000


def test_parity_judges_each_part_of_a_joined_output_on_its_own_scale() -> None:
    rng = np.random.default_rng(0)
    boxes, probs = rng.uniform(0, 320, (8, 1, 4, 50)), rng.uniform(0.3, 0.6, (8, 1, 3, 50))
    ref = np.concatenate([boxes, probs], axis=2)
    got = np.concatenate([boxes + 0.5, np.full_like(probs, 0.718)], axis=2)  # one scale of 1.26: every probability alike
    m = parity.compare_output(ref, got, {"part_axis": 1, "part_sizes": [4, 3]})
    assert m["cosine"] > 0.999  # the whole output hides it
    assert m["part_cosines"][0] > 0.999 and m["min_part_cosine"] < 0.1
    assert parity.collapsed({"output0": m}, real_inputs=True) == [
        "part 2 of 2 of output 'output0' (indices 4-6 along axis 1) has cosine 0.0000 on its own scale"]
    tol = parity.tolerance({"output0": parity.compare_output(ref, ref, {"part_axis": 1, "part_sizes": [4, 3]})}, "int8")
    assert measure.check_tolerance({"output0": m}, tol) == ["output 'output0': a part has cosine 0.000000 < 0.999000 on its own scale"]


def test_a_named_dim_takes_one_size_in_every_input() -> None:
    specs = (TensorSpec("audio", ("batch", 64), "float32"), TensorSpec("state", (2, "batch", 8), "float32"),
             TensorSpec("tokens", ("batch", "seq"), "int64"))
    feed = synthetic.synthetic_feeds(specs, 1, 16)[0]
    assert (feed["audio"].shape, feed["state"].shape, feed["tokens"].shape) == ((1, 64), (2, 1, 8), (1, 16))


def test_an_output_of_nan_is_a_collapsed_bundle_even_when_cosine_cannot_say_so() -> None:
    from edgec.compiler import parity

    nan = float("nan")
    healthy = {"y": {"cosine": 0.9999, "max_abs": 0.01}}
    assert parity.collapsed(healthy, real_inputs=True) == []
    reasons = parity.collapsed({"y": {"cosine": nan, "max_abs": nan}}, real_inputs=False)
    assert len(reasons) == 1 and "NaN or infinite" in reasons[0] and "'y'" in reasons[0]
    assert parity.collapsed({"y": {"cosine": 0.99, "max_abs": float("inf")}}, real_inputs=False)
