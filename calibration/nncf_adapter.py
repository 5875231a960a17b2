"""Adapter from a :class:`CalibrationSet` to ``nncf.Dataset``: the same frozen feeds, no second reader.

nncf's ``Dataset`` is a data source plus a transform; here the source is the set's sample indices and the
transform picks sample ``i`` out of the already validated arrays. So nncf sees exactly the feeds (order,
batch axis, dtypes) that every other pass and target sees, and the set's digest describes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgec.calibration.dataset import CalibrationSet
from edgec.core.errors import CalibrationError, require


def to_nncf_dataset(calibration: CalibrationSet, input_names: Sequence[str] | None = None) -> Any:
    """An ``nncf.Dataset`` yielding one model feed per calibration sample, in the set's order.

    Args:
        calibration: the validated calibration set.
        input_names: None yields ``{name: array}`` dicts (what OpenVINO and ONNX models take); a
            sequence yields tuples in that order (positional inputs, e.g. torch modules).

    Raises:
        MissingDependencyError: nncf is not installed.
        CalibrationError: ``input_names`` names an input the set does not hold.
    """
    nncf = require("nncf", "openvino", "INT8 calibration with nncf")
    indices = range(len(calibration))
    if input_names is None:
        return nncf.Dataset(indices, calibration.feed)
    names = tuple(input_names)
    missing = [name for name in names if name not in calibration.arrays]
    if missing:
        raise CalibrationError(
            f"calibration data {calibration.source} has no array for input(s) {', '.join(repr(m) for m in missing)}; "
            f"it holds {', '.join(repr(n) for n in calibration.arrays)}"
        )
    return nncf.Dataset(indices, lambda i: tuple(calibration.arrays[name][i] for name in names))
