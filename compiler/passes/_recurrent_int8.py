"""LSTM weights in INT8 for onnxruntime: ``LSTM`` -> ``com.microsoft.DynamicQuantizeLSTM``.

onnxruntime's static quantizer has no LSTM, and edgec's dynamic INT8 leaves it out, so INT8 models kept their
LSTMs in float: Resemblyzer (three LSTMs and one small Gemm) was 0.97x its FP32 size. onnxruntime's dynamic
quantizer turns an ``LSTM`` into ``DynamicQuantizeLSTM``: per-row int8 ``W`` and ``R``, the input and hidden state quantized at run time inside the
kernel, the cell state and gates in float. It is an onnxruntime contrib op: only the onnx target (whose runtime is
onnxruntime) asks for it; TensorRT's QDQ ONNX and the other targets never get one.

Rules (:func:`quantize_lstms`):
1. Candidates are the main graph's ``LSTM`` nodes with ``layout`` 0 (the quantizer drops the attribute) that
   ``nodes_to_exclude`` does not name; one whose weights are not initializers is skipped by the quantizer and
   reported float. ``GRU`` and ``RNN`` have no quantized kernel and stay float. A quantized LSTM keeps its name.
2. With ``min_cosine``, each candidate is quantized alone and the model run on the calibration feeds: an LSTM
   whose outputs' mean cosine to the float-LSTM model falls under ``min_cosine`` stays float (all do without data).
   Measured on Resemblyzer: the first LSTM, which reads the raw mel power frames, alone takes the embedding to
   cosine 0.76 (0.92 with only its weights rounded to int8, in float: its input weights carry most of it); the other
   two alone 0.9996; those two together 0.9992 (zoo mean; 0.9964 worst), 0.42x FP32 size, 0.52x time.
3. The candidates that passed are quantized together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler.metrics import cosine
from edgec.compiler.passes._mixed_outputs import name_nodes
from edgec.compiler.passes._subgraph_weights import subgraphs
from edgec.compiler.passes.base import PassContext, PassOptions
from edgec.core.errors import require
from edgec.frameworks import onnx_utils

PROBE_SAMPLES = 16
"""Calibration samples each candidate LSTM is checked on (rule 2)."""
NOT_CONSTANT = "its weights are not initializers, which onnxruntime's quantizer needs"


class RecurrentOptions(PassOptions):
    """The LSTM options of the static and dynamic INT8 passes (onnxruntime's quantizers have no static LSTM, and
    edgec's dynamic op list leaves it out)."""

    recurrent: Literal["float", "dynamic"] = "float"
    """``dynamic``: LSTMs become onnxruntime's contrib ``DynamicQuantizeLSTM`` (int8 weights); ``float`` keeps them."""
    recurrent_min_cosine: float | None = 0.995
    """With ``recurrent="dynamic"``, an LSTM whose quantization alone takes the outputs' mean cosine (calibration
    set) under this stays float, as every LSTM does without calibration data; None quantizes every LSTM."""


def quantize_recurrent(path: Path, ctx: PassContext, opts: RecurrentOptions,
                       exclude: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    """:func:`quantize_lstms` on the INT8 pass's output at ``path`` when ``opts.recurrent`` asks for it; else
    ``path`` unchanged and no stats."""
    if opts.recurrent != "dynamic":
        return path, {}
    return quantize_lstms(path, ctx.work_dir, exclude, ctx.calibration, opts.recurrent_min_cosine, ctx.log)


def lstm_candidates(model: Any, exclude: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Rule 1: the LSTM names to quantize, and those kept float with the reason."""
    names, kept = [], {}
    for node in model.graph.node:
        if node.op_type != "LSTM" or node.name in exclude:
            continue
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        if layout:
            kept[node.name] = "layout=1 (batch first), which DynamicQuantizeLSTM does not take"
        else:
            names.append(node.name)
    return names, kept


def quantize_lstms(path: Path, work_dir: Path, exclude: tuple[str, ...], calibration: CalibrationSet | None,
                   min_cosine: float | None, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """The model at ``path`` with its LSTMs as ``DynamicQuantizeLSTM`` (see the module docstring), saved in
    ``work_dir`` (``path`` itself when none is quantized), and the stats: ``dynamic`` (the LSTMs quantized) and
    ``float`` (name -> why it stayed float)."""
    model = onnx_utils.load_model(path)
    if not any(n.op_type == "LSTM" for n in model.graph.node):
        return path, {}
    if name_nodes(model):
        path = work_dir / "lstm_named.onnx"
        onnx_utils.save_model(model, path)
    names, kept = lstm_candidates(model, exclude)
    if min_cosine is not None and calibration is None:
        kept.update({n: "no calibration data to check it with (recurrent=int8 quantizes it unchecked)" for n in names})
        names = []
    elif names and calibration is not None and min_cosine is not None:
        log(f"checking {len(names)} LSTM(s) in INT8 one at a time on {min(len(calibration), PROBE_SAMPLES)} samples")
        scores = {name: _alone(path, work_dir, name, names, exclude, calibration) for name in names}
        kept.update({n: f"alone, output cosine {c:.4f} < {min_cosine}" for n, c in scores.items() if c < min_cosine})
        names = [n for n in names if n not in kept]
    out = work_dir / "lstm_int8.onnx"
    made = dynamic_lstm(path, out, (*exclude, *kept)) if names else []
    kept.update({n: NOT_CONSTANT for n in names if n not in made})
    stats: dict[str, Any] = {"dynamic": made, "float": kept} if kept else {"dynamic": made}
    return (out if made else path), stats


def dynamic_lstm(source: Path, out: Path, exclude: tuple[str, ...]) -> list[str]:
    """The model at ``source`` with its ``LSTM`` nodes not in ``exclude`` replaced by the ``DynamicQuantizeLSTM``
    nodes onnxruntime's ``quantize_dynamic`` makes of them (per-row weights, the LSTM's name), saved at ``out``;
    the names of the nodes replaced (onnxruntime skips an LSTM whose weights are not initializers, and one whose
    quantized node reads a tensor that only the quantizer's other rewrites make is left as it was: silero-vad
    16k's LSTM, whose weights a ``Squeeze`` makes).

    Only those nodes and their weights are taken from the quantizer's model: its dynamic mode also rewrites every
    ``Gemm`` as ``Transpose``/``MatMul``/``Add``, which would break the static pass's QDQ Gemms apart. The INT8
    passes that call it have quieted onnxruntime's logging already.
    """
    q = require("onnxruntime.quantization", "onnx", "INT8 quantization")
    q.quantize_dynamic(str(source), str(out), per_channel=True, weight_type=q.QuantType.QInt8,
                       op_types_to_quantize=["LSTM"], nodes_to_exclude=list(exclude) or None)
    onnx_utils.sort_file(out)  # the quantizer's order ignores values an If/Loop body reads (silero-vad 16k)
    model, quantized = onnx_utils.load_model(source), onnx_utils.load_model(out)
    made = {n.name.removesuffix("_quant"): n for n in quantized.graph.node if n.op_type == "DynamicQuantizeLSTM"}
    weights = {i.name: i for i in quantized.graph.initializer}
    known = {"", *weights, *(i.name for i in model.graph.initializer), *(i.name for i in model.graph.input),
             *(o for n in model.graph.node for o in n.output)}
    made = {k: n for k, n in made.items() if all(i in known for i in n.input)}  # reads nothing the quantizer added
    replaced = []
    for index, node in enumerate(model.graph.node):
        if node.op_type == "LSTM" and node.name in made:
            replaced.append(node.name)
            made[node.name].name = node.name  # named as before: --max-drop and the layer tools go by node names
            model.graph.node[index].CopyFrom(made[node.name])
    taken = {i.name for i in model.graph.initializer}
    needed = {name for node in made.values() for name in node.input}
    model.graph.initializer.extend(weights[n] for n in sorted(needed - taken) if n in weights)
    _drop_unused(model)
    if made and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.add(domain="com.microsoft", version=1)
    onnx_utils.save_model(model, out)
    return replaced


def _drop_unused(model: Any) -> None:
    """Remove the main graph's initializers no node reads (the float LSTM weights replaced)."""
    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    for sub in subgraphs(model.graph):  # what If/Loop bodies read from the main graph
        read |= {name for inner in sub.node for name in inner.input}
    unused = [i for i in model.graph.initializer if i.name not in read]
    for init in unused:
        model.graph.initializer.remove(init)


def _alone(path: Path, work_dir: Path, name: str, names: list[str], exclude: tuple[str, ...],
           calibration: CalibrationSet) -> float:
    """Rule 2: the lowest mean output cosine over the calibration feeds with only ``name`` quantized (1.0 when the
    quantizer skips it: the final quantization then reports it)."""
    probe = work_dir / "lstm_probe.onnx"
    if not dynamic_lstm(path, probe, (*exclude, *(n for n in names if n != name))):
        return 1.0
    return output_cosine(path, probe, calibration)


def output_cosine(reference: Path, candidate: Path, calibration: CalibrationSet) -> float:
    """The lowest over float outputs of the mean per-sample cosine of ``candidate`` to ``reference``."""
    ort = require("onnxruntime", "onnx", "INT8 quantization")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
    scores: dict[str, list[float]] = {}
    for index, feed in enumerate(calibration.feeds()):
        if index == PROBE_SAMPLES:
            break
        ref, got = (dict(zip([o.name for o in s.get_outputs()], s.run(None, feed))) for s in sessions)
        for key, value in ref.items():
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                scores.setdefault(key, []).append(cosine(value, got[key]))
    return min((float(np.mean(v)) for v in scores.values()), default=1.0)
