"""edgec's ``--max-drop`` search beside ``nncf.quantize_with_accuracy_control`` on real models, on openvino.

``python -m edgec.benchmarks.zoo_nncf [--models a,b] [--out DIR] [--cache DIR] [--calib-samples 32]
[--eval-samples 32] [--test-samples 32] [--max-builds 8] [--max-drop X] [--json FILE]``

For each model (default :data:`DEFAULT_MODELS`):

1. :func:`edgec.benchmarks.zoo_search.run_one` on openvino: the data (calibration seed 0, ``--eval`` seed 1,
   test seed 2), the naive INT8 build and the search (``--max-drop`` of :data:`~edgec.benchmarks.zoo_search.BUDGETS`
   with the task's own metric), each a subprocess whose wall time and peak RSS are kept, scored on the test set;
2. edgec's FP32 openvino build of the same model, then :mod:`edgec.benchmarks._nncf_control` in a subprocess
   measured the same way: nncf's accuracy control on that IR with the same calibration samples, the same eval
   samples and metric (against the FP32 IR's outputs), the same absolute budget, and the options edgec's
   naive build uses; its result scored on the same test set by the same runner.

Latency (ms): the median batch-1 call of each of the three bundles on the first test sample, the three timed
in alternating rounds so that a busy spell of the shared host falls on all of them. Size: the IR's files.
Layers kept in float are counted the same way in every IR (:func:`edgec.benchmarks._nncf_control.float_ops`:
convolutions, matmuls and recurrent ops whose data input is not fake-quantized), the naive build's count
beside them, since neither tool quantizes every such op. nncf's time is the subprocess's (reading data, the
FP32 reference on the eval set, the call, saving); it starts from an IR edgec already converted, so it does
not include the conversion that edgec's time does: the naive build's time is printed for that scale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks import _nncf_control, zoo_matrix, zoo_search
from edgec.benchmarks.zoo import data as zoo_data
from edgec.benchmarks.zoo import models as zoo

DEFAULT_MODELS = ("magika", "yolov8n_320", "resemblyzer", "silero_vad_lstm")
TARGET = "openvino"


@dataclass
class Side:
    """One tool's result on one model: test score, float layers, size, latency, wall time, peak RSS."""

    score: float | None = None
    float_ops: list[str] = field(default_factory=list)
    size_mb: float | None = None
    latency_ms: float | None = None
    seconds: float | None = None
    peak_mb: float | None = None
    exit_code: int | None = None
    error: str | None = None
    eval_score: float | None = None
    met: bool | None = None


