"""edgec's openvino INT8 bundle versus plain ``ovc`` + ``nncf.quantize`` defaults, on the two real models.

``python -m edgec.benchmarks.openvino_vs_default [--runs N] [--threads T] [--out DIR] [--json FILE]``

Both sides start from the same ``torch.export`` program (``model.pt2``) and the same calibration arrays:

- **edgec**: ``edgec build model.pt2 --target openvino --precision int8 --calib calib.npz`` (direct PyTorch
  route, ``nncf.quantize`` with the model type chosen for the model, the bundle's runtime options),
  run through the bundle's runner (``OpenVinoRunner``: f32 inference precision, LATENCY hint);
- **default**: ``ovc model.pt2`` (the CLI, every option at its default: fp16-compressed weights), then
  ``nncf.quantize(model, nncf.Dataset(feeds))`` with every option at its default, saved with
  ``openvino.save_model`` defaults and compiled with OpenVINO's CPU defaults (read from the Core: bf16
  inference precision where the CPU has it, LATENCY hint); run through the same runner class so both
  pay the same Python overhead;
- **fp32**: edgec's fp32 bundle, for reference.

Latency: batch 1, same thread count for all, a warm-up, then alternating rounds of timed calls so that
load from other processes hits every variant alike; the reported number is the median over all calls.
Fidelity: digits, held-out top-1 accuracy; MiniLM, mean cosine to the torch FP32 embeddings over the
fixed evaluation sentences. One run; the host and versions are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.zoo import digits, minilm
from edgec.core.types import Feed

VARIANTS = ("fp32", "edgec", "default")
WARMUP = 10
ROUNDS = 5



@dataclass
class Row:
    """One model: latency (ms), fidelity and IR size per variant."""

    model: str
    fidelity_name: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, float] = field(default_factory=dict)
    size_bytes: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """edgec INT8 latency over the default INT8 latency (target: at most 1.0)."""
        return self.latency_ms["edgec"] / self.latency_ms["default"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.openvino_vs_default",
                                     description="edgec openvino INT8 vs plain ovc + nncf.quantize defaults")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 calls per variant (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads for every variant (default 2)")
    parser.add_argument("--out", type=Path, help="keep models and bundles here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--models", default="digits,minilm", help="comma-separated subset of digits,minilm")
    args = parser.parse_args(argv)
    if args.runs < ROUNDS:
        parser.error(f"--runs must be at least {ROUNDS}")
    from edgec.core.errors import EdgecError

    benches = {"digits": bench_digits, "minilm": bench_minilm}
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="edgec-ovd-") as tmp:
            work = args.out or Path(tmp)
            rows = [benches[name](work / name, args.runs, args.threads) for name in args.models.split(",")]
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    print()
    print(environment(args.threads))
    print(format_table(rows, args.runs))
    print(f"\ntotal time {time.perf_counter() - start:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(args.threads), "rows": [asdict(r) for r in rows]},
                                        indent=2, sort_keys=True) + "\n")
    return 0


def environment(threads: int) -> str:
    """Host CPU, cores and versions."""
    import nncf
    import openvino as ov

    cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    return (f"host: {cpu}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
            f"openvino {ov.__version__.split('-')[0]}, nncf {nncf.__version__}; {threads} inference threads")


def bench_digits(work: Path, runs: int, threads: int) -> Row:
    """The digits CNN, trained here; fidelity is held-out accuracy."""
    print("training the digits CNN")
    assets = digits.prepare(work, "model.pt2")
    pt2, calib, evaluation = assets.pt2, assets.calib, assets.eval
    row = Row("digits CNN", "top-1 accuracy")
    models = prepare(pt2, calib, work, row)
    held_out = np.load(evaluation)

    def fidelity(infer: Callable[[Feed], Feed]) -> float:
        return digits.accuracy(first(infer({"x": held_out["x"]})), held_out["labels"])

    sample = {"x": held_out["x"][:1]}
    return measure(row, models, fidelity, sample, runs, threads)


def bench_minilm(work: Path, runs: int, threads: int) -> Row:
    """MiniLM sentence embeddings; fidelity is mean cosine to torch FP32 on the evaluation sentences."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    module, example, extras = minilm.factory()
    print("capturing MiniLM with torch.export")
    program = torch.export.export(module, example, dynamic_shapes=extras["dynamic_shapes"])
    pt2 = work / "model.pt2"
    torch.export.save(program, str(pt2))
    calib = minilm.save_calib(work / "calib.npz")
    reference = minilm.embed_torch(module, minilm.SENTENCES)
    row = Row("MiniLM-L6 embeddings", "mean cosine to FP32")
    models = prepare(pt2, calib, work, row)

    def fidelity(infer: Callable[[Feed], Feed]) -> float:
        rows = [first(infer(minilm.tokenize([s])))[0] for s in minilm.SENTENCES]
        return float(minilm.cosine_rows(reference, np.stack(rows)).mean())

    sample = minilm.tokenize(["A man is riding a white horse on an enclosed ground."], max_length=32)
    return measure(row, models, fidelity, sample, runs, threads)


