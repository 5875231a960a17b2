"""Which op types of onnxruntime's static INT8 list hurt a model? One type left out, or added to ``compute``, at a time.

``python -m edgec.benchmarks.int8_op_ablation [--models ppocr_rec,silero_vad_16k] [--eval-samples 16] [--time]
[--out DIR] [--cache DIR]``

For each zoo model (:mod:`edgec.benchmarks.zoo.models`): ``edgec build --precision fp32`` gives the model the INT8
passes start from (opset upgraded, settings folded, shapes fixed); its data maker gives 32 calibration samples
(seed 0) and a held-out set (seed 1). onnxruntime's ``quantize_static`` (QDQ, per-channel symmetric int8
weights, uint8 MinMax activations, as the ``quantize_static`` pass calls it) then quantizes it with:

- ``onnxruntime``: its default op list; ``compute``: Conv, ConvTranspose, Gemm, MatMul;
- ``edgec default``: the onnx target's default (its list less ``STATIC_FLOAT_OPS``, less ``float_readers_only``);
- ``- OP``: onnxruntime's list without one op type present in the model;
- ``compute + OP``: compute with one more op type.

Each variant is scored with the model's task metric against the FP32 model on the held-out inputs (1.0 = FP32's
answers) and the lowest of its outputs' mean cosines (what the collapse gate judges). ``--time`` adds batch-1 latency on one thread over FP32's, in alternating
rounds. The table is what chose the onnx target's default (``targets/onnx.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks import zoo_matrix
from edgec.benchmarks.zoo import data as zoo_data
from edgec.benchmarks.zoo import metrics as zoo_metrics
from edgec.benchmarks.zoo import models as zoo

Feed = dict[str, np.ndarray]


def variants(model_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Variant name -> (op types to quantize, nodes to exclude)."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from edgec.targets.onnx import COMPUTE_OPS, STATIC_FLOAT_OPS, float_readers_only

    full = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
    model = onnx.load(str(model_path))
    present = sorted({n.op_type for n in model.graph.node} & set(full))
    ours = [op for op in full if op not in STATIC_FLOAT_OPS]
    found = {"onnxruntime": (full, []), "compute": (list(COMPUTE_OPS), []),
             "edgec default": (ours, float_readers_only(model, set(ours)))}
    found.update({f"- {op}": ([o for o in full if o != op], []) for op in present})
    found.update({f"compute + {op}": ([*COMPUTE_OPS, op], []) for op in present if op not in COMPUTE_OPS})
    return found


def quantize(source: Path, out: Path, calib: list[Feed], ops: list[str], exclude: list[str]) -> Path:
    """onnxruntime static QDQ INT8 of ``source`` as the ``quantize_static`` pass runs it (minmax)."""
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter(calib)

        def get_next(self) -> Feed | None:
            return next(self.feeds, None)

    logging.getLogger().setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        q.quantize_static(str(source), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=ops,
                          nodes_to_exclude=exclude or None, calibrate_method=q.CalibrationMethod.MinMax,
                          extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out


def session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def ablate(model: zoo.ZooModel, work: Path, eval_samples: int, cache: Path | None, timed: bool) -> list[str]:
    """The table rows of one model."""
    path = zoo.fetch(model, cache)
    work.mkdir(parents=True, exist_ok=True)
    maker = zoo_data.MAKERS[model.data]
    np.savez(work / "calib.npz", **maker(path, 32, 0))
    cells = zoo_matrix.build(model, path, ["onnx"], ["fp32"], work, zoo.cache_dir(cache))
    if cells[0].status != "built" or not cells[0].bundle:
        return [f"| {model.name} | fp32 not built: {cells[0].error} | | |"]
    fp32 = Path(cells[0].bundle) / "model.onnx"
    reference_session = session(fp32)
    names = [i.name for i in reference_session.get_inputs()]
    outputs = [o.name for o in reference_session.get_outputs()]
    calib_arrays, held = dict(np.load(work / "calib.npz")), maker(path, eval_samples, 1)
    calib = [{k: np.asarray(calib_arrays[k][i]) for k in names} for i in range(32)]
    feeds = [{k: np.asarray(held[k][i]) for k in names} for i in range(eval_samples)]
    reference = [dict(zip(outputs, reference_session.run(outputs, f))) for f in feeds]
    rows, paths = [], {"fp32": fp32}
    for index, (label, (ops, exclude)) in enumerate(variants(fp32).items()):
        paths[label] = quantize(fp32, work / f"variant{index}.onnx", calib, ops, exclude)
        got = [dict(zip(outputs, session(paths[label]).run(outputs, f))) for f in feeds]
        score = float(np.mean(zoo_metrics.METRICS[model.metric](reference, got)))
        worst = min(float(np.mean([cosine(r[o], g[o]) for r, g in zip(reference, got)])) for o in outputs)
        rows.append([model.name, label, f"{score:.3f}", f"{worst:.4f}"])
        print(f"   {label}: {score:.3f}", flush=True)
    latency = _latency(paths, feeds[0]) if timed else {}
    return ["| " + " | ".join([*row, latency.get(row[1], "-")]) + " |" for row in rows]


def _latency(paths: dict[str, Path], feed: Feed) -> dict[str, str]:
    """Batch-1 latency of every variant over FP32's, one thread, alternating rounds."""
    from edgec.runtime_shims.measure import interleaved_calls

    sessions = {k: session(p, threads=1) for k, p in paths.items()}
    times = interleaved_calls({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}, 30, 3, 5)
    base = statistics.median(times["fp32"])
    return {k: f"{statistics.median(v) / base:.2f}x" for k, v in times.items() if k != "fp32"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks.int8_op_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="ppocr_rec,silero_vad_16k", help="comma-separated zoo names")
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--time", action="store_true", help="also time every variant (one thread)")
    parser.add_argument("--out", type=Path, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--cache", type=Path, help=f"zoo download cache (default ${zoo.CACHE_ENV} or ~/.cache/edgec/zoo)")
    args = parser.parse_args(argv)
    try:
        chosen = [zoo.get(n.strip()) for n in args.models.split(",") if n.strip()]
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    rows = ["| model | op list | task metric vs FP32 | worst output's cosine | latency vs FP32 |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="edgec-ablation-") as tmp:
        for model in chosen:
            print(f"== {model.name}", flush=True)
            rows += ablate(model, (args.out or Path(tmp)) / model.name, args.eval_samples, args.cache, args.time)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
