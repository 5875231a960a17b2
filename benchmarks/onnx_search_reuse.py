"""Where an onnx ``--max-drop`` search's time goes, with and without sharing calibration between its candidates.

``python -m edgec.benchmarks.onnx_search_reuse [--max-drop 0.005] [--models yolov8n_320,...] [--cache DIR]
[--json FILE] [-- build SOURCE --target onnx ...]``

Runs one ``edgec build ... --max-drop`` twice in this process (after a plain INT8 build that loads every
library): once with :meth:`~edgec.targets.onnx.OnnxTarget.reuse` off (every candidate's ``quantize_static``
calibrates over every sample, as before) and once on (one calibration per model file, calibration set, method,
op types and options: :mod:`edgec.targets._calibration_reuse`). Both are onnxruntime's real quantization measured with
onnxruntime. Printed per run: the search's wall time, the seconds per candidate (``quantize``: the static INT8
pass), the time in each phase (``collect ...`` and ``quantize_static`` are inside ``quantize``; onnxruntime's
``quantize_static`` includes its own calibration when nothing is shared) and how many calibrators were created,
then the ratios, and whether both chose the same layers with the same score.

Default model: the fragile CNN of :mod:`edgec.benchmarks.accuracy_control_vs_nncf` (64 calibration and 64
held-out samples, ``--metric cosine``). ``--models``: zoo models (:mod:`edgec.benchmarks.zoo_search`'s data,
metric and budget; ``EDGEC_ZOO_CACHE`` or ``--cache`` for the downloads). After ``--``, any ``edgec build``
command line instead.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from edgec.benchmarks import _search_timing

PHASES = {
    "search": ("edgec.compiler.mixed_precision", "search"),
    "candidate": ("edgec.compiler.search_probe", "TargetProbe.build"),
    "quantize": ("edgec.compiler.passes.quantize_static", "QuantizeStatic.run_impl"),
    "mixed outputs": ("edgec.compiler.passes.quantize_static", "QuantizeStatic._mixed_outputs"),
    "quantize_static": ("onnxruntime.quantization", "quantize_static"),
    "collect minmax": ("onnxruntime.quantization.calibrate", "MinMaxCalibrater.collect_data"),
    "collect histogram": ("onnxruntime.quantization.calibrate", "HistogramCalibrater.collect_data"),
    "histogram bounds": ("edgec.compiler.passes._chunked_calibration", "tensor_bounds"),
    "calibrator (ort)": ("onnxruntime.quantization.quantize", "create_calibrator"),
    "calibrator (edgec)": ("onnxruntime.quantization", "create_calibrator"),
    "run": ("edgec.compiler.search_probe", "TargetProbe.run"),
    "rank": ("edgec.compiler.search_probe", "TargetProbe.rank"),
}
"""Phase -> (module, function or Class.method) whose calls are timed and counted."""


def run_build(config: Any, reuse: bool) -> dict[str, Any]:
    """One build with the search's sharing on or off: its phases, builds and what it chose."""
    from edgec.targets.onnx import OnnxTarget

    return _search_timing.run_build(config, reuse, OnnxTarget, PHASES)


def fragile_config(work: Path, max_drop: float) -> Any:
    """The fragile CNN's search build."""
    from edgec.benchmarks.accuracy_control_vs_nncf import fragile_pt2
    from edgec.compiler.config import BuildConfig

    assets = fragile_pt2(work / "fragile")
    return BuildConfig(source=str(assets["pt2"]), target="onnx", precision="int8", calib=assets["calib"],
                       eval=assets["eval"], max_drop=max_drop, metric="cosine", out=work / "out")


