"""nncf's accuracy control as ``benchmarks/zoo_nncf.py`` runs it beside edgec's search: on edgec's FP32 openvino
bundle of a small CNN built here (one convolution fragile under INT8), in a subprocess, its result a bundle
that edgec's runner scores and a row with every column of the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks import _nncf_control, zoo_matrix
from edgec.benchmarks.accuracy_control_vs_nncf import fragile_pt2
from edgec.benchmarks.zoo import metrics
from edgec.core.bundle import check_files, load_manifest
from tests.support.cli import run_cli

pytest.importorskip("nncf")
pytest.importorskip("openvino")

BUDGET = 0.005
"""Absolute drop of the mean output cosine; naive INT8 of the fragile CNN drops far more."""


def _cosine_scores(bundle: Path, feeds: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]]) -> float:
    outputs, latency_ms, _ = zoo_matrix.run_bundle(bundle, feeds, rounds=1, per_round=1)
    assert latency_ms > 0
    named = [dict(zip(r, o.values())) for r, o in zip(reference, outputs)]
    return float(np.mean(metrics.embedding_cosine(reference, named)))


@pytest.mark.slow
def test_nncf_accuracy_control_on_an_edgec_fp32_bundle_keeps_the_fragile_conv_in_float_and_meets_the_budget(
        tmp_path: Path) -> None:
    assets = fragile_pt2(tmp_path / "model")
    fp32 = run_cli("build", str(assets["pt2"]), "--target", "openvino", "--precision", "fp32", "--out",
                   str(tmp_path / "fp32"), "--json", "--no-cache")
    assert fp32.returncode == 0, fp32.stderr
    fp32_bundle = Path(json.loads(fp32.stdout)[0]["bundle"])
    done = subprocess.run([sys.executable, "-m", "edgec.benchmarks._nncf_control", str(fp32_bundle),
                           "--calib", str(assets["calib"]), "--eval", str(assets["eval"]),
                           "--metric", "edgec.benchmarks.zoo.metrics:embedding_cosine", "--max-drop", str(BUDGET),
                           "--out", str(tmp_path / "nncf")], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    [cell] = json.loads(done.stdout)  # nncf's own log lines went to stderr
    bundle, record = Path(cell["bundle"]), cell["nncf"]
    assert check_files(bundle, load_manifest(bundle)) >= 2  # the replaced IR's digests are the manifest's
    assert record["calib_samples"] == record["eval_samples"] == 64 and record["seconds"] > 0
    assert record["met"] and record["eval_score"] >= 1.0 - BUDGET
    # the third convolution (convs.2, which reads the channel the second scaled 300x) and only it stays in float
    assert [op.split("/")[0] for op in record["float_ops"]] == ["convolution_2"], record["float_ops"]
    assert record["float_ops"] == _nncf_control.float_ops(bundle / "model.xml")
    feeds = [{"x": row[None]} for row in np.load(assets["eval"])["x"]]
    reference = zoo_matrix.run_bundle(fp32_bundle, feeds, rounds=1, per_round=1)[0]
    assert _cosine_scores(bundle, feeds, reference) >= 1.0 - BUDGET - 1e-6
