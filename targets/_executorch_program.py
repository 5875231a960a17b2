"""The torch side of the executorch target: the ``torch.export`` program at the requested precision, with
its dynamic dims capped, before ExecuTorch lowers it (see :mod:`edgec.targets.executorch`).

- fp16: the module in float16 behind float32 inputs and outputs (:func:`half_module`), re-exported.
- int8: PT2E with ``XNNPACKQuantizer`` (:func:`quantize_pt2e`), re-exported.
- Dims: ``max_dim`` caps the upper bound of dynamic dims, by the dim names the source gave (``batch``) or
  for all (``*``); a dim capped to its lower bound becomes static. torch is imported inside functions only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edgec.core.errors import CalibrationError, ConfigError, UnsupportedError, brief, raise_if_bug
from edgec.core.types import ModelArtifact
from edgec.targets._executorch_recurrent import scannable, scanned
from edgec.targets.base import PrecisionRequest

HALF_PROGRAM_BACKENDS = ("xnnpack", "vulkan")
"""Backends whose fp16 is a float16 torch program; coreml and qnn take fp16 as a compute precision."""
_SKIPPED_OPS = frozenset({"getitem", "executorch_call_delegate"})
_CONV_OPS = ("convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_MATMUL_OPS = ("linear", "mm", "bmm", "addmm", "matmul")
RECURRENT_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
"""Recurrent ops: one ``aten.lstm.input`` in the program, which ``XNNPACKQuantizer`` does not annotate (ExecuTorch 1.5.1),
so their weights stay float; lowering decomposes them afterwards."""

Dim = int | tuple[str, int, int | None]
"""One dim of a program input: a size, or ``(symbol, lower, upper or None)``."""


def apply_precision(program: Any, request: PrecisionRequest, artifact: ModelArtifact, caps: dict[str, int],
                    backend: str) -> tuple[Any, dict[str, Any], Any]:
    """The program at the requested precision, re-exported where it changed or ``caps`` narrow its dims, what
    was done, and the graph module the precision made before re-export (the PT2E-converted module, the float16
    module; None where the program stays float32): the per-layer tools run it. fp16 for coreml and qnn is
    their compiler's compute precision (the program stays fp32).

    Raises:
        CalibrationError: the calibration data does not run through the program.
        ConfigError: ``request.exclude`` names neither a module nor an op of the program.
        UnsupportedError: the program takes keyword inputs and must be re-exported.
    """
    loops = backend == "xnnpack"  # LSTMs as loops (see edgec.targets._executorch_recurrent)
    if request.precision == "fp16" and backend in HALF_PROGRAM_BACKENDS:
        half = half_module(copy.deepcopy(program.module()))
        return (*_reexported(half, program, caps, {"weights": "fp16"}, loops), half.inner)
    if request.precision == "int8":
        module, quantization = quantize_pt2e(program, request, artifact)
        details = {"weights": "int8 per channel", "quantization": quantization}
        return (*_reexported(module, program, caps, details, loops), module)
    weights = {"weights": "fp32" if request.precision == "fp32" else f"fp16 ({backend} compute precision)"}
    if narrows(program, caps) or (loops and any(scannable(n) for n in program.graph.nodes)):
        return (*_reexported(program.module(), program, caps, weights, loops), None)
    return program, weights, None


def _reexported(module: Any, program: Any, caps: dict[str, int], details: dict[str, Any],
                loops: bool) -> tuple[Any, dict[str, Any]]:
    """``module`` re-exported, with its LSTMs as loops where ``loops`` (counted in ``details["rewrites"]``); the
    module itself is left as it is (the per-layer tools run it)."""
    rewrites = 0
    if loops and getattr(module, "takes_varargs", False):  # the float16 wrapper of a graph module
        inner, rewrites = scanned(module.inner)
        module = type(module)(inner) if rewrites else module
    elif loops:
        module, rewrites = scanned(module)
    if rewrites:
        details["rewrites"] = {"lstm_as_loop": rewrites}
    return reexport(module, program, caps), details


def half_module(module: Any) -> Any:
    """``module`` (a ``torch.export`` graph module) in float16 behind float32 inputs and outputs, with its
    layer norms kept in float32 (:func:`float_norms`)."""
    import torch

    float_norms(module)

    class HalfModule(torch.nn.Module):
        takes_varargs = True

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, *args: Any) -> Any:
            out = self.inner(*[a.half() if a.is_floating_point() else a for a in args])
            return torch.utils._pytree.tree_map(
                lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)

    return HalfModule(module)


def float_norms(graph_module: Any) -> None:
    """Run every ``aten.layer_norm`` of the graph in float32 between casts (in place).

    ExecuTorch's portable fp16 layer norm gives NaN on MiniLM's embeddings (eps 1e-12 is 0 in fp16 and the
    variance goes negative; measured, ExecuTorch 1.5.1); mixed-precision training keeps norms in fp32 too.
    XNNPACK does not take layer norms, so they ran on portable kernels either way.
    """
    import torch

    graph = graph_module.graph
    cast = torch.ops.aten._to_copy.default
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.layer_norm.default]:
        with graph.inserting_before(node):
            node.args = tuple(graph.call_function(cast, (a,), {"dtype": torch.float32})
                              if isinstance(a, torch.fx.Node) else a for a in node.args)
        with graph.inserting_after(node):
            back = graph.call_function(cast, (node,), {"dtype": torch.float16})
        node.replace_all_uses_with(back, delete_user_cb=lambda user, back=back: user is not back)
    graph_module.recompile()


def choose_int8_mode(request: PrecisionRequest, program: Any) -> str:
    """Resolve ``auto`` as the onnx target does: dynamic without data or for matmul-dominated programs."""
    if request.int8_mode != "auto":
        return request.int8_mode
    if request.calibration is None:
        return "dynamic"
    ops = op_counts(program.graph_module)
    convs = sum(n for op, n in ops.items() if short_op(op) in _CONV_OPS)
    matmuls = sum(n for op, n in ops.items() if short_op(op) in _MATMUL_OPS)
    return "static" if convs >= matmuls else "dynamic"


def quantize_pt2e(program: Any, request: PrecisionRequest, artifact: ModelArtifact) -> tuple[Any, dict[str, Any]]:
    """PT2E INT8 with ``XNNPACKQuantizer`` (per-channel weights); what ``request.exclude`` names stays float
    (:func:`keep_float`).

    Raises:
        CalibrationError: the calibration data does not run through the prepared program.
        ConfigError: ``request.exclude`` names neither a module nor an op of the program.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    mode = choose_int8_mode(request, program)
    config, observer = quant_config(mode, request)
    quantizer = XNNPACKQuantizer().set_global(config)
    annotate = quantizer.annotate
    quantizer.annotate = lambda model: clamp_outputs(annotate(model))  # type: ignore[method-assign]
    graph_module = integer_scalar_ops(program.module())
    keep_float(quantizer, graph_module, request.exclude)
    prepared = prepare_pt2e(graph_module, quantizer)
    samples = _calibrate(prepared, program, request, artifact, mode)
    details: dict[str, Any] = {
        "mode": mode, "tool": "torchao prepare_pt2e/convert_pt2e + XNNPACKQuantizer", "weights": "int8 symmetric per channel",
        "activations": "int8 per tensor, quantized at run time" if mode == "dynamic" else "int8 per tensor",
        "samples": samples,
    }
    if observer:
        details["activation_observer"] = observer
    if mode == "dynamic" and request.calibration is None and request.int8_mode == "auto":
        details["reason"] = "no calibration data given"
    if request.exclude:
        details["kept_float"] = list(request.exclude)
    recurrent = {op: n for op, n in op_counts(graph_module).items() if short_op(op) in RECURRENT_OPS}
    if recurrent:
        details["kept_float_ops"] = recurrent
    converted = convert_pt2e(prepared)
    if not request.exclude:  # a --max-drop candidate may keep every layer float on purpose
        require_quantized(converted, recurrent)
    return converted, details