def zoo_command(name: str, work: Path, cache: Path | None) -> list[str]:
    """The ``edgec build`` arguments of :mod:`edgec.benchmarks.zoo_search`'s onnx search of zoo model ``name``,
    its calibration and eval data written in ``work``."""
    import numpy as np

    from edgec.benchmarks import zoo_search
    from edgec.benchmarks.zoo import data as zoo_data
    from edgec.benchmarks.zoo import models as zoo

    model = zoo.get(name)
    path = zoo.fetch(model, cache)
    work.mkdir(parents=True, exist_ok=True)
    maker = zoo_data.MAKERS[model.data]
    np.savez(work / "calib.npz", **maker(path, 32, 0))
    np.savez(work / "eval.npz", **maker(path, 32, 1))
    command = zoo_search.command(model, path, "onnx", work, "searched")
    return [*command[3:], "--max-drop", str(zoo_search.BUDGETS[model.metric]), "--metric",
            f"edgec.benchmarks.zoo.metrics:{model.metric}", "--eval", str(work / "eval.npz"), "--max-builds", "8"]


def command_config(argv: list[str]) -> Any:
    """The build config of an ``edgec build`` command line (first target and precision, as ``cmd_build``)."""
    from edgec.compiler import cli

    parsed = cli.parse_args(argv)
    parsed.target, parsed.precision = (parsed.target or ["onnx"])[0], (parsed.precision or ["fp32"])[0]
    return cli._config(parsed)


def compare(search: Any, work: Path) -> dict[str, dict[str, Any]]:
    """A plain INT8 build that loads every library, then the search without and with sharing."""
    from edgec.compiler.pipeline import build

    search = search.model_copy(update={"force": True, "cache": False})
    build(search.model_copy(update={"max_drop": None, "out": work / "warm", "eval": None, "allow_degraded": True}))
    return {"before (no reuse)": run_build(search, reuse=False), "after (reuse)": run_build(search, reuse=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=0.005, help="the fragile CNN's budget (default 0.005)")
    parser.add_argument("--models", help="comma-separated zoo models instead of the fragile CNN")
    parser.add_argument("--cache", type=Path, help="zoo download cache (default: EDGEC_ZOO_CACHE)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("build", nargs=argparse.REMAINDER, help="after --: an edgec build command line (build SOURCE ...)")
    args = parser.parse_args(argv)
    build_args = [a for a in args.build if a != "--"]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if build_args:
            results["command"] = compare(command_config(build_args), work / "command")
        for name in [n.strip() for n in (args.models or "").split(",") if n.strip()]:
            results[name] = compare(command_config(zoo_command(name, work / name, args.cache)), work / name)
        if not results:
            results["fragile"] = compare(fragile_config(work, args.max_drop), work)
    for name, runs in results.items():
        print(f"== {name}\n{format_table(runs)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def format_table(runs: dict[str, dict[str, Any]]) -> str:
    """Phases per run, per-candidate time and the ratios."""
    names = list(runs)
    phases = list(dict.fromkeys(p for r in runs.values() for p in r["phases"] if not p.endswith(" calls")))
    lines = [f"{'':22}" + "".join(f"{n:>20}" for n in names) + f"{'ratio':>10}"]
    for phase in ["build_s", *phases, "per candidate", "calibrations"]:
        values = [row(r, phase) for r in runs.values()]
        ratio = f"{values[0] / values[1]:9.2f}x" if values[1] else f"{'-':>10}"
        lines.append(f"{phase:22}" + "".join(f"{v:20.2f}" for v in values) + ratio)
    for name, r in runs.items():
        lines.append(f"{name}: " + (f"float layers {r['float_layers']}, score {r['value']}, {r['builds']} builds"
                                    if "error" not in r else r["error"]))
    same = [{k: r.get(k) for k in ("float_layers", "value", "error", "steps")} for r in runs.values()]
    lines.append(f"same choice and steps: {same[0] == same[1]}")
    return "\n".join(lines)


def row(run: dict[str, Any], phase: str) -> float:
    """One cell: the wall time, a phase's seconds, seconds per static INT8 pass, or calibrators created."""
    phases = run["phases"]
    if phase == "build_s":
        return float(run["build_s"])
    if phase == "per candidate":
        return round(phases.get("quantize", 0.0) / max(phases.get("quantize calls", 0), 1), 2)
    if phase == "calibrations":
        return float(phases.get("calibrator (ort) calls", 0) + phases.get("calibrator (edgec) calls", 0))
    return float(phases.get(phase, 0.0))


if __name__ == "__main__":
    raise SystemExit(main())
