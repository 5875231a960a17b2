"""Per-layer tools of the ``executorch`` target (``--report-layers``, ``--max-drop``): layers are the torch
model's own modules, compared in the torch programs that were lowered.

What is compared: a ``.pte`` does not expose intermediate tensors (XNNPACK runs whole subgraphs as one
delegate call), so the comparison runs the torch graph modules each ``.pte`` was lowered from, node by node
(``torch.fx.Interpreter``), on the same feeds:
- reference: the float program, through the same graph transforms PT2E applies before annotation (BatchNorm
  folded into the convolution before it, numbers turned into constants) and nothing else, so its nodes keep
  the names the quantized graph has;
- candidate: the PT2E-converted module for int8 (quantize/dequantize ops in float32 arithmetic: the
  quantization XNNPACK's int8 kernels implement, up to their rounding of requantization), the float16 module
  for fp16.
Only the ranking runs in torch; ``--max-drop`` measures every candidate with the ``.pte`` on ExecuTorch's
runtime (:class:`edgec.compiler.search_probe.TargetProbe`), so what ships is what is measured.

Rules:
1. A node is an op of the reference graph, named by its fx node name. Where a quantized graph fake-quantizes
   an op's output (``quantize_per_tensor`` then ``dequantize_per_tensor``), the dequantized value is compared:
   what the next op reads, as for ONNX QDQ models.
2. Its layer is the qualified name of the innermost module whose forward called it (``nn_module_stack``:
   ``conv3``, ``encoder.layer.0.attention.self.query``). An activation called in a forward that owns no
   module for it (``torch.relu(self.conv3(x))``) takes the layer of the op it reads; any other such op is a
   layer of its own, named by its node.
3. Ops that only move values (:data:`SHAPE_OPS`) are not compared: error passes through them unchanged.
4. Keeping a layer in float (:attr:`~edgec.targets.base.PrecisionRequest.exclude`) passes the module's
   qualified name, or the node name of a layer that is no module, to the quantizer
   (:func:`edgec.targets._executorch_program.keep_float`). The layers producing the activations a layer reads
   go with it (:func:`float_group`): PT2E quantizes a tensor at its producer's output.

The torch programs are remembered by the target instance that wrote the ``.pte`` files (:class:`LayerMemo`),
keyed by the files' content: the comparison is available while a build runs (``--report-layers``,
``--max-drop``), not for bundles built elsewhere (``edgec debug``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.core.errors import ConfigError, UnsupportedError
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks.fidelity import ErrorSums, LayerDivergence, NodeInfo, rank_errors
from edgec.targets._executorch_program import integer_scalar_ops, module_name, module_names, op_name, short_op

SHAPE_OPS = frozenset({
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "clone", "expand",
    "squeeze", "unsqueeze", "slice", "select", "getitem", "dropout", "detach", "alias", "_to_copy", "to",
    "type_as", "split", "split_with_sizes", "chunk", "unbind", "narrow",
})
"""Ops that move values without computing new ones (rule 3)."""
ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "sigmoid", "silu", "silu_", "tanh", "hardswish",
    "hardswish_", "hardsigmoid", "leaky_relu", "leaky_relu_", "elu", "prelu", "softmax", "log_softmax",
})
"""Ops that take the layer of their input when no module of their own called them (rule 2)."""
_DEQUANTIZE = frozenset({"quantized_decomposed.dequantize_per_tensor.default", "quantized_decomposed.dequantize_per_tensor.tensor"})
_QUANTIZE = frozenset({"quantized_decomposed.quantize_per_tensor.default", "quantized_decomposed.quantize_per_tensor.tensor"})
MEMO_SIZE = 16
"""Programs a target instance remembers (a ``--max-drop`` search builds at most ``--max-builds`` + 2)."""


@dataclass(frozen=True)
class Lowered:
    """What a ``.pte`` file was lowered from.

    Args:
        source: the float program's artifact (its ``.pt2``).
        precision: the bundle's precision.
        module: the reduced-precision graph module (PT2E-converted for int8, float16 for fp16); None for fp32.
    """

    source: ModelArtifact
    precision: str
    module: Any


class LayerMemo:
    """The torch programs behind the ``.pte`` files one target instance wrote, by the files' SHA-256, and the
    float reference graphs, loaded once per source program."""

    def __init__(self) -> None:
        self._lowered: OrderedDict[str, Lowered] = OrderedDict()
        self._float: dict[tuple[str, str], Any] = {}

    def remember(self, data: bytes, lowered: Lowered) -> None:
        """Record what the ``.pte`` bytes ``data`` were lowered from (the oldest of :data:`MEMO_SIZE` is dropped)."""
        digest = hashlib.sha256(data).hexdigest()
        self._lowered[digest] = lowered
        self._lowered.move_to_end(digest)
        while len(self._lowered) > MEMO_SIZE:
            self._lowered.popitem(last=False)

    def lookup(self, path: Path) -> Lowered:
        """What the ``.pte`` at ``path`` was lowered from.

        Raises:
            UnsupportedError: this instance did not write that file (a bundle built elsewhere).
        """
        found = self._lowered.get(hashlib.sha256(path.read_bytes()).hexdigest())
        if found is None:
            raise UnsupportedError(f"{path.name} was not built in this process: the executorch target compares the torch "
                                   "programs it lowers, not the .pte (which holds no intermediate tensors)",
                                   hint="compare layers while building: edgec build ... --report-layers")
        return found

    def float_graph(self, lowered: Lowered) -> Any:
        """The float graph module ``lowered`` is compared with: for int8, the float program through PT2E's own
        transforms with no annotation; for fp16 and fp32, the float program's module."""
        key = (lowered.source.digest, "fp16" if lowered.precision == "fp16" else "int8")
        if key not in self._float:
            from edgec.frameworks.torch_utils import safe_load_pt2

            program = safe_load_pt2(lowered.source.path)
            self._float[key] = program.module() if key[1] == "fp16" else float_view(program)
        return self._float[key]