_CLAMPS = ("relu6", "hardtanh", "hardtanh_")  # what XNNPACK fuses into a conv or linear as its output min/max


def clamp_outputs(graph_module: Any) -> Any:
    """Quantize a conv's or linear's output after the ``relu6``/``hardtanh`` that follows it (in place).

    ``XNNPACKQuantizer`` fuses only ``relu`` with the op before it (ExecuTorch 1.5.1): before a ReLU6 it quantizes
    the conv's output on the pre-activation range (measured on EfficientNet-Lite0's stem: scale 0.41, ~15 levels
    left for [0, 6]) and the clamp runs on that. Moving the conv's output spec to the clamp observes [0, 6]
    (scale 6/255); XNNPACK's lowering fuses the clamp into the conv as its output min/max, as for ``relu``.
    """
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or short_op(str(node.target)) not in _CLAMPS or not node.args:
            continue
        producer, mine = node.args[0], node.meta.get("quantization_annotation")
        theirs = getattr(producer, "meta", {}).get("quantization_annotation")
        if (not _shares_with(mine, producer) or theirs is None or theirs.output_qspec is None or len(producer.users) != 1
                or short_op(str(producer.target)) not in _CONV_OPS + ("linear", "addmm")):
            continue
        node.meta["quantization_annotation"] = dataclasses.replace(theirs, input_qspec_map={}, _annotated=True)
        theirs.output_qspec = None
    return graph_module


