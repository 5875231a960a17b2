"""edgec's ``--max-drop`` search versus the libraries' own tools for the same job (issue 19).

``python -m edgec.benchmarks.accuracy_control_vs_nncf [--fragile-drops 0.001 0.005] [--digits-drops 0.00005] [--json FILE]``

Two models, both torch programs (``.pt2``) built here: the fragile CNN (six convolutions; the second scales one
output channel up 300x and the third scales it back, so static INT8 crushes the activation the third reads:
``convs.2`` is the layer to keep in float) and the digits CNN (trained here, as the other benchmarks do).
Data: 64 (fragile, standard normal) or 256 (digits, training images) calibration samples, and 64 / 450
held-out samples the budget is measured on. Metric for both sides: mean over held-out samples of the cosine
between the INT8 model's output and the FP32 model's (``--metric cosine``), budget an absolute drop.

1. OpenVINO: ``edgec build model.pt2 --target openvino --precision int8 --calib ... --eval ... --max-drop X``
   versus ``nncf.quantize_with_accuracy_control`` on edgec's own FP32 IR of the same program (same
   calibration samples, same validation samples, the same metric as its ``validation_fn``, the preset and
   model type edgec's INT8 build picks, nncf's defaults otherwise). Printed: the metric reached on the
   held-out set (each model run here with the OpenVINO runtime in f32), layers kept in float (convolutions,
   matmuls and recurrent ops whose input is not fake-quantized, counted the same way in both IRs), wall
   time (edgec: the whole build, and a plain INT8 build for scale; nncf: the call alone, its IR already
   converted), and their ratios.
2. onnxruntime: the per-layer ranking of edgec's ``--report-layers`` (:func:`edgec.frameworks.fidelity.layer_divergence`)
   versus ``onnxruntime.quantization.qdq_loss_debug`` (augment both models with every activation as an
   output, collect, match, SQNR per activation) on the same FP32 and INT8 onnx bundles and the same 32
   held-out samples: the worst layer each names and the time each takes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgec.benchmarks import _nncf_control
from edgec.benchmarks.zoo import digits

FRAGILE_SAMPLES = 64


def fragile_pt2(folder: Path) -> dict[str, Path]:
    """The fragile CNN as a ``.pt2``, its calibration samples and held-out samples."""
    import torch
    from torch import nn

    class Fragile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(0)
            self.convs, cin = nn.ModuleList(), 3
            for i in range(6):
                conv = nn.Conv2d(cin, 8, 3, padding=1)
                w = (rng.standard_normal((8, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
                w[0] *= 300.0 if i == 1 else 1.0
                w[:, 0] /= 300.0 if i == 2 else 1.0
                conv.weight.data, cin = torch.from_numpy(w), 8
                conv.bias.data.zero_()
                self.convs.append(conv)
            self.fc = nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                x = torch.relu(conv(x))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(Fragile().eval(), (torch.zeros(1, 3, 8, 8),))
    torch.export.save(program, str(folder / "fragile.pt2"))
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.standard_normal((FRAGILE_SAMPLES, 3, 8, 8)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.standard_normal((FRAGILE_SAMPLES, 3, 8, 8)).astype(np.float32))
    return {"pt2": folder / "fragile.pt2", "calib": folder / "calib.npz", "eval": folder / "eval.npz"}


def digits_pt2(folder: Path) -> dict[str, Path]:
    """The digits CNN, trained here, its training images (calibration) and test images (held out)."""
    assets = digits.prepare(folder, "digits.pt2")
    held = np.load(assets.eval)
    np.savez(folder / "eval_x.npz", x=held["x"])  # cosine needs no labels
    return {"pt2": assets.pt2, "calib": assets.calib, "eval": folder / "eval_x.npz"}


def edgec_build(source: Path, out: Path, target: str, precision: str, **kw: Any) -> tuple[Any, float]:
    """An edgec build in this process and its wall time (stage cache off: every build converts and calibrates)."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    start = time.perf_counter()
    outcome = build(BuildConfig(source=str(source), target=target, precision=precision, out=out, force=True, cache=False, **kw))
    return outcome, time.perf_counter() - start


