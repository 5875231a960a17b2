"""Static INT8 in QDQ form: per-channel int8 weights, activation ranges from the calibration set.

Uses onnxruntime's ``quantize_static`` (QDQ format) fed by edgec's :class:`CalibrationSet`, with the
calibration method of the set (minmax, entropy or percentile); entropy and percentile are calibrated one sample
at a time (see :mod:`edgec.compiler.passes._chunked_calibration`). Activations default to uint8 with
int8 weights (U8S8), the fast path of onnxruntime's x86 kernels.

An output ``Concat`` that joins parts whose calibrated ranges differ by more than ``mixed_range_ratio``
(10x by default: a detector's boxes 0-320 beside its class probabilities 0-1) stays float, with the moves
after it (see :mod:`edgec.compiler.passes._mixed_outputs`); the stats list it under ``kept_float_outputs``.

Inside the onnx target's reuse scope (a ``--max-drop`` search's candidates, :mod:`edgec.targets._calibration_reuse`) the
calibration ranges and the mixed-range check are computed once per model, calibration set and method, not once
per candidate.

A ``Gemm`` bias stored as a ``(1, N)`` row (tf2onnx writes them so) is given to the quantizer as the ``(N,)``
vector it means: onnxruntime's int32-bias check indexes per-channel biases by output channel and fails on a
2-D one (``The truth value of an array with more than one element is ambiguous``). The stats count them
under ``gemm_biases_flattened``.

onnxruntime's static quantizer has no LSTM. With ``recurrent="dynamic"`` (the onnx target's default; never
TensorRT's, whose runtime has no contrib ops) the LSTMs then become onnxruntime's ``DynamicQuantizeLSTM``, each
checked alone on the calibration set against ``recurrent_min_cosine`` (see :mod:`edgec.compiler.passes._recurrent_int8`);
the stats list them under ``recurrent``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Literal

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler.passes._chunked_calibration import cache_option
from edgec.compiler.passes._mixed_outputs import MixedOutput, mixed_outputs, name_nodes
from edgec.compiler.passes._recurrent_int8 import RecurrentOptions, quantize_recurrent
from edgec.compiler.passes._subgraph_weights import require_quantized
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import require
from edgec.core.types import ModelArtifact, sha256_file
from edgec.frameworks import onnx_utils
from edgec.targets import _calibration_reuse as _onnx_reuse

METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class StaticOptions(RecurrentOptions):
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    op_types: tuple[str, ...] | None = None
    float_op_types: tuple[str, ...] = ()
    """Op types left out of onnxruntime's default list (when ``op_types`` is None); the stats list them."""
    nodes_to_exclude: tuple[str, ...] = ()
    symmetric_activations: bool = False
    """Zero-point-0 activations, as TensorRT's explicit quantization requires (use with int8 activations)."""
    extra_options: dict[str, bool | int | float | str | list[str]] = {}
    """More onnxruntime ``extra_options`` (e.g. ``{"QDQKeepRemovableActivations": True}``)."""
    mixed_range_ratio: float | None = 10.0
    """Keep an output ``Concat`` float when its inputs' ranges differ by more than this; None quantizes it."""


def op_list(opts: StaticOptions) -> list[str] | None:
    """The op types to quantize: ``op_types``, else onnxruntime's default list less ``float_op_types``."""
    if opts.op_types or not opts.float_op_types:
        return list(opts.op_types) if opts.op_types else None
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(opts.float_op_types))


def data_reader(calibration: CalibrationSet, base: type) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over the calibration set's feeds."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._feeds = calibration.feeds()

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

        def rewind(self) -> None:
            self._feeds = calibration.feeds()

    return Reader()


def flatten_gemm_biases(path: Path, work_dir: Path) -> tuple[Path, int]:
    """The model at ``path`` with every ``(1, N)`` Gemm bias initializer read only by Gemms reshaped to ``(N,)``
    (saved in ``work_dir``; ``path`` itself when there is none), and how many were reshaped."""
    from onnx import numpy_helper

    model = onnx_utils.load_model(path)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, set()).add(f"{node.op_type}:{index}")
    count = 0
    for init in model.graph.initializer:
        if len(init.dims) == 2 and init.dims[0] == 1 and readers.get(init.name) == {"Gemm:2"}:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(-1), init.name))
            count += 1
    if not count:
        return path, 0
    del model.graph.value_info[:]  # the bias's old shape must not linger in annotations
    out = work_dir / "gemm_bias.onnx"
    onnx_utils.save_model(model, out)
    return out, count