def _shares_with(annotation: Any, producer: Any) -> bool:
    """No annotation yet, or only the one ``propagate_annotation`` gives a ``hardtanh``: its producer's qparams."""
    return annotation is None or getattr(annotation.output_qspec, "edge_or_node", None) is producer


def require_quantized(graph_module: Any, recurrent: dict[str, int]) -> None:
    """Refuse an INT8 program in which the quantizer annotated nothing (no quantize op after ``convert_pt2e``).

    Raises:
        UnsupportedError: naming the recurrent ops left float, if any, and what builds instead.
    """
    if any(op.startswith("quantized_decomposed.") for op in op_counts(graph_module)):
        return
    if recurrent:
        ops = ", ".join(f"{n} {op}" for op, n in recurrent.items())
        raise UnsupportedError(
            f"executorch INT8 quantized nothing: XNNPACK's quantizer takes no LSTM/GRU/RNN ({ops}), the program's only "
            "weighted ops", hint="--precision fp32 or fp16 for executorch, or --target onnx --precision int8 "
                                 "(LSTMs as onnxruntime's DynamicQuantizeLSTM)")
    raise UnsupportedError("executorch INT8 quantized nothing: the program has no op XNNPACK's quantizer takes "
                           "(linear, convolution)", hint="--precision fp32 or fp16")


def keep_float(quantizer: Any, graph_module: Any, exclude: tuple[str, ...]) -> None:
    """Configure ``quantizer`` to leave ``exclude`` in float.

    1. A module's qualified name (``conv3``, ``encoder.layer.0.attention``; :func:`module_names`) gets no
       quantization config, which is what ``XNNPACKQuantizer.set_module_name(name, None)`` means (it asserts
       on None in ExecuTorch 1.5.1; a None entry of ``module_name_config`` annotates nothing). Every op inside
       the module, its submodules' too, stays float; XNNPACK annotates an activation only fused with the op
       before it, so a ``torch.relu`` called on the module's output in the parent's forward stays float too.
    2. Any other name is an op of the graph (an ``add`` in a forward that owns no module for it) and is
       filtered out with the quantizer's filter function.

    Raises:
        ConfigError: a name is neither a module nor an op of the graph.
    """
    modules = module_names(graph_module)
    ops = {n.name for n in graph_module.graph.nodes if n.op == "call_function"}
    unknown = [name for name in exclude if name not in modules and name not in ops]
    if unknown:
        raise ConfigError(f"modules or ops to keep in float not found in the torch program: {', '.join(unknown[:5])}",
                          hint="name modules as the model names them (conv3, encoder.layer.0)")
    for name in exclude:
        if name in modules:
            quantizer.module_name_config[name] = None
    filtered = frozenset(name for name in exclude if name not in modules)
    if filtered:
        quantizer.set_filter_function(lambda node: node.name not in filtered)


def module_name(node: Any) -> str:
    """The qualified name of the innermost module whose forward called ``node`` (``""``: the root's)."""
    stack = list(node.meta.get("nn_module_stack", {}).values())
    path = str(stack[-1][0]) if stack else ""
    return path.removeprefix("L['self'].").removeprefix("L['self']")


def module_names(graph_module: Any) -> set[str]:
    """Qualified names of the modules whose forwards called ops of the graph (not the root)."""
    names = set()
    for node in graph_module.graph.nodes:
        for path, _ in node.meta.get("nn_module_stack", {}).values():
            names.add(str(path).removeprefix("L['self'].").removeprefix("L['self']"))
    return names - {""}


def decompose_prelu(program: Any) -> int:
    """Each ``aten.prelu`` whose input is not 4-D -> ``relu(x) + clamp(x, max=0) * weight`` (the same values),
    in the program's graph, in place; returns how many.

    ExecuTorch 1.5.1's XNNPACK lowering treats PReLU as a channels-last op and fails on a PReLU after a
    linear layer ("Attempting to convert non-NHWC compatible node to NHWC" in ``ChannelsLastTaggedReshapePass``;
    measured on MTCNN's ONet, whose dense layer ends in PReLU). 4-D PReLU lowers as it is.
    """
    import torch

    graph = program.graph_module.graph
    aten = torch.ops.aten
    found = [n for n in graph.nodes if n.op == "call_function" and n.target == aten.prelu.default
             and isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dim() != 4]
    for node in found:
        x, weight = node.args
        with graph.inserting_before(node):
            negative = graph.call_function(aten.mul.Tensor, (graph.call_function(aten.clamp.default, (x, None, 0.0)), weight))
            out = graph.call_function(aten.add.Tensor, (graph.call_function(aten.relu.default, (x,)), negative))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    if found:
        program.graph_module.recompile()
    return len(found)


