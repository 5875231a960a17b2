"""Peak memory of the per-layer comparison (``--report-layers``, ``edgec debug``, ``--max-drop``'s ranking)
versus the number of samples compared.

``python -m edgec.benchmarks.fidelity_memory [--samples 1 4 16 64] [--channels 32] [--depth 10] [--json FILE]``

The model is a text-recognizer-shaped conv stack (input ``1x3x48x320``, ``--depth`` 3x3 convolutions with
``--channels`` channels and ReLU; a 2.7M-parameter OCR recognizer has tensors of this size). edgec builds
its fp32 and static INT8 onnx bundles, then, for each sample count, a fresh process compares the two with
:func:`edgec.frameworks.fidelity.layer_divergence` and reports its peak resident memory (``VmHWM``). A
fresh process also runs one plain FP32 inference with both models loaded: the floor the comparison should
stay near. The comparison streams (one sample at a time, running sums per tensor), so its peak does not
grow with the sample count; before issue 19 it kept every intermediate tensor of every sample (float64)
for both models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (1, 3, 48, 320)


def make_model(path: Path, channels: int, depth: int) -> Path:
    """The conv stack (see the module docstring), seeded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", SHAPE[1]
    for i in range(depth):
        w = (rng.standard_normal((channels, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(np.zeros(channels, np.float32), f"conv{i}.bias")]
        nodes += [helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", channels
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, *SHAPE[2:]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def prepare(folder: Path, channels: int, depth: int, samples: int) -> tuple[Path, Path, Path]:
    """The fp32 and INT8 model files edgec builds, and the sample data."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    source = make_model(folder / "stack.onnx", channels, depth)
    data = folder / "samples.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((samples, *SHAPE[1:])).astype(np.float32))
    fp32 = build(BuildConfig(source=str(source), out=folder / "bundles", cache=False)).bundle_dir
    int8 = build(BuildConfig(source=str(source), precision="int8", calib=data, calib_samples=8, out=folder / "bundles", cache=False)).bundle_dir
    return fp32 / "model.onnx", int8 / "model.onnx", data


def peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, reference: Path, candidate: Path, data: Path, samples: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``compare`` or the ``inference`` floor."""
    x = np.load(data)["x"][:samples]
    feeds = [{"x": x[i:i + 1]} for i in range(len(x))]
    start = time.perf_counter()
    if mode == "compare":
        from edgec.frameworks.fidelity import layer_divergence

        layer_divergence(reference, candidate, feeds)
    else:
        import onnxruntime as ort

        sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
        for session in sessions:
            session.run(None, feeds[0])
    return {"mode": mode, "samples": len(feeds), "peak_mb": round(peak_mb(), 1), "seconds": round(time.perf_counter() - start, 2)}


def measure(mode: str, reference: Path, candidate: Path, data: Path, samples: int) -> dict[str, Any]:
    """:func:`child` in a fresh process (peak memory is per process)."""
    args = [sys.executable, "-m", "edgec.benchmarks.fidelity_memory", "--child", mode, str(reference), str(candidate), str(data), str(samples)]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.fidelity_memory",
                                     description="peak memory of edgec's per-layer comparison versus sample count")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, reference, candidate, data, samples = args.child
        print(json.dumps(child(mode, Path(reference), Path(candidate), Path(data), int(samples))))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgec-fidelity-memory-") as tmp:
        reference, candidate, data = prepare(Path(tmp), args.channels, args.depth, max(args.samples))
        rows = [measure("inference", reference, candidate, data, 1)]
        rows += [measure("compare", reference, candidate, data, n) for n in args.samples]
    print(f"{'what':<34} {'samples':>7} {'peak RSS MiB':>13} {'seconds':>8}")
    for row in rows:
        what = "one FP32+INT8 inference (floor)" if row["mode"] == "inference" else "per-layer comparison"
        print(f"{what:<34} {row['samples']:>7} {row['peak_mb']:>13.1f} {row['seconds']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
