"""Where an openvino ``--max-drop`` search's time goes, with and without sharing work between its candidates.

``python -m edgec.benchmarks.openvino_search_reuse [--max-drop 0.005] [--json FILE] [-- build SOURCE --target openvino ...]``

Runs one ``edgec build ... --max-drop`` twice in this process (after a plain INT8 build that loads every
library): once with :meth:`~edgec.targets.openvino.OpenVinoTarget.reuse` off (every candidate converts the model
and runs nncf's statistics collection, as before issue 19's change) and once on (one conversion and one
collection per model, calibration set, method and options: :mod:`edgec.targets._openvino_reuse`). Both are the
real exports measured with the OpenVINO runtime. Printed per run: the search's wall time, candidates built, the
seconds per candidate export, the time in each phase (nested phases are inside ``export``; ``stats``
inside ``nncf.quantize``) and how many conversions and statistics collections ran, then the ratios, and whether both chose the same layers with the same score.

Default model: the fragile CNN of :mod:`edgec.benchmarks.accuracy_control_vs_nncf` (64 calibration and 64
held-out samples, ``--metric cosine``). After ``--``, any ``edgec build`` command line instead (a zoo model:
the command :mod:`edgec.benchmarks.zoo_search` prints, with its ``calib.npz`` and ``eval.npz``).
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
    "export": ("edgec.compiler.mixed_precision", "TargetProbe._make"),
    "convert": ("edgec.targets.openvino", "convert_sized"),
    "nncf.quantize": ("edgec.targets._openvino_stats", "quantize"),
    "stats": ("nncf.quantization.algorithms.pipeline", "collect_statistics"),
    "quantizer setup": ("nncf.quantization.algorithms.min_max.algorithm", "MinMaxQuantization.find_quantization_setup"),
    "bias correction": ("nncf.quantization.algorithms.fast_bias_correction.algorithm", "FastBiasCorrection.apply"),
    "save": ("edgec.targets.openvino", "_save"),
    "run": ("edgec.compiler.mixed_precision", "TargetProbe.run"),
    "rank": ("edgec.compiler.mixed_precision", "TargetProbe.rank"),
}
"""Phase -> (module, function or Class.method) whose calls are timed."""


def run_build(config: Any, reuse: bool) -> dict[str, Any]:
    """One build with the search's sharing on or off: its phases, builds and what it chose."""
    from edgec.targets.openvino import OpenVinoTarget

    return _search_timing.run_build(config, reuse, OpenVinoTarget, PHASES)


def configs(args: argparse.Namespace, work: Path) -> tuple[Any, Any]:
    """The search build and a plain INT8 build of the same source (which loads every library first)."""
    from edgec.compiler.config import BuildConfig

    if args.build:
        from edgec.compiler import cli

        parsed = cli.parse_args(args.build)
        parsed.target, parsed.precision = (parsed.target or ["onnx"])[0], (parsed.precision or ["fp32"])[0]  # as cmd_build
        search = cli._config(parsed)
    else:
        from edgec.benchmarks.accuracy_control_vs_nncf import fragile_pt2

        assets = fragile_pt2(work / "fragile")
        search = BuildConfig(source=str(assets["pt2"]), target="openvino", precision="int8", calib=assets["calib"],
                             eval=assets["eval"], max_drop=args.max_drop, metric="cosine", out=work / "out")
    search = search.model_copy(update={"force": True, "cache": False})
    warm = search.model_copy(update={"max_drop": None, "out": work / "warm", "eval": None, "allow_degraded": True})
    return search, warm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=0.005, help="the fragile CNN's budget (default 0.005)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("build", nargs=argparse.REMAINDER, help="after --: an edgec build command line (build SOURCE ...)")
    args = parser.parse_args(argv)
    args.build = [a for a in args.build if a != "--"]
    from edgec.compiler.pipeline import build

    with tempfile.TemporaryDirectory() as tmp:
        search, warm = configs(args, Path(tmp))
        build(warm)
        runs = {"before (no reuse)": run_build(search, reuse=False), "after (reuse)": run_build(search, reuse=True)}
    print(format_table(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


def format_table(runs: dict[str, dict[str, Any]]) -> str:
    """Phases per run, per-candidate export time and the ratios."""
    names = list(runs)
    phases = list(dict.fromkeys(p for r in runs.values() for p in r["phases"]))
    lines = [f"{'':22}" + "".join(f"{n:>20}" for n in names) + f"{'ratio':>10}"]
    for phase in ["build_s", *[p for p in phases if not p.endswith(" calls")], "per export", "convert calls", "stats calls"]:
        values = [r["build_s"] if phase == "build_s" else per_export(r) if phase == "per export" else r["phases"].get(phase, 0)
                  for r in runs.values()]
        ratio = f"{values[0] / values[1]:9.2f}x" if values[1] else f"{'-':>10}"
        lines.append(f"{phase:22}" + "".join(f"{v:20.2f}" for v in values) + ratio)
    for name, r in runs.items():
        lines.append(f"{name}: " + (f"float layers {r['float_layers']}, score {r['value']}, {r['builds']} builds"
                                    if "error" not in r else r["error"]))
    same = [{k: r.get(k) for k in ("float_layers", "value", "error")} for r in runs.values()]
    lines.append(f"same choice: {same[0] == same[1]}")
    return "\n".join(lines)


def per_export(run: dict[str, Any]) -> float:
    """Seconds per export: the search's candidates and the FP32 reference."""
    builds = run.get("builds", 0) + 1
    return round(run["phases"].get("export", 0.0) / builds, 2)


if __name__ == "__main__":
    raise SystemExit(main())