def prepare(pt2: Path, calib: Path, work: Path, row: Row) -> dict[str, tuple[Path, dict[str, Any] | None]]:
    """``{variant: (model.xml, runner config or None for the bundle's own)}`` for the three variants."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    models: dict[str, tuple[Path, dict[str, Any] | None]] = {}
    for precision, key in (("fp32", "fp32"), ("int8", "edgec")):
        print(f"$ edgec build {pt2.name} --target openvino --precision {precision} --calib {calib.name}")
        outcome = build(BuildConfig(source=str(pt2), target="openvino", precision=precision, calib=calib,
                                    out=work / "bundles", force=True))
        models[key] = (outcome.bundle_dir / "model.xml", None)
        row.details[key] = outcome.manifest.target_details.get("quantization", {})
    models["default"] = (default_int8(pt2, calib, work / "default"), default_compile_config())
    row.details["default"] = {"ovc": "defaults", "nncf.quantize": "defaults", "compile": default_compile_config()}
    for key, (xml, _) in models.items():
        row.size_bytes[key] = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return models


def default_int8(pt2: Path, calib: Path, work: Path) -> Path:
    """``ovc model.pt2`` then ``nncf.quantize`` with every option at its default, saved with defaults."""
    import nncf
    import openvino as ov

    work.mkdir(parents=True, exist_ok=True)
    ovc = Path(sys.executable).with_name("ovc")
    command = [str(ovc), str(pt2), "--output_model", str(work / "ovc.xml")]
    print("$ " + " ".join([ovc.name, pt2.name, "--output_model", "ovc.xml"]))
    subprocess.run(command, check=True, capture_output=True, text=True)
    arrays = np.load(calib)
    names = [name for name in arrays.files if name not in ("labels", "label")]
    feeds = [{name: arrays[name][i:i + 1] for name in names} for i in range(len(arrays[names[0]]))]
    print(f"nncf.quantize(model, nncf.Dataset({len(feeds)} feeds))")
    quantized = nncf.quantize(ov.Core().read_model(str(work / "ovc.xml")), nncf.Dataset(feeds))
    ov.save_model(quantized, str(work / "model.xml"))
    return work / "model.xml"


def default_compile_config() -> dict[str, Any]:
    """OpenVINO's own CPU defaults for the two properties edgec's runner sets."""
    import openvino as ov

    core = ov.Core()
    precision = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    hint = str(core.get_property("CPU", "PERFORMANCE_HINT")).rsplit(".", 1)[-1]
    return {"INFERENCE_PRECISION_HINT": {"bf16": "bf16", "f16": "f16"}.get(precision.get_type_name(), "f32"),
            "PERFORMANCE_HINT": hint}


def measure(row: Row, models: dict[str, tuple[Path, dict[str, Any] | None]], fidelity: Callable[[Callable[[Feed], Feed]], float],
            sample: Feed, runs: int, threads: int) -> Row:
    """Fidelity once per variant, then interleaved latency rounds over all variants."""
    from edgec.runtime_shims.openvino import OpenVinoRunner

    runners = {key: OpenVinoRunner(str(xml), threads=threads, config=config).activate() for key, (xml, config) in models.items()}
    try:
        for key, runner in runners.items():
            row.fidelity[key] = round(fidelity(runner.infer), 6)
            row.details.setdefault("compiled", {})[key] = str(runner.property("INFERENCE_PRECISION_HINT"))
        row.latency_ms = latencies(runners, sample, runs)
    finally:
        for runner in runners.values():
            runner.deactivate()
    print(f"{row.model}: latency ms {row.latency_ms}, {row.fidelity_name} {row.fidelity}")
    return row


def latencies(runners: dict[str, Any], sample: Feed, runs: int) -> dict[str, float]:
    """Median batch-1 latency (ms) per runner over ``runs`` calls, in alternating rounds."""
    for runner in runners.values():
        for _ in range(WARMUP):
            runner.infer(sample)
    times: dict[str, list[float]] = {key: [] for key in runners}
    per_round = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for key, runner in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                runner.infer(sample)
                times[key].append(time.perf_counter() - start)
    return {key: round(statistics.median(values) * 1e3, 4) for key, values in times.items()}


def first(outputs: Feed) -> np.ndarray:
    """The model's only output, whatever the converter named it."""
    return next(iter(outputs.values()))


def format_table(rows: list[Row], runs: int) -> str:
    """A Markdown table: latency, ratio, fidelity and size per model."""
    lines = [
        "| model | fp32 ms | edgec int8 ms | default int8 ms | edgec/default | fidelity | fp32 | edgec int8 | default int8 | "
        "edgec MB | default MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat, fid, size = r.latency_ms, r.fidelity, r.size_bytes
        lines.append(f"| {r.model} | {lat['fp32']:.3f} | {lat['edgec']:.3f} | {lat['default']:.3f} | {r.ratio:.2f} | "
                     f"{r.fidelity_name} | {fid['fp32']:.4f} | {fid['edgec']:.4f} | {fid['default']:.4f} | "
                     f"{size['edgec'] / 1e6:.2f} | {size['default'] / 1e6:.2f} |")
    lines.append(f"\nlatency: median of {runs} batch-1 calls per variant in {ROUNDS} alternating rounds")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