def integer_scalar_ops(graph_module: Any) -> Any:
    """Integer ``add``/``mul`` with a Python number -> their ``.Scalar`` overloads (same result).

    ``XNNPACKQuantizer.transform_for_annotation`` turns every number added to or multiplied with a tensor
    into a float32 tensor constant, so integer index arithmetic (BERT's ``arange(seq) + 0`` position ids)
    becomes float and ``aten.index`` fails (ExecuTorch 1.5.1, measured on MiniLM). It leaves ``.Scalar``
    overloads alone.
    """
    import torch

    scalar = {torch.ops.aten.add.Tensor: torch.ops.aten.add.Scalar, torch.ops.aten.mul.Tensor: torch.ops.aten.mul.Scalar}
    for node in graph_module.graph.nodes:
        val = node.meta.get("val")
        if (node.op == "call_function" and node.target in scalar and len(node.args) == 2
                and isinstance(node.args[0], torch.fx.Node) and isinstance(node.args[1], (int, float, bool))
                and isinstance(val, torch.Tensor) and not val.is_floating_point()):
            node.target = scalar[node.target]
    graph_module.recompile()
    return graph_module


def _calibrate(prepared: Any, program: Any, request: PrecisionRequest, artifact: ModelArtifact, mode: str) -> int:
    """Run the calibration feeds (static) or the example inputs once (dynamic: weight observers only)."""
    import torch

    if mode != "static" or request.calibration is None:
        args, kwargs = program.example_inputs or structured(program, example_args(program))
        prepared(*args, **kwargs)
        return 0
    for feed in request.calibration.feeds():
        try:
            args, kwargs = structured(program, [torch.from_numpy(feed[spec.name]) for spec in artifact.inputs])
            prepared(*args, **kwargs)
        except Exception as exc:
            raise_if_bug(exc, "calibrating the executorch INT8 program")
            raise CalibrationError(f"calibration data does not run through the program: {brief(exc, 200)}") from exc
    return len(request.calibration)


def quant_config(mode: str, request: PrecisionRequest) -> tuple[Any, str | None]:
    """XNNPACK's symmetric per-channel config and its activation observer; static ``minmax`` calibration swaps
    XNNPACK's ``HistogramObserver`` for ``MinMaxObserver``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=mode == "dynamic")
    if mode == "dynamic":
        return config, None
    if request.calibration is not None and request.calibration.method != "minmax":
        return config, "HistogramObserver"
    from torchao.quantization.pt2e.observer import MinMaxObserver

    def minmax(spec: Any) -> Any:
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))

    return dataclasses.replace(config, input_activation=minmax(config.input_activation),
                               output_activation=minmax(config.output_activation)), "MinMaxObserver"


# ---- dims


def user_inputs(program: Any) -> list[Any]:
    """The placeholder nodes of the program's user inputs, in order."""
    names = set(program.graph_signature.user_inputs)
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]


def dim_bounds(program: Any, caps: dict[str, int] | None = None) -> list[list[Dim]]:
    """Per user input, per dim: its size, or ``(symbol, lower, upper or None)`` with ``caps`` applied."""
    ranges = {str(k): v for k, v in program.range_constraints.items()}
    shapes = []
    for node in user_inputs(program):
        dims: list[Dim] = []
        for d in node.meta["val"].shape:
            if isinstance(d, int):
                dims.append(d)
                continue
            symbol, vr = str(d.node.expr), ranges.get(str(d.node.expr))
            lower = int(vr.lower) if vr is not None else 0
            upper = int(vr.upper) if vr is not None and vr.upper.is_integer else None
            cap = (caps or {}).get(symbol)
            if cap is not None:
                upper = max(min(upper, cap) if upper is not None else cap, lower)
            dims.append((symbol, lower, upper))
        shapes.append(dims)
    return shapes


