"""``nncf.quantize_with_accuracy_control`` as the benchmarks run it beside edgec's ``--max-drop`` search.

``python -m edgec.benchmarks._nncf_control FP32_BUNDLE --calib calib.npz --eval eval.npz --metric pkg.mod:fn
--max-drop X --out DIR``

Takes edgec's own FP32 OpenVINO bundle (the IR the INT8 build quantizes), so both tools start from the same
graph, and gives nncf what edgec's search gets: every calibration sample (``subset_size``), the ``--eval``
samples as its validation set, and the task metric of the FP32 IR's outputs against the candidate's as its
``validation_fn`` (1.0 = FP32's answers, so the drop is the metric's drop), an absolute ``max_drop``, and the
``model_type``/``preset``/bias correction edgec's INT8 build picks (:func:`quantize_options`); nncf's
defaults otherwise. The result is written as a bundle (a copy of the FP32 bundle holding nncf's IR, the
manifest's file digests updated) so that the runner that scores edgec's bundles scores it too; stdout is the
JSON list ``[{"bundle": DIR, "error": null, "nncf": {...}}]`` that ``edgec build --json`` prints, the record
saying among others whether the result meets the budget on the eval set (``met``, ``eval_score``): nncf
returns its best model without an error when it does not.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]
Metric = Callable[[list[Feed], list[Feed]], list[float]]
MODEL_FILES = ("model.xml", "model.bin")

PASS_THROUGH = frozenset({"MaxPool", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Convert", "Split",
                          "VariadicSplit", "Concat"})
"""Ops between a FakeQuantize and the layer reading it that keep its values quantized (nncf puts the
FakeQuantize before a MaxPool, a flatten, a split, or on every input of a concatenation)."""
LAYER_OPS = frozenset({"Convolution", "GroupConvolution", "MatMul", "LSTMSequence", "GRUSequence", "RNNSequence",
                       "LSTMCell", "GRUCell"})
"""The ops counted as layers: the ones INT8 quantizes in OpenVINO (their data input fake-quantized)."""


DEQUANTIZE = frozenset({"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"})
"""Ops between an int8 weight constant and the layer reading it (nncf's weight decompression)."""


def float_ops(xml: Path) -> list[str]:
    """Layers (:data:`LAYER_OPS`) kept in float: neither their data input fake-quantized nor any weight int8
    (a layer with only one of the two quantized counts as quantized)."""
    import openvino as ov

    def quantized(node: Any) -> bool:
        kind = node.get_type_name()
        if kind == "Concat":
            return all(quantized(port.get_source_output().get_node()) for port in node.inputs())
        if kind in PASS_THROUGH:
            return quantized(node.input(0).get_source_output().get_node())
        return bool(kind == "FakeQuantize")

    def int8_weight(node: Any) -> bool:
        kind = node.get_type_name()
        if kind == "Constant":
            return str(node.get_element_type().get_type_name()) in {"i8", "u8", "i4", "u4"}
        if kind in DEQUANTIZE:
            return any(int8_weight(port.get_source_output().get_node()) for port in node.inputs())
        return bool(kind == "FakeQuantize")

    def kept_float(op: Any) -> bool:
        sources = [port.get_source_output().get_node() for port in op.inputs()]
        return not quantized(sources[0]) and not any(int8_weight(node) for node in sources[1:])

    model = ov.Core().read_model(str(xml))
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in LAYER_OPS
            and kept_float(op)]


def quantize_options(model: Any) -> dict[str, Any]:
    """The ``nncf.quantize`` options edgec's openvino INT8 build picks by default for ``model`` (model type,
    preset, bias correction, recurrent ops left in float), so that nncf's first model is edgec's naive INT8."""
    import nncf

    from edgec.targets._openvino_preset import auto_preset
    from edgec.targets.openvino import OpenVinoOptions, is_transformer

    kwargs: dict[str, Any] = {"fast_bias_correction": OpenVinoOptions().fast_bias_correction}
    if is_transformer(model):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    preset = auto_preset(model)
    if preset != "auto":
        kwargs["preset"] = nncf.QuantizationPreset(preset)
    try:  # the openvino target's recurrent option (float by default): recurrent ops stay out of INT8
        from edgec.targets._openvino_preset import recurrent_float
    except ImportError:  # an edgec without that option quantizes them
        return kwargs
    types, _, names = recurrent_float(model, OpenVinoOptions().recurrent)
    if types or names:
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=types, names=names, validate=False)
    return kwargs