class QuantizeStatic(Pass):
    """onnxruntime ``quantize_static``: QDQ, per-channel weights, calibrated activations."""

    name = "quantize_static"
    Options = StaticOptions
    uses_calibration = True
    requires_calibration = True

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        q = require("onnxruntime.quantization", "onnx", "INT8 quantization")
        opts: StaticOptions = self.options  # type: ignore[assignment]
        assert ctx.calibration is not None  # checked in requires()
        out_path = ctx.work_dir / "model.onnx"
        act = q.QuantType.QUInt8 if opts.activation_type == "uint8" else q.QuantType.QInt8
        logging.getLogger().setLevel(logging.ERROR)
        source, flattened = flatten_gemm_biases(artifact.path, ctx.work_dir)
        source, mixed = self._mixed_outputs(source, ctx)
        exclude = [*opts.nodes_to_exclude, *(n for m in mixed for n in m.nodes if n not in opts.nodes_to_exclude)]
        if _onnx_reuse.current() is None:
            ctx.log(f"calibrating activations on {len(ctx.calibration)} samples ({opts.method})")
        else:  # a --max-drop search: ranges are calibrated by the first build that needs them, then served
            ctx.log(f"activation ranges on {len(ctx.calibration)} samples ({opts.method}), calibrated once per "
                    "model and method for this search's builds")
        op_types = op_list(opts)
        method = getattr(q.CalibrationMethod, METHOD_NAMES[opts.method])
        extra = {"WeightSymmetric": True, "ActivationSymmetric": opts.symmetric_activations, **opts.extra_options}
        calibrated = cache_option(q.quantize_static, source, ctx.calibration.feeds, method, op_types, extra, ctx.work_dir,
                                  (ctx.calibration.digest, len(ctx.calibration)))  # shared in a --max-drop search
        with contextlib.redirect_stdout(io.StringIO()), calibrated as cache:  # histogram calibrators print to stdout
            q.quantize_static(
                str(source),
                str(out_path),
                data_reader(ctx.calibration, q.CalibrationDataReader),
                quant_format=q.QuantFormat.QDQ,
                per_channel=opts.per_channel,
                activation_type=act,
                weight_type=q.QuantType.QInt8,
                op_types_to_quantize=op_types,
                nodes_to_exclude=exclude or None,
                calibrate_method=method,
                extra_options=extra,
                **cache,
            )
        onnx_utils.sort_file(out_path)  # the quantizer's order ignores values an If/Loop body reads
        out_path, recurrent = quantize_recurrent(out_path, ctx, opts, tuple(exclude))
        require_quantized(out_path)
        out = onnx_utils.artifact_from_file(out_path)
        model = onnx_utils.load_model(out_path)
        stats: dict[str, Any] = {"mode": "static", "ops": onnx_utils.op_counts(model)}
        if recurrent:
            stats["recurrent"] = recurrent
        if opts.float_op_types and not opts.op_types:
            stats["float_op_types"] = sorted(opts.float_op_types)
        if mixed:
            stats["kept_float_outputs"] = [m.to_json() for m in mixed]
        if flattened:
            stats["gemm_biases_flattened"] = flattened
        return PassResult(out, True, stats)

    def _mixed_outputs(self, path: Path, ctx: PassContext) -> tuple[Path, list[MixedOutput]]:
        """The model to quantize (with every node named, when the outputs to keep float need names) and those
        outputs (see the module docstring)."""
        ratio = self.options.mixed_range_ratio  # type: ignore[attr-defined]
        assert ctx.calibration is not None
        if ratio is None:
            return path, []
        model = onnx_utils.load_model(path)
        mixed = shared_mixed_outputs(path, model, ctx.calibration, ratio)
        if not mixed:
            return path, []
        for m in mixed:
            ranges = ", ".join(f"{r:.3g}" for r in m.ranges)
            ctx.log(f"output {m.output!r} joins parts with ranges {ranges}: its Concat stays float")
        if name_nodes(model):
            path = ctx.work_dir / "named.onnx"
            onnx_utils.save_model(model, path)
            mixed = shared_mixed_outputs(path, model, ctx.calibration, ratio)
        return path, mixed


def shared_mixed_outputs(path: Path, model: Any, calibration: CalibrationSet, ratio: float) -> list[MixedOutput]:
    """:func:`mixed_outputs`, found once per model file, calibration set and ratio inside the onnx target's reuse
    scope (the candidates of one ``--max-drop`` search: :mod:`edgec.targets._calibration_reuse`)."""
    key = None if _onnx_reuse.current() is None else (sha256_file(path), calibration.digest, len(calibration), ratio)
    return _onnx_reuse.mixed_outputs(key, lambda: mixed_outputs(path, model, calibration, ratio))
