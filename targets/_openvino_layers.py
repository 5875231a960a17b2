"""Torch module names for the layers of an OpenVINO model converted from a ``.pt2`` program (issue 19).

OpenVINO's PyTorch frontend names each op after the FX node it came from (``convolution_2/aten.convolution.default/Convolution``)
and keeps nothing of the module that called it. ``torch.export`` records that module in each node's
``nn_module_stack``; :func:`torch_layers` maps FX node names to the innermost module's qualified name, as
``model.named_modules()`` spells it (``convs.2``, ``encoder.layer.3.output.dense``), with torch's own ``@k``
for the k-th further call of one module (one ``nn.ReLU`` called after every convolution: ``act``, ``act@1``, ...):
each call is its own layer, so keeping one in float never drags the others along. Nodes called from the
root module itself (``torch.flatten`` in ``forward``) keep their FX names.

The map is stored in the model's rt_info (:data:`RT_INFO`, one JSON string), so the FP32 IR a bundle or a
layer probe reads names its layers as the torch source does without the source at hand
(:func:`stored_layers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

RT_INFO = ("edgec", "torch_layers")
"""Where the FX node -> torch module map is kept in the model's rt_info."""
RT_RECURRENT = ("edgec", "torch_recurrent")
"""Where the names of the recurrent torch modules (:data:`RECURRENT_MODULES`) are kept in the model's rt_info."""
RECURRENT_MODULES = frozenset({"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"})
"""torch module classes whose ops the ``recurrent`` option keeps in float: ``torch.export`` unrolls an ``nn.LSTM``
into MatMuls, Sigmoids and Tanhs per time step, so OpenVINO sees no ``LSTMSequence``."""


def decode(program: Any) -> tuple[Any, dict[str, str], list[str]]:
    """The ``ExportedProgram`` as OpenVINO's PyTorch frontend decodes it (after its own decompositions, which
    rename nodes: ``conv2d_2`` becomes ``convolution_2``) for ``openvino.convert_model``, :func:`torch_layers`
    of the decoded graph and its recurrent modules (:func:`recurrent_modules`). A program the decoder refuses
    is returned as it is (with no layers), for ``convert_model`` to report its error."""
    try:
        from openvino.frontend.pytorch.fx_decoder import TorchFXPythonDecoder

        with _quiet_decoder():
            decoder = TorchFXPythonDecoder.from_exported_program(program)
    except Exception:  # the decoder's errors (any type, from torch's decompositions): convert_model reports them
        return program, {}, []
    return decoder, torch_layers(decoder.pt_module), recurrent_modules(decoder.pt_module)


class _DropDecoderRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.module != "fx_decoder"


@contextlib.contextmanager
def _quiet_decoder() -> Iterator[None]:
    """Keep the decoder's chatter off the build's stderr: it logs a traceback on the root logger for each op
    torch's decomposition table lacks (which also installs a root handler when there is none), and torch warns
    that pytree's ``LeafSpec`` is deprecated; neither is anything a user can act on."""
    root = logging.getLogger()
    keep, null = _DropDecoderRecords(), logging.NullHandler()
    root.addFilter(keep)
    root.addHandler(null)  # a handler, so logging.warning() does not call basicConfig()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        root.removeHandler(null)
        root.removeFilter(keep)


def recurrent_modules(module: Any) -> list[str]:
    """Qualified names of the :data:`RECURRENT_MODULES` that called ops of an FX graph (as :func:`torch_layers`
    spells them), in graph order."""
    found: dict[str, None] = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        for path, kind in (stack or {}).values():
            qualified = str(path).removeprefix("L['self'].").removeprefix("L['self']")
            name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            if qualified and name.rsplit(".", 1)[-1] in RECURRENT_MODULES:
                found[qualified] = None
    return list(found)


def torch_layers(module: Any) -> dict[str, str]:
    """FX node name -> the torch module that called it (see the module docstring), for a module or program
    with an FX ``graph``."""
    layers = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        if not stack:
            continue
        key, (path, _) = list(stack.items())[-1]
        qualified = str(path).removeprefix("L['self'].").removeprefix("L['self']")  # as dynamo-captured stacks spell it
        if not qualified:
            continue  # called by the root module: the FX name is the best name there is
        call = key.rsplit("@", 1)[1] if "@" in key else ""
        layers[node.name] = f"{qualified}@{call}" if call else qualified
    return layers


def store_layers(model: Any, layers: dict[str, str], recurrent: list[str] | None = None) -> None:
    """Keep ``layers`` and the ``recurrent`` modules in the model's rt_info (saved with the IR); nothing when empty."""
    if layers:
        model.set_rt_info(json.dumps(layers, sort_keys=True, separators=(",", ":")), list(RT_INFO))
    if recurrent:
        model.set_rt_info(json.dumps(recurrent), list(RT_RECURRENT))


def recurrent_ops(model: Any) -> tuple[list[str], list[str]]:
    """The recurrent torch modules :func:`store_layers` kept in ``model`` and the friendly names of the ops they
    called (their module or a module inside them); both empty when none (not a ``.pt2`` source)."""
    if not model.has_rt_info(list(RT_RECURRENT)):
        return [], []
    value = model.get_rt_info(list(RT_RECURRENT))
    try:
        modules = [str(m) for m in json.loads(value.astype(str) if hasattr(value, "astype") else str(value))]
    except (ValueError, TypeError):
        return [], []
    layers = stored_layers(model)
    inside = {m: None for m in modules}

    def recurrent(layer: str | None) -> bool:
        base = (layer or "").split("@", 1)[0]
        return any(base == m or base.startswith(m + ".") for m in inside)

    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() not in ("Constant", "Parameter", "Result") and recurrent(layers.get(fx_name(op.get_friendly_name())))]
    return modules, names


def stored_layers(model: Any) -> dict[str, str]:
    """The map :func:`store_layers` kept in ``model`` (empty when none: not a ``.pt2`` source, or an older bundle)."""
    if not model.has_rt_info(list(RT_INFO)):
        return {}
    value = model.get_rt_info(list(RT_INFO))
    text = value.astype(str) if hasattr(value, "astype") else str(value)
    try:
        layers = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in layers.items()} if isinstance(layers, dict) else {}


def fx_name(op_name: str) -> str:
    """The FX node an op of the PyTorch frontend came from: the first part of its friendly name."""
    return op_name.split("/", 1)[0]


def port_name(output: Any) -> str:
    """The name a layer comparison gives an op's output: the op's friendly name for its first output,
    ``name:k`` for output ``k`` (an ``LSTMSequence``'s final states ``:1`` and ``:2``)."""
    name = output.get_node().get_friendly_name()
    index = output.get_index()
    return name if index == 0 else f"{name}:{index}"