def accuracy_control(model: Any, calib: list[Feed], feeds: list[Feed], reference: list[Feed], metric: Metric,
                     max_drop: float, **options: Any) -> tuple[Any, float]:
    """``nncf.quantize_with_accuracy_control`` on an ``ov.Model``: the quantized model and the call's seconds.

    ``validation_fn`` runs the compiled candidate on ``feeds`` and scores its outputs (by position, named as
    ``reference`` names them) against ``reference`` with ``metric``: the mean and the per-sample values.
    """
    import nncf

    items = list(zip(feeds, reference))

    def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
        pairs = list(data)
        outputs = [compiled(feed) for feed, _ in pairs]
        candidate = [dict(zip(ref, (np.asarray(out[o]) for o in compiled.outputs))) for (_, ref), out in zip(pairs, outputs)]
        values = [float(v) for v in metric([ref for _, ref in pairs], candidate)]
        return float(np.mean(values)), values

    start = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calib), nncf.Dataset(items, lambda item: item[0]), validate,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib), **options)
    return quantized, time.perf_counter() - start


def load_metric(spec: str) -> Metric:
    """``pkg.module:function`` -> the function (the ``--metric`` form of ``edgec build``)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def bundle_feeds(bundle: Path, data: Path) -> list[Feed]:
    """One feed per sample of ``data`` holding the inputs the bundle's model takes (a folded input value is
    not one), a batch axis of 1 added to samples one dimension short of the input (as calibration does)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    ranks = {spec["name"]: len(spec.get("shape") or ()) for spec in manifest["inputs"]}
    arrays = np.load(data)
    count = len(arrays[next(iter(ranks))])

    def sample(name: str, i: int) -> np.ndarray:
        value = np.asarray(arrays[name][i])
        return value[None] if value.ndim + 1 == ranks[name] else value

    return [{name: sample(name, i) for name in ranks} for i in range(count)]


def ir_outputs(xml: Path, feeds: list[Feed]) -> list[Feed]:
    """The IR's outputs on each feed (OpenVINO CPU in f32, as nncf compiles its candidates), by output name."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [next(iter(sorted(o.get_names())), f"output{i}") for i, o in enumerate(compiled.outputs)]
    results = [compiled(feed) for feed in feeds]
    return [{n: np.asarray(r[o]) for n, o in zip(names, compiled.outputs)} for r in results]


def write_bundle(fp32_bundle: Path, model: Any, out: Path) -> Path:
    """A copy of ``fp32_bundle`` in ``out`` holding ``model`` (int8 weights as they are, no f16 compression)
    instead of its IR, with the manifest's size and sha256 of the replaced files updated."""
    import openvino as ov

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(fp32_bundle, staging)
    ov.save_model(model, str(staging / MODEL_FILES[0]), compress_to_fp16=False)
    manifest_path = staging / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest.get("files", []):
        path = staging / entry["path"]
        if entry["path"] in MODEL_FILES and path.is_file():
            entry["size"], entry["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def run(fp32_bundle: Path, calib: Path, eval_data: Path, metric: Metric, max_drop: float, out: Path) -> dict[str, Any]:
    """nncf's accuracy control on one FP32 bundle; what it kept in float and how long the call took."""
    import openvino as ov

    xml = fp32_bundle / MODEL_FILES[0]
    feeds = bundle_feeds(fp32_bundle, eval_data)
    reference = ir_outputs(xml, feeds)
    model = ov.Core().read_model(str(xml))
    options = quantize_options(model)
    calib_feeds = bundle_feeds(fp32_bundle, calib)
    quantized, seconds = accuracy_control(model, calib_feeds, feeds, reference, metric, max_drop, **options)
    write_bundle(fp32_bundle, quantized, out)
    candidate = [dict(zip(ref, got.values())) for ref, got in zip(reference, ir_outputs(out / MODEL_FILES[0], feeds))]
    eval_score = float(np.mean(metric(reference, candidate)))
    return {"seconds": round(seconds, 1), "float_ops": float_ops(out / MODEL_FILES[0]),
            "eval_score": round(eval_score, 6), "met": bool(eval_score >= 1.0 - max_drop - 1e-9),
            "options": {k: str(v) for k, v in options.items()}, "eval_samples": len(feeds),
            "calib_samples": len(calib_feeds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.benchmarks._nncf_control",
                                     description="nncf.quantize_with_accuracy_control on an edgec FP32 openvino bundle")
    parser.add_argument("bundle", type=Path, help="edgec's FP32 openvino bundle")
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--metric", required=True, help="pkg.module:function(reference, candidate) -> per-sample scores")
    parser.add_argument("--max-drop", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    saved = os.dup(1)
    os.dup2(2, 1)  # nncf logs to stdout: its lines go to stderr, stdout stays the JSON result
    try:
        record = run(args.bundle, args.calib, args.eval, load_metric(args.metric), args.max_drop, args.out)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    print(json.dumps([{"bundle": str(args.out), "error": None, "nncf": record}]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