def ov_outputs(xml: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first output of an IR on each feed, OpenVINO CPU in f32."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [np.asarray(compiled(feed)[0]) for feed in feeds]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def nncf_accuracy_control(fp32_xml: Path, calib: Path, feeds: list[dict[str, np.ndarray]], reference: list[np.ndarray],
                          max_drop: float, out: Path) -> tuple[Path, float]:
    """``nncf.quantize_with_accuracy_control`` with the held-out cosine as its metric
    (:func:`edgec.benchmarks._nncf_control.accuracy_control`); the saved IR and the call's time."""
    import openvino as ov

    def mean_cosine(ref: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> list[float]:
        return [cosine(next(iter(c.values())), r["y"]) for r, c in zip(ref, candidate)]

    model = ov.Core().read_model(str(fp32_xml))
    quantized, seconds = _nncf_control.accuracy_control(
        model, [{"x": row[None]} for row in np.load(calib)["x"]], feeds, [{"y": r} for r in reference], mean_cosine,
        max_drop, **_nncf_control.quantize_options(model))
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out / "model.xml"))
    return out / "model.xml", seconds


def compare_openvino(name: str, assets: dict[str, Path], max_drop: float, work: Path) -> dict[str, Any]:
    """Section 1 for one model."""
    kw = {"calib": assets["calib"]}
    fp32, _ = edgec_build(assets["pt2"], work / "fp32", "openvino", "fp32")
    plain, plain_s = edgec_build(assets["pt2"], work / "plain", "openvino", "int8", allow_degraded=True, **kw)
    held = np.load(assets["eval"])["x"]
    feeds = [{"x": row[None]} for row in held]
    reference = ov_outputs(fp32.bundle_dir / "model.xml", feeds)

    def score(xml: Path) -> float:
        return float(np.mean([cosine(o, r) for o, r in zip(ov_outputs(xml, feeds), reference)]))

    row: dict[str, Any] = {"model": name, "max_drop": max_drop, "naive_int8": score(plain.bundle_dir / "model.xml"),
                           "plain_build_s": round(plain_s, 2)}
    try:
        searched, search_s = edgec_build(assets["pt2"], work / "search", "openvino", "int8", eval=assets["eval"],
                                         max_drop=max_drop, metric="cosine", **kw)
        mp = searched.manifest.model_extra["mixed_precision"]
        xml = searched.bundle_dir / "model.xml"
        row["edgec"] = {"cosine": score(xml), "float_ops": _nncf_control.float_ops(xml), "float_layers": mp["float_layers"],
                        "builds": mp["builds"], "calibration": mp.get("calibration"), "seconds": round(search_s, 2)}
    except Exception as exc:  # an unmet budget (exit 7) is a result too
        row["edgec"] = {"error": f"{type(exc).__name__}: {exc}"}
    xml, nncf_s = nncf_accuracy_control(fp32.bundle_dir / "model.xml", assets["calib"], feeds, reference, max_drop, work / "nncf")
    row["nncf"] = {"cosine": score(xml), "float_ops": _nncf_control.float_ops(xml), "seconds": round(nncf_s, 2)}
    return row


