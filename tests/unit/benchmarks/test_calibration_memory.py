"""The calibration memory benchmark's comparison of a chunked bundle with the all-at-once one."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgec.benchmarks.calibration_memory import compare, max_relative_difference, table
from tests.support.models import make_conv_onnx


def test_models_compare_equal_only_when_every_initializer_is(tmp_path: Path) -> None:
    a, same, other = (make_conv_onnx(tmp_path / f"{n}.onnx", seed=s) for n, s in (("a", 0), ("same", 0), ("other", 1)))
    renamed = onnx.load(str(a))
    renamed.graph.initializer[0].name = "renamed"
    onnx.save(renamed, str(tmp_path / "renamed.onnx"))
    assert max_relative_difference(a, same) == 0.0
    assert 0.1 < max_relative_difference(a, other) < float("inf")
    assert max_relative_difference(a, tmp_path / "renamed.onnx") == float("inf")


def test_each_chunked_build_gets_its_whole_builds_peak_ratio(tmp_path: Path) -> None:
    for name in ("c", "w"):
        (tmp_path / name).mkdir()
        make_conv_onnx(tmp_path / name / "model.onnx")
    rows = [{"method": None, "samples": 0, "path": "fp32", "peak_mb": 300.0, "seconds": 2.0},
            {"method": "entropy", "samples": 32, "path": "chunked", "peak_mb": 330.0, "seconds": 17.0, "bundle": str(tmp_path / "c")},
            {"method": "entropy", "samples": 32, "path": "whole", "peak_mb": 3340.0, "seconds": 21.0, "bundle": str(tmp_path / "w")}]
    compare(rows)
    assert rows[1]["whole_over_chunked"] == 10.12 and rows[1]["max_rel_diff"] == 0.0
    assert "whole_over_chunked" not in rows[0] and "whole_over_chunked" not in rows[2]
    assert "10.12x" in table(rows).splitlines()[2]