def float_view(program: Any) -> Any:
    """The program's module after the transforms ``prepare_pt2e`` applies (conv-BatchNorm folding, the
    quantizer's ``transform_for_annotation``) with a quantizer that annotates nothing: float, and named as a
    converted module's compute ops are."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    return convert_pt2e(prepare_pt2e(integer_scalar_ops(program.module()), XNNPACKQuantizer()))


# ---- the reference graph


def graph_nodes(graph_module: Any) -> list[NodeInfo]:
    """The graph's ops in order as :class:`NodeInfo`, with their layers (rule 2)."""
    layer_of: dict[str, str] = {}
    nodes = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        op = short_op(op_name(node.target))
        inputs = [n for n in node.all_input_nodes if n.op == "call_function"]
        layer = module_name(node)
        if not layer:
            layer = layer_of[inputs[0].name] if op in ACTIVATIONS and inputs and inputs[0].name in layer_of else node.name
        layer_of[node.name] = layer
        nodes.append(NodeInfo(node.name, op, layer, node.name, tuple(n.name for n in node.all_input_nodes)))
    return nodes


def float_group(nodes: list[NodeInfo], layer: str) -> list[str]:
    """The layer and the layers producing the activations it reads, looking through :data:`SHAPE_OPS` (rule 4)."""
    producer = {n.output: n for n in nodes}
    found: list[str] = []

    def walk(tensor: str) -> None:
        node = producer.get(tensor)
        if node is None or node.layer == layer:
            return
        if node.op in SHAPE_OPS:
            if node.inputs:
                walk(node.inputs[0])
        elif node.layer not in found:
            found.append(node.layer)

    for node in nodes:
        if node.layer == layer:
            for tensor in node.inputs:
                walk(tensor)
    return [layer, *found]


def float_names(graph_module: Any, nodes: list[NodeInfo], layers: Iterable[str]) -> tuple[str, ...]:
    """What keeps ``layers`` in float: a module's qualified name, else the nodes of a layer that is no module."""
    modules = module_names(graph_module)
    names: list[str] = []
    for layer in layers:
        names += [layer] if layer in modules else [n.name for n in nodes if n.layer == layer]
    return tuple(dict.fromkeys(names))


# ---- running the graphs


def compare(memo: LayerMemo, reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
    """Per-node divergence of the program behind ``candidate`` from the float program (see the module docstring).

    Raises:
        UnsupportedError: either file was not written by this target instance.
        ConfigError: ``reference`` is not an fp32 program of the same source, or ``candidate`` is fp32.
    """
    ref, cand = memo.lookup(reference), memo.lookup(candidate)
    if ref.precision != "fp32" or ref.source.digest != cand.source.digest or cand.module is None:
        raise ConfigError(f"per-layer comparison needs an fp32 reference and a reduced-precision candidate of the same "
                          f"model; got {ref.precision} and {cand.precision} programs")
    float_module = memo.float_graph(cand)
    nodes = graph_nodes(float_module)
    wanted = [n.name for n in nodes if n.op not in SHAPE_OPS]
    effective = fake_quantized_outputs(cand.module)
    names = [s.name for s in cand.source.inputs]
    sums = ErrorSums()
    for feed in feeds:
        ref_values = capture(float_module, feed, names, set(wanted), half=False)
        got = capture(cand.module, feed, names, {effective.get(n, n) for n in wanted}, half=cand.precision == "fp16")
        for name in wanted:
            value = got.get(effective.get(name, name))
            if name in ref_values and value is not None:
                sums.add(name, ref_values[name], value)
    return rank_errors(nodes, sums.errors())


def fake_quantized_outputs(graph_module: Any) -> dict[str, str]:
    """Node -> the dequantize node its consumers read, where its output is quantized then dequantized (rule 1)."""
    found: dict[str, str] = {}
    for node in graph_module.graph.nodes:
        for q in node.users:
            if op_name(q.target) in _QUANTIZE and q.args and q.args[0] is node:
                dq = next((u for u in q.users if op_name(u.target) in _DEQUANTIZE), None)
                if dq is not None:
                    found.setdefault(node.name, dq.name)
    return found


def capture(graph_module: Any, feed: Feed, names: list[str], wanted: set[str], half: bool) -> dict[str, Any]:
    """Run ``graph_module`` on ``feed`` node by node and keep the float outputs of the ``wanted`` nodes (as
    float32 arrays); float inputs go in as float16 when ``half``."""
    import torch

    values: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            out = super().run_node(node)
            if node.name in wanted and isinstance(out, torch.Tensor) and out.is_floating_point():
                values[node.name] = out.detach().float().numpy().copy()
            return out

    args = [torch.from_numpy(feed[name]) for name in names]
    if half:
        args = [a.half() if a.is_floating_point() else a for a in args]
    with torch.no_grad():
        Recorder(graph_module).run(*args)
    return values