@dataclass
class Comparison:
    """One model: naive INT8, edgec's search and nncf's accuracy control."""

    model: str
    metric: str
    budget: float
    layers: int | None = None
    naive: Side = field(default_factory=Side)
    edgec: Side = field(default_factory=Side)
    nncf: Side = field(default_factory=Side)
    edgec_row: dict[str, object] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.zoo_nncf",
                                     description="edgec --max-drop beside nncf's accuracy control on real zoo models (openvino)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    zoo_search.add_run_arguments(parser)
    args = parser.parse_args(argv)
    chosen = zoo_search.chosen_models(parser, args.models)
    rows: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="edgec-zoo-nncf-") as tmp:
        work = (args.out or Path(tmp)).resolve()
        for model in chosen:
            rows.append(compare(model, work / model.name / TARGET, args))
            print(format_table(rows[-1:]), flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print("\n" + zoo_matrix.environment() + "\n\n" + format_table(rows))
    return 0


def compare(model: zoo.ZooModel, work: Path, args: argparse.Namespace) -> Comparison:
    """edgec's naive build and search (:func:`zoo_search.run_one`), then nncf on the same data and budget."""
    row = zoo_search.run_one(model, TARGET, work, args)
    result = Comparison(model.name, model.metric, row.budget, edgec_row=asdict(row))
    result.naive = Side(row.naive, size_mb=row.naive_size_mb, latency_ms=row.naive_latency_ms,
                        seconds=row.naive_seconds, peak_mb=row.naive_peak_mb, exit_code=row.naive_exit)
    result.edgec = Side(row.searched, size_mb=row.size_mb, latency_ms=row.latency_ms, seconds=row.seconds,
                        peak_mb=row.peak_mb, exit_code=row.exit_code, error=row.error, eval_score=row.search_eval,
                        met=row.exit_code == 0)
    best = re.search(r"([0-9.]+) vs fp32", row.error or "")  # exit 7 without a bundle: the message's best
    if result.edgec.eval_score is None and best:
        result.edgec.eval_score = float(best.group(1))
    for side, name in ((result.naive, "naive"), (result.edgec, "searched")):
        xml = sorted((work / name).glob("*/model.xml"))
        side.float_ops = _nncf_control.float_ops(xml[0]) if xml else []
    if row.error and row.error.startswith("not fetched"):
        return result
    path = zoo.fetch(model, args.cache)
    result.nncf = run_nncf(model, path, work, row.budget, args.timeout)
    fp32_xml = sorted((work / "fp32").glob("*/model.xml"))
    result.layers = len(_nncf_control.float_ops(fp32_xml[0])) if fp32_xml else None
    sides = {"naive": result.naive, "searched": result.edgec, "nncf": result.nncf}
    found = {name: [work / name / "manifest.json", *sorted((work / name).glob("*/manifest.json"))] for name in sides}
    bundles = {name: next(m.parent for m in manifests if m.is_file()) for name, manifests in found.items()
               if any(m.is_file() for m in manifests)}
    for name, ms in interleaved_latency(bundles, test_feeds(model, path, 1)[0]).items():
        sides[name].latency_ms = ms
    return result


def interleaved_latency(bundles: dict[str, Path], feed: zoo_search.Feed, runs: int = 60, rounds: int = 6) -> dict[str, float]:
    """Median batch-1 latency (ms) of each bundle on ``feed``, the bundles timed in alternating rounds
    (:func:`edgec.runtime_shims.measure.interleaved_calls`) so that a busy spell of the host falls on all."""
    from edgec.core.bundle import load_manifest
    from edgec.runtime_shims.measure import interleaved_calls
    from edgec.runtime_shims.runners import open_runner
    from edgec.targets.base import TARGETS, ExportResult

    with ExitStack() as stack:
        calls: dict[str, Callable[[], Any]] = {}
        for name, bundle in bundles.items():
            manifest = load_manifest(bundle)
            target = TARGETS.get(manifest.target)()
            result = ExportResult(manifest.model_file, (), manifest.input_specs(), manifest.output_specs())
            taken = {s.name for s in result.inputs}
            bundle_feed = target.bundle_feeds([{k: v for k, v in feed.items() if k in taken}], result)[0]
            runner = stack.enter_context(open_runner(str(bundle), manifest.model_dump(mode="json"), None,
                                                     **target.runner_options))
            calls[name] = partial(runner.infer, bundle_feed)
        times = interleaved_calls(calls, runs, warmup=2, rounds=rounds)
    return {name: round(1000 * float(np.median(t)), 3) for name, t in times.items()}


def run_nncf(model: zoo.ZooModel, path: Path, work: Path, budget: float, timeout: float) -> Side:
    """edgec's FP32 IR, nncf's accuracy control on it in a measured subprocess, its bundle scored on the test set."""
    fp32 = zoo_search.run(zoo_search.command(model, path, TARGET, work, "fp32", "fp32"), work / "fp32.log", timeout)
    if not fp32.get("bundle"):
        return Side(exit_code=fp32["exit"], error=f"FP32 build failed: {fp32['error']}")
    command = [sys.executable, "-m", "edgec.benchmarks._nncf_control", str(fp32["bundle"]),
               "--calib", str(work / "calib.npz"), "--eval", str(work / "eval.npz"),
               "--metric", f"edgec.benchmarks.zoo.metrics:{model.metric}", "--max-drop", str(budget),
               "--out", str(work / "nncf")]
    done = zoo_search.run(command, work / "nncf.log", timeout)
    side = Side(seconds=done["seconds"], peak_mb=done["peak_mb"], exit_code=done["exit"], error=done["error"])
    if done.get("bundle"):
        bundle = Path(done["bundle"])
        record = done["cell"]["nncf"]
        side.eval_score, side.met = record["eval_score"], record["met"]
        feeds = test_feeds(model, path, len(next(iter(np.load(work / "eval.npz").values()))))
        reference = zoo_matrix.reference_outputs(model, path, feeds)
        side.score, side.latency_ms = zoo_search.test_score(model, bundle, feeds, reference)
        side.size_mb = zoo_search.size_mb(bundle)
        side.float_ops = _nncf_control.float_ops(bundle / "model.xml")
    return side


def test_feeds(model: zoo.ZooModel, path: Path, count: int) -> list[zoo_search.Feed]:
    """The first ``count`` test feeds :func:`zoo_search.run_one` scores on (seed 2)."""
    test = zoo_data.MAKERS[model.data](path, count, 2)
    return [{k: np.asarray(v[i]) for k, v in test.items()} for i in range(count)]


def _cells(side: Side, layers: int | None) -> list[str]:
    num = zoo_search._num
    score = num(side.score)
    if side.exit_code:
        best = score if side.score is not None else f"{num(side.eval_score)} on eval, no bundle"
        score = f"exit {side.exit_code}, best {best}"
    elif side.met is False:
        score = f"missed on eval ({num(side.eval_score)}): {score}"
    kept = "-" if side.size_mb is None else f"{len(side.float_ops)} of {'?' if layers is None else layers}"
    return [score, kept, num(side.size_mb, ".2f"),
            num(side.latency_ms, ".2f"), num(side.seconds, ".0f"), num(side.peak_mb, ".0f")]


TOOLS = (("naive", "naive int8"), ("edgec", "edgec --max-drop"), ("nncf", "nncf accuracy control"))
"""The lines of each model in the table: the :class:`Comparison` field and its label."""


def format_table(rows: list[Comparison]) -> str:
    """Markdown: per model a line for naive INT8, edgec's search and nncf's (test-set scores, 1.0 = FP32's
    answers; "exit 7, best X": the budget was not met on the eval set, X the best model on the test set)."""
    lines = ["| model | metric (max-drop) | tool | test score | layers in float | size MB | ms | time s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r.model} | {r.metric} ({r.budget}) "
        for attr, label in TOOLS:
            lines.append(head + f"| {label} | " + " | ".join(_cells(getattr(r, attr), r.layers)) + " |")
            head = "| | "
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
