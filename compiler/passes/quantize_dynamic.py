"""Dynamic INT8: int8 weights, activations quantized at run time from their observed range.

No calibration data needed. Per-channel weights by default: on MiniLM this lifts the mean cosine to
FP32 from 0.968 (onnxruntime's per-tensor default) to 0.993, at the same latency. ``Gather`` is
quantized too when its table is a constant (embedding tables; onnxruntime skips computed data): without
it MiniLM's 47 MB word-embedding table stays float and the INT8 file is 0.65x FP32 instead of 0.25x,
with the same cosine (0.9944 vs 0.9941, measured).

Convolutions stay float unless ``op_types`` names ``Conv``: onnxruntime runs a dynamically quantized Conv as
``ConvInteger``, which has no fast x86 kernel: 3.9-12.8x slower than FP32 on six models at one thread
(``benchmarks/int8_dynamic_conv.py``), and on PP-OCRv4's recognizer cosine 0.47 to FP32. A model left with nothing to
quantize is refused with one line pointing to static INT8, which quantizes convolutions well.

``recurrent="dynamic"`` then turns the LSTMs ``op_types`` left float into onnxruntime's ``DynamicQuantizeLSTM``,
each checked alone on the calibration set, when one is given, against ``recurrent_min_cosine``
(see :mod:`edgec.compiler.passes._recurrent_int8`); the stats list them under ``recurrent``.
"""

from __future__ import annotations

import logging
from typing import Any

from edgec.compiler.passes._recurrent_int8 import RecurrentOptions, quantize_recurrent
from edgec.compiler.passes._subgraph_weights import require_quantized
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import UnsupportedError, require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


class DynamicOptions(RecurrentOptions):
    per_channel: bool = True
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
    reduce_range: bool = False
    """Use 7-bit weights; only needed on CPUs without VNNI, where 8-bit products can saturate."""
    nodes_to_exclude: tuple[str, ...] = ()


class QuantizeDynamic(Pass):
    """onnxruntime ``quantize_dynamic`` with per-channel int8 weights."""

    name = "quantize_dynamic"
    Options = DynamicOptions
    uses_calibration = True
    """Only the LSTM checks (``recurrent``) read it; the rest of the pass needs no data."""

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        quantization = require("onnxruntime.quantization", "onnx", "INT8 quantization")
        opts: DynamicOptions = self.options  # type: ignore[assignment]
        out_path = ctx.work_dir / "model.onnx"
        logging.getLogger().setLevel(logging.ERROR)
        quantization.quantize_dynamic(
            str(artifact.path),
            str(out_path),
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=list(opts.op_types),
            nodes_to_exclude=with_gemm_aliases(artifact.path, opts.nodes_to_exclude) or None,
        )
        onnx_utils.sort_file(out_path)  # the quantizer's order ignores values an If/Loop body reads
        out_path, recurrent = quantize_recurrent(out_path, ctx, opts, opts.nodes_to_exclude)
        require_quantized(out_path)
        model = onnx_utils.load_model(out_path)
        require_weights_quantized(model, opts.op_types, len(recurrent.get("float", {})))
        out = onnx_utils.artifact_from_file(out_path)
        stats: dict[str, Any] = {"mode": "dynamic", "ops": onnx_utils.op_counts(model)}
        return PassResult(out, True, {**stats, "recurrent": recurrent} if recurrent else stats)


def with_gemm_aliases(path: Any, names: tuple[str, ...]) -> list[str]:
    """``names`` with the name onnxruntime gives each named ``Gemm`` once it has rewritten it, ``<name>_MatMul``.

    onnxruntime's dynamic quantizer (1.32) replaces every ``Gemm`` with a ``MatMul`` (and an ``Add`` of its bias)
    before it reads ``nodes_to_exclude``, so a ``Gemm`` excluded by its own name was quantized anyway: every
    ``--max-drop`` candidate that kept a ``Linear`` layer float built the all-quantized model again (torch 2.13
    exports ``nn.Linear`` as ``Gemm``; USE multilingual v3 on onnx: 12 candidates, one model)."""
    if not names:
        return []
    gemms = {n.name for n in onnx_utils.load_model(path).graph.node if n.op_type == "Gemm" and n.name}
    return list(dict.fromkeys(x for name in names for x in ((name, f"{name}_MatMul") if name in gemms else (name,))))


def require_weights_quantized(model: Any, op_types: tuple[str, ...], lstms_float: int = 0) -> None:
    """Refuse a dynamic INT8 model in which no weight became 8-bit (nothing of ``op_types`` carries weights).

    Raises:
        UnsupportedError: naming the float convolutions and LSTMs left and how to quantize them.
    """
    counts = onnx_utils.op_counts(model)
    if counts.get("DynamicQuantizeLinear") or any(init.data_type in (2, 3) for init in model.graph.initializer):
        return  # UINT8, INT8 weights, or activations quantized at run time
    convs = counts.get("Conv", 0) + counts.get("ConvTranspose", 0)
    left = f"; its {convs} convolutions stay float (dynamic Conv runs as ConvInteger, slower than float)" if convs else ""
    if lstms_float:
        left += f"; its {lstms_float} LSTM(s) stay float"
    hint = ("--calib DATA (checks each LSTM in INT8) or --target-option recurrent=int8 (unchecked), "
            if lstms_float else "")
    raise UnsupportedError(
        f"dynamic INT8 has nothing to quantize: no {'/'.join(op_types)} with weights{left}",
        hint=hint + "--int8-mode static --calib DATA (calibrated QDQ quantizes convolutions), "
                    "or build fp32/fp16")