def compare_onnx_debuggers(name: str, assets: dict[str, Path], work: Path) -> dict[str, Any]:
    """Section 2 for one model: edgec's layer ranking versus onnxruntime's QDQ loss debugger."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from edgec.frameworks import fidelity, onnx_utils

    fp32, _ = edgec_build(assets["pt2"], work / "onnx-fp32", "onnx", "fp32")
    int8, _ = edgec_build(assets["pt2"], work / "onnx-int8", "onnx", "int8", calib=assets["calib"], allow_degraded=True)
    fp32_path, int8_path = fp32.bundle_dir / "model.onnx", int8.bundle_dir / "model.onnx"
    feeds = [{"x": row[None]} for row in np.load(assets["eval"])["x"][:32]]

    start = time.perf_counter()
    ranked = fidelity.layer_divergence(fp32_path, int8_path, feeds)
    edgec_s = time.perf_counter() - start

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    start = time.perf_counter()
    dbg.modify_model_output_intermediate_tensors(str(fp32_path), str(work / "aug-fp32.onnx"))
    dbg.modify_model_output_intermediate_tensors(str(int8_path), str(work / "aug-int8.onnx"))
    float_acts = dbg.collect_activations(str(work / "aug-fp32.onnx"), Reader())
    qdq_acts = dbg.collect_activations(str(work / "aug-int8.onnx"), Reader())
    errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
    ort_s = time.perf_counter() - start

    model = onnx_utils.load_model(fp32_path)
    layers = fidelity.layer_names(model)
    producer = {out: node.name for node in model.graph.node for out in node.output}
    readers = {inp: node.name for node in reversed(model.graph.node) for inp in node.input}
    local = min(errors, key=lambda t: errors[t].get("qdq_err", np.inf))  # the activation INT8 rounds worst
    return {
        "model": name, "edgec_top": ranked[0].layer, "edgec_s": round(edgec_s, 3),
        "ort_worst_activation": local, "ort_qdq_sqnr_db": round(float(errors[local]["qdq_err"]), 2),
        "ort_written_by": layers.get(producer.get(local, ""), "?"), "ort_read_by": layers.get(readers.get(local, ""), "?"),
        "ort_s": round(ort_s, 3), "tensors": len(errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragile-drops", type=float, nargs="+", default=[0.001, 0.005],
                        help="budgets (absolute drop of mean cosine) for the fragile CNN (default 0.001 0.005)")
    parser.add_argument("--digits-drops", type=float, nargs="+", default=[0.00005],
                        help="budgets for the digits CNN, whose naive INT8 drops 0.000125 (default 0.00005)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {"openvino": [], "onnx": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"fragile CNN": (fragile_pt2(work / "fragile"), args.fragile_drops),
                  "digits CNN": (digits_pt2(work / "digits"), args.digits_drops)}
        for name, (assets, drops) in models.items():
            print(f"== {name}")
            for drop in drops:
                results["openvino"].append(compare_openvino(name, assets, drop, work / name.split()[0] / f"ov-{drop}"))
            results["onnx"].append(compare_onnx_debuggers(name, assets, work / name.split()[0]))
    print(format_tables(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def format_tables(results: dict[str, list[dict[str, Any]]]) -> str:
    """The two sections as text tables with ratios."""
    lines = ["", "OpenVINO, mean cosine to FP32 on held-out samples (budget: drop <= max_drop)",
             f"{'model':12} {'budget':>7} {'naive':>7} {'edgec':>7} {'nncf':>7} {'float e/n':>9} {'edgec s':>8} {'nncf s':>7} "
             f"{'plain s':>8} {'edgec/nncf':>10}  calibration / float layers"]
    for r in results["openvino"]:
        e, n = r["edgec"], r["nncf"]
        if "error" in e:
            lines.append(f"{r['model']:12} {r['max_drop']:7.5f} {r['naive_int8']:7.4f}  nncf {n['cosine']:.4f} "
                         f"({len(n['float_ops'])} float, {n['seconds']:.1f} s); edgec failed: {e['error'][:160]}")
            continue
        cal = (e.get("calibration") or {}).get("method", "minmax")
        lines.append(f"{r['model']:12} {r['max_drop']:7.5f} {r['naive_int8']:7.4f} {e['cosine']:7.4f} {n['cosine']:7.4f} "
                     f"{len(e['float_ops']):>4}/{len(n['float_ops']):<4} {e['seconds']:8.1f} {n['seconds']:7.1f} "
                     f"{r['plain_build_s']:8.1f} {e['seconds'] / n['seconds']:9.2f}x  {cal}; edgec {e['float_layers']}, "
                     f"nncf {[op.split('/')[0] for op in n['float_ops']]}")
    lines += ["", "onnxruntime, worst layer: edgec's ranking (error added) vs qdq_loss_debug (lowest activation SQNR)",
              f"{'model':12} {'edgec top':>12} {'edgec s':>8} {'ORT worst activation':>28} {'written by':>12} "
              f"{'read by':>10} {'ORT s':>7} {'ORT/edgec':>9}"]
    for r in results["onnx"]:
        lines.append(f"{r['model']:12} {r['edgec_top']:>12} {r['edgec_s']:8.3f} {r['ort_worst_activation'][-28:]:>28} "
                     f"{r['ort_written_by']:>12} {r['ort_read_by']:>10} {r['ort_s']:7.3f} {r['ort_s'] / r['edgec_s']:8.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
