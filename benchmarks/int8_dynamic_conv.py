"""Dynamic INT8 and convolutions: is onnxruntime's ``ConvInteger`` worth having in the default op list?

``python -m edgec.benchmarks.int8_dynamic_conv MODEL.onnx [MODEL.onnx ...] [--input NAME:DIMS] [--runs N]
[--threads T] [--json FILE]``

For each FP32 ONNX model (a zoo model's fp32 bundle, the demo CNN's), onnxruntime's ``quantize_dynamic``
(per-channel int8 weights, as the ``quantize_dynamic`` pass calls it) makes two variants: with ``Conv`` in the
op list (convolutions become ``ConvInteger``) and without (``MatMul``, ``Gemm``, ``Gather`` only: edgec's
default). All three run at batch 1 on the same thread count in alternating rounds (load from other processes
hits each alike); the table gives each variant's median latency over FP32's and its output cosine to FP32 on
the same inputs (seeded uniform [0, 1) floats, integers 0-255, a dynamic batch 1 and other dynamic dims 320: a speed measurement, not an accuracy one; the
zoo matrix measures fidelity on real data).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks.quant_vs_default import cpu_name
from edgec.runtime_shims.measure import interleaved_calls

DYNAMIC_DIM = 320
"""What a dynamic dim is set to (a text line's width; the zoo matrix builds fixed shapes)."""
VARIANTS = {"with Conv": ("MatMul", "Gemm", "Conv", "Gather"), "without Conv": ("MatMul", "Gemm", "Gather")}


def feed(session: Any, shapes: dict[str, list[int]], dim: int = DYNAMIC_DIM, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per model input: ``shapes[name]`` where given, else a dynamic batch set to 1 and other dynamic
    dims to ``dim``; floats uniform [0, 1), integers 0-255."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in session.get_inputs():
        shape = shapes.get(spec.name) or [d if isinstance(d, int) and d > 0 else 1 if i == 0 else dim
                                          for i, d in enumerate(spec.shape)]
        if "int" in spec.type:
            dtype = np.int64 if "int64" in spec.type else np.int32
            arrays[spec.name] = rng.integers(0, 256, shape).astype(dtype)
        else:
            arrays[spec.name] = rng.random(shape, dtype=np.float32)
    return arrays


def quantize(model: Path, ops: tuple[str, ...], out: Path) -> Path:
    """onnxruntime dynamic INT8 of ``model`` over ``ops`` (per-channel int8 weights)."""
    from onnxruntime import quantization as q

    logging.getLogger().setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        q.quantize_dynamic(str(model), str(out), per_channel=True, weight_type=q.QuantType.QInt8,
                           op_types_to_quantize=list(ops))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def measure(model: Path, runs: int, threads: int, work: Path, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """Latency ratio to FP32 and first-output cosine of each variant of one model."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    paths = {"fp32": model, **{k: quantize(model, ops, work / f"{model.stem}-{i}.onnx") for i, (k, ops) in enumerate(VARIANTS.items())}}
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    inputs = feed(sessions["fp32"], shapes)
    outputs = {k: s.run(None, inputs)[0] for k, s in sessions.items()}
    times = interleaved_calls({k: (lambda s=s: s.run(None, inputs)) for k, s in sessions.items()}, runs, 10, 5)
    median = {k: statistics.median(v) for k, v in times.items()}
    ops = {k: sorted({n.op_type for n in onnx.load(str(p)).graph.node} & {"ConvInteger", "MatMulInteger", "Conv"})
           for k, p in paths.items()}
    return {"model": str(model), "fp32_ms": 1000 * median["fp32"],
            "variants": {k: {"latency_ratio": median[k] / median["fp32"], "cosine": cosine(outputs["fp32"], outputs[k]),
                             "ops": ops[k]} for k in VARIANTS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.int8_dynamic_conv", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="FP32 ONNX files")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per variant (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME:DIMS",
                        help="shape of an input wherever a model has it, e.g. x:1x3x48x320 (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    shapes = {name: [int(d) for d in dims.split("x")] for name, _, dims in (s.rpartition(":") for s in args.input)}
    print(f"{cpu_name()}; batch 1, {args.threads} thread(s), {args.runs} calls per variant in alternating rounds")
    print("| model | fp32 ms | dynamic INT8 with Conv (time vs fp32, cosine) | without Conv (time vs fp32, cosine) |")
    print("|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgec-dynconv-") as tmp:
        for model in args.models:
            row = measure(model, args.runs, args.threads, Path(tmp), shapes)
            rows.append(row)
            cells = [f"{v['latency_ratio']:.2f}x, {v['cosine']:.4f}" for v in row["variants"].values()]
            print(f"| {model.parent.name or model.name} | {row['fp32_ms']:.2f} | {' | '.join(cells)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
