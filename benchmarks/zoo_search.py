"""``--max-drop`` on real models: naive static INT8 against the accuracy search, scored on data neither saw.

``python -m edgec.benchmarks.zoo_search [--models a,b] [--targets onnx] [--out DIR] [--cache DIR]
[--calib-samples 32] [--eval-samples 32] [--test-samples 32] [--max-builds 8] [--max-drop X] [--json FILE]``

For each model (default :data:`DEFAULT_MODELS`: the zoo models where naive INT8 on onnx loses the most of
its task metric):

1. its data maker writes ``calib.npz`` (seed 0), ``eval.npz`` (seed 1, what ``--max-drop`` measures on) and a
   test set (seed 2) that neither calibration nor the search sees;
2. ``edgec build SRC --target T --precision int8 --calib calib.npz`` (naive), then the same with
   ``--max-drop X --metric edgec.benchmarks.zoo.metrics:M --eval eval.npz`` (the task's own metric and a
   budget for it, :data:`BUDGETS`), each in a subprocess whose wall time and peak RSS (``wait4``) are kept;
3. the FP32 source model, the naive and the searched bundle are run on the test set and scored with the
   task metric (1.0 = FP32's answers).

The Markdown table gives per model and target: metric and budget, naive and searched score on the test set,
the search's own score on ``eval.npz``, layers kept in float, calibration method, target variant (onnx's
``quantize_ops`` list), candidate builds, model size
and batch-1 latency (naive / searched, the bundle's runner), search time, peak RSS and exit code (with the
first line of the error when it failed). :mod:`edgec.benchmarks.zoo_nncf` puts nncf's accuracy control
beside the openvino rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks import zoo_matrix
from edgec.benchmarks.zoo import data as zoo_data
from edgec.benchmarks.zoo import metrics as zoo_metrics
from edgec.benchmarks.zoo import models as zoo

DEFAULT_MODELS = ("ppocr_rec", "yolov8n_320", "magika", "mtcnn_onet", "crepe_tiny", "silero_vad_16k")
BUDGETS = {"ctc_char_accuracy": 0.02, "detection_agreement": 0.05, "top1_agreement": 0.02,
           "min_output_cosine": 0.01, "pitch_agreement": 0.03, "vad_decision": 0.05, "embedding_cosine": 0.01,
           "map_iou": 0.03}
"""``--max-drop`` per task metric: what a user of that task would still call the same answers."""
TIMEOUT_S = 1800
_PEAK = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")
"""Runs the build and writes its peak RSS (KiB, the largest process of its tree) where the first argument says."""
Feed = dict[str, np.ndarray]


@dataclass
class Row:
    """One model x target: naive INT8 against the search."""

    model: str
    target: str
    metric: str
    budget: float
    naive: float | None = None
    searched: float | None = None
    search_eval: float | None = None
    search_eval_fp32: float | None = None
    float_layers: list[str] = field(default_factory=list)
    calibration: str | None = None
    calibrations: dict[str, float] = field(default_factory=dict)
    variant: str | None = None
    variants: dict[str, float] = field(default_factory=dict)
    builds: int | None = None
    seconds: float | None = None
    peak_mb: float | None = None
    exit_code: int | None = None
    naive_exit: int | None = None
    error: str | None = None
    size_ratio: float | None = None
    naive_size_mb: float | None = None
    size_mb: float | None = None
    naive_latency_ms: float | None = None
    latency_ms: float | None = None
    naive_seconds: float | None = None
    naive_peak_mb: float | None = None

    @property
    def drop(self) -> float | None:
        return None if self.searched is None else 1.0 - self.searched


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`run_one` reads (``zoo_nncf`` takes the same)."""
    parser.add_argument("--out", type=Path, help="keep data and bundles here (default: a temporary folder)")
    parser.add_argument("--cache", type=Path, help="zoo download cache")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--test-samples", type=int, default=32)
    parser.add_argument("--max-builds", type=int, default=8)
    parser.add_argument("--max-drop", type=float, help="one budget for every model instead of the metric's own (BUDGETS)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S)
    parser.add_argument("--json", type=Path)


def chosen_models(parser: argparse.ArgumentParser, names: str) -> list[zoo.ZooModel]:
    """The zoo models a comma-separated ``--models`` names; an unknown one is the parser's error."""
    try:
        return [zoo.get(n.strip()) for n in names.split(",") if n.strip()]
    except KeyError as exc:
        parser.error(str(exc.args[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.zoo_search",
                                     description="naive INT8 against --max-drop on real zoo models")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--targets", default="onnx")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    chosen = chosen_models(parser, args.models)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgec-zoo-search-") as tmp:
        work = (args.out or Path(tmp)).resolve()
        for model in chosen:
            for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
                rows.append(run_one(model, target, work / model.name / target, args))
                print(format_table(rows[-1:]), flush=True)
                if args.json:
                    args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print("\n" + zoo_matrix.environment() + "\n\n" + format_table(rows))
    return 0


def run_one(model: zoo.ZooModel, target: str, work: Path, args: argparse.Namespace) -> Row:
    """Data, the naive build, the search build, and both scored on the test set."""
    row = Row(model.name, target, model.metric, getattr(args, "max_drop", None) or BUDGETS[model.metric])
    print(f"== {model.name} on {target} ({model.metric}, --max-drop {row.budget})", flush=True)
    try:
        path = zoo.fetch(model, args.cache)
    except zoo.ZooError as exc:
        row.error = f"not fetched: {exc}"
        return row
    work.mkdir(parents=True, exist_ok=True)
    maker = zoo_data.MAKERS[model.data]
    np.savez(work / "calib.npz", **maker(path, args.calib_samples, 0))
    np.savez(work / "eval.npz", **maker(path, args.eval_samples, 1))
    test = maker(path, args.test_samples, 2)
    feeds = [{k: np.asarray(v[i]) for k, v in test.items()} for i in range(args.test_samples)]
    reference = zoo_matrix.reference_outputs(model, path, feeds)
    naive_cmd = command(model, path, target, work, "naive") + ["--allow-degraded"]  # scored even when collapsed
    search_cmd = command(model, path, target, work, "searched") + [
        "--max-drop", str(row.budget), "--metric", f"edgec.benchmarks.zoo.metrics:{model.metric}",
        "--eval", str(work / "eval.npz"), "--max-builds", str(args.max_builds)]
    naive = run(naive_cmd, work / "naive.log", args.timeout)
    row.naive_exit, row.naive_seconds, row.naive_peak_mb = naive["exit"], naive["seconds"], naive["peak_mb"]
    searched = run(search_cmd, work / "searched.log", args.timeout)
    row.exit_code, row.seconds, row.peak_mb = searched["exit"], searched["seconds"], searched["peak_mb"]
    if searched["exit"] != 0:
        row.error = searched["error"]
    naive_bundle, search_bundle = naive.get("bundle"), searched.get("bundle")
    if naive_bundle:
        row.naive, row.naive_latency_ms = test_score(model, Path(naive_bundle), feeds, reference)
        row.naive_size_mb = size_mb(Path(naive_bundle))
    if search_bundle:
        row.searched, row.latency_ms = test_score(model, Path(search_bundle), feeds, reference)
        row.size_mb = size_mb(Path(search_bundle))
        read_record(row, Path(search_bundle))
        if row.naive_size_mb:
            row.size_ratio = row.size_mb / row.naive_size_mb
    return row


def command(model: zoo.ZooModel, path: Path, target: str, work: Path, name: str, precision: str = "int8") -> list[str]:
    """``edgec build`` of one bundle (INT8 unless ``precision`` says) into ``work/name``."""
    base = zoo_matrix.build_command(model, path, [target], [precision], work)
    out = base.index("--out")
    base[out + 1] = str(work / name)
    return [*base, "--no-cache", "-v"]  # timed and measured as a first build; the search's steps go to the log


def run(command: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """Run ``command``; its exit code, wall time, peak RSS (MB, the process tree it waited for), bundle and
    the first cell of its ``--json`` list (``cell``) when it printed one."""
    print("$ " + " ".join(["edgec", *command[3:]] if command[2] == "edgec.compiler" else command[2:]), flush=True)
    start = time.perf_counter()
    peak_file = log.with_suffix(".peak")
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-c", _PEAK, str(peak_file), *command], stdout=subprocess.PIPE,
                                   stderr=handle, text=True, start_new_session=True)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            stdout, _ = process.communicate()
    seconds = time.perf_counter() - start
    peak = int(peak_file.read_text()) / 1024 if peak_file.is_file() else float("nan")
    result: dict[str, Any] = {"exit": process.returncode, "seconds": round(seconds, 1), "peak_mb": round(peak),
                              "error": None, "bundle": None}
    stderr = log.read_text().strip().splitlines()
    try:
        cells = json.loads(stdout)
        result["bundle"], result["cell"] = cells[0].get("bundle"), cells[0]
        result["error"] = (cells[0].get("error") or "").splitlines()[0][:300] if cells[0].get("error") else None
    except (json.JSONDecodeError, IndexError, KeyError):
        result["error"] = (stderr or ["no output"])[-1][:300]
    if result["error"] is None and process.returncode:
        result["error"] = (stderr or ["no output"])[-1][:300]
    with open(log, "a") as handle:
        handle.write("\n--- stdout ---\n" + stdout)
    print(f"   {seconds:.0f}s, exit {process.returncode}, peak {peak:.0f} MB", flush=True)
    return result


def test_score(model: zoo.ZooModel, bundle: Path, feeds: list[Feed], reference: list[Feed]) -> tuple[float | None, float | None]:
    """The task metric of ``bundle`` on the test feeds (mean) and its median batch-1 latency (ms, 5 rounds
    of 5 calls on the first feed), both None when it cannot run here; no latency for a tensorrt bundle whose
    Q/DQ ONNX ran on onnxruntime (no GPU here), as :func:`zoo_matrix.score` does."""
    try:
        outputs, latency, runtime = zoo_matrix.run_bundle(bundle, feeds)
    except Exception as exc:  # a runtime that cannot run the bundle here: the row says so
        print(f"   not run: {exc}", flush=True)
        return None, None
    named = [dict(zip(r, o.values())) for r, o in zip(reference, outputs)]
    engine = json.loads((bundle / "manifest.json").read_text()).get("target") != "tensorrt" or runtime == "tensorrt"
    return float(np.mean(zoo_metrics.METRICS[model.metric](reference, named))), round(latency, 3) if engine else None


def read_record(row: Row, bundle: Path) -> None:
    """The manifest's ``mixed_precision`` record."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = manifest.get("mixed_precision") or {}
    row.float_layers = list(record.get("float_layers", []))
    row.builds = record.get("builds")
    row.search_eval, row.search_eval_fp32 = record.get("value"), record.get("fp32")
    calibration = record.get("calibration") or {}
    row.calibration = calibration.get("method")
    row.calibrations = dict(calibration.get("tried", {}))
    variant = record.get("variant") or {}
    row.variant = variant.get("chosen")
    row.variants = dict(variant.get("tried", {}))


def size_mb(bundle: Path) -> float:
    """MB of the bundle's model: its model file and the files that share its stem (OpenVINO's ``.bin``, an
    ONNX model's external data)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = bundle / str(manifest.get("model_file", ""))
    stem = model.name.split(".")[0]
    files = [f for f in bundle.iterdir() if f.is_file() and f.name.split(".")[0] == stem and f.suffix != ".json"]
    return round(sum(f.stat().st_size for f in files) / 1e6, 3)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[Row]) -> str:
    """The Markdown table (scores on the test set, 1.0 = FP32's answers)."""
    lines = ["| model | target | metric (budget) | naive int8 | searched int8 | search on eval | layers in float | "
             "calibration | variant | builds | size MB naive/searched | ms naive/searched | time s | peak MB | exit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        layers = f"{len(r.float_layers)}: {', '.join(r.float_layers)[:80]}" if r.float_layers else ("0" if r.exit_code == 0 else "-")
        exit_text = str(r.exit_code) + (f" ({(r.error or '')[:160]})".replace("|", "/") if r.exit_code else "")
        lines.append(f"| {r.model} | {r.target} | {r.metric} ({r.budget}) | {_num(r.naive)} | {_num(r.searched)} | "
                     f"{_num(r.search_eval, '.4f')} | {layers} | {r.calibration or '-'} | {r.variant or '-'} | {r.builds if r.builds is not None else '-'} | "
                     f"{_num(r.naive_size_mb, '.2f')}/{_num(r.size_mb, '.2f')} | "
                     f"{_num(r.naive_latency_ms, '.2f')}/{_num(r.latency_ms, '.2f')} | {_num(r.seconds, '.0f')} | {_num(r.peak_mb, '.0f')} | {exit_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