def symbol_caps(program: Any, artifact: ModelArtifact, max_dim: dict[str, int]) -> dict[str, int]:
    """Program symbol -> cap, from ``max_dim`` keyed by the dim names of the source (``batch``) or ``*``.

    Raises:
        ConfigError: ``max_dim`` names a dim no input has.
    """
    caps: dict[str, int] = {}
    named: set[str] = set()
    for spec, dims in zip(artifact.inputs, dim_bounds(program)):
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                continue
            given = spec.shape[axis] if axis < len(spec.shape) else None
            name = given if isinstance(given, str) else ""
            if name:
                named.add(name)
            cap = max_dim[name] if name in max_dim else max_dim.get("*")
            if cap is not None:
                caps[d[0]] = min(caps.get(d[0], cap), cap)
    unknown = sorted(set(max_dim) - named - {"*"})
    if unknown:
        raise ConfigError(f"max_dim names {', '.join(unknown)}, which no input dim is called; the dynamic dims are: "
                          f"{', '.join(sorted(named)) or 'unnamed (use max_dim=N for all)'}")
    return caps


def narrows(program: Any, caps: dict[str, int]) -> bool:
    """Whether ``caps`` lower any dynamic dim's upper bound (then the program is re-exported)."""
    before, after = dim_bounds(program), dim_bounds(program, caps)
    return before != after


def dynamic_shapes(program: Any, caps: dict[str, int]) -> tuple[dict[int, Any], ...]:
    """``torch.export`` dynamic shapes, one ``Dim`` per symbol; a dim capped to its lower bound is left static."""
    import torch

    made: dict[str, Any] = {}
    specs = []
    for dims in dim_bounds(program, caps):
        spec = {}
        for axis, d in enumerate(dims):
            if isinstance(d, int) or d[1] == d[2]:
                continue
            symbol, lower, upper = d
            if symbol not in made:
                made[symbol] = torch.export.Dim(f"d_{symbol}", min=max(lower, 1) if upper is None else min(max(lower, 1), upper),
                                                max=upper)
            spec[axis] = made[symbol]
        specs.append(spec)
    return tuple(specs)


def example_args(program: Any, caps: dict[str, int] | None = None) -> tuple[Any, ...]:
    """Zeros for a program saved without example inputs: dynamic dims at 2, within their bounds."""
    import torch

    args = []
    for node, dims in zip(user_inputs(program), dim_bounds(program, caps)):
        shape = [d if isinstance(d, int) else min(max(2, d[1]), d[2] or 2) for d in dims]
        args.append(torch.zeros(shape, dtype=node.meta["val"].dtype))
    return tuple(args)


def reexport(module: Any, program: Any, caps: dict[str, int]) -> Any:
    """``torch.export`` a changed module with the program's example inputs (cut to the caps) and dynamic dims.

    Raises:
        UnsupportedError: the program takes keyword inputs.
    """
    import torch

    args, kwargs = program.example_inputs or structured(program, example_args(program, caps))
    if kwargs:
        raise UnsupportedError("the executorch target re-exports programs with positional inputs only")
    bounds = dim_bounds(program, caps)
    leaves = [_fit(a, dims) for a, dims in zip(torch.utils._pytree.tree_leaves(args), bounds)]
    shapes = dynamic_shapes(program, caps)
    if getattr(module, "takes_varargs", False):  # forward(*args): flat inputs, one entry, a tuple of specs
        return torch.export.export(module, tuple(leaves), dynamic_shapes=(shapes,), strict=False)
    # a tuple argument (forward(self, x, state)) takes its leaves and their dims in the program's structure
    args, shapes = structured(program, leaves)[0], structured(program, list(shapes))[0]
    return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)


def structured(program: Any, leaves: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Values for the program's flat user inputs (in order) as its ``forward`` takes them: ``(args, kwargs)``,
    a tuple argument rebuilt from its leaves."""
    import torch

    args, kwargs = torch.utils._pytree.tree_unflatten(list(leaves), program.call_spec.in_spec)
    return tuple(args), dict(kwargs)


def _fit(arg: Any, dims: list[Dim]) -> Any:
    """An example input cut to its capped upper bounds."""
    for axis, d in enumerate(dims):
        if not isinstance(d, int) and d[2] is not None and arg.shape[axis] > d[2]:
            arg = arg.narrow(axis, 0, d[2])
    return arg


# ---- graph inspection


def op_counts(graph_module: Any) -> dict[str, int]:
    """Operators called in a graph (not its delegate calls or tuple picks), by name."""
    names = (op_name(n.target) for n in graph_module.graph.nodes if n.op == "call_function")
    return dict(Counter(n for n in names if n not in _SKIPPED_OPS))


def op_name(target: Any) -> str:
    """``aten.conv2d.default``, ``quantized_decomposed.quantize_per_tensor.default``; Python callables by name."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return f"{schema.name.replace('::', '.')}.{schema.overload_name or 'default'}"
    return str(getattr(target, "__name__", target))


def short_op(name: str) -> str:
    """``aten.convolution.default`` -> ``convolution``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aten" else parts[0]
