"""LSTMs in the executorch target as loops, not unrolled graphs (issue 18).

ExecuTorch 1.5.1 decomposes ``aten.lstm.input`` into one cell per time step and layer (about 11 ops each), and
XNNPACK's partitioner does not take the cell's ``split_with_sizes`` of the gates, so every step becomes a
delegate of its own, each run through XNNPACK's whole pass pipeline while the partitioner recompiles the
growing top-level graph: lowering time grows faster than the step count (one layer of 64 units: 20 steps 28 s,
40 steps 27 s, 80 steps 220 s under cProfile; Resemblyzer's 3 layers over 160 steps did not finish in 900 s).

Rules:
1. An ``aten.lstm.input`` with a static 3-D input (batch first or not, one or two directions, with or without
   biases, no projection, no dropout in training mode) is rewritten before re-export into one
   ``torch.ops.higher_order.scan`` per layer and direction (:func:`scan_lstm`): the input projection of every step in one linear outside the loop, and a
   loop body of one matmul on the hidden state, gate slices, sigmoids, tanhs and products. The program's size
   no longer depends on the step count; ExecuTorch emits the scan as a loop of jump instructions.
2. XNNPACK's partitioner looks only at the top-level graph; :func:`scan_partitioner` also hands a float32 or
   float16 loop body whose ops are all in :data:`BODY_OPS` to XNNPACK as one delegate (its weights are loop
   inputs, which XNNPACK's matmul takes). The copies of the loop's outputs stay on portable kernels. A body
   left on portable kernels runs 20-30x slower (Resemblyzer: 1.2-1.6 s a call against 60-90 ms; measured).
3. Any other recurrent op (GRU, RNN, an LSTM with projections) still unrolls for xnnpack: over
   :data:`MAX_UNROLLED_STEPS` cells (steps x layers x directions, where the steps are static) it is refused
   before lowering (:func:`check_unrolled`). Core ML's partitioner keeps ``aten.lstm`` whole (one layer over 100
   steps 92 s, two layers 104 s; measured), so the other backends lower LSTMs as they are.
"""

from __future__ import annotations

import copy
from typing import Any

from edgec.core.errors import UnsupportedError

MAX_UNROLLED_STEPS = 64
"""Unrolled recurrent cells (steps x layers x directions) lowered without a loop; measured on one 64-unit LSTM
layer with XNNPACK (ExecuTorch 1.5.1, 2 shared cores): 20 steps 28 s, 40 steps 27 s, 80 steps over 200 s."""
BODY_OPS = frozenset({"aten.mm.default", "aten.addmm.default", "aten.permute_copy.default", "aten.add.Tensor",
                      "aten.mul.Tensor", "aten.sigmoid.default", "aten.tanh.default", "aten.slice_copy.Tensor"})
"""Edge ops of a loop body XNNPACK takes with every operand a loop input (rule 2)."""
UNROLLING_BACKENDS = ("xnnpack",)
"""Backends whose lowering of an unrolled recurrent op was measured to grow past minutes (rule 3)."""
_COPIES = frozenset({"dim_order_ops._clone_dim_order.default", "aten.clone.default"})


def scannable(node: Any) -> bool:
    """Whether ``node`` is an ``aten.lstm.input`` :func:`scan_lstm` computes (rule 1)."""
    import torch

    if node.op != "call_function" or node.target != torch.ops.aten.lstm.input:
        return False
    x, _, params, has_biases, layers, dropout, train, bidirectional, _ = node.args
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    per_cell = 4 if has_biases else 2
    return (isinstance(val, torch.Tensor) and val.dim() == 3 and all(isinstance(d, int) for d in val.shape)
            and len(params) == layers * (2 if bidirectional else 1) * per_cell and not (train and dropout))


def scanned(graph_module: Any) -> tuple[Any, int]:
    """A copy of ``graph_module`` with its scannable LSTMs calling :func:`scan_lstm`, and how many; the module
    itself when there are none (the per-layer tools keep running the original with ``torch.fx``)."""
    if not any(scannable(n) for n in graph_module.graph.nodes):
        return graph_module, 0
    graph_module = copy.deepcopy(graph_module)
    found = [n for n in graph_module.graph.nodes if scannable(n)]
    for node in found:
        node.target = scan_lstm
    graph_module.recompile()
    return graph_module, len(found)


def scan_lstm(x: Any, hx: Any, params: Any, has_biases: bool, num_layers: int, dropout: float, train: bool,
              bidirectional: bool, batch_first: bool) -> tuple[Any, Any, Any]:
    """``aten.lstm.input`` (inference: no dropout) with one scan per layer and direction (rule 1)."""
    import torch

    seq = x.transpose(0, 1) if batch_first else x
    h0, c0 = (state.to(x.dtype) for state in hx)  # the exported zero state stays float32 in a float16 program
    directions, per_cell = (2 if bidirectional else 1), (4 if has_biases else 2)
    hs, cs = [], []
    for layer in range(num_layers):
        outs = []
        for direction in range(directions):
            cell = layer * directions + direction
            weights = params[cell * per_cell:(cell + 1) * per_cell]
            out, h, c = _scan_cell(seq, h0[cell], c0[cell], weights, reverse=direction == 1)
            outs.append(out)
            hs.append(h)
            cs.append(c)
        seq = torch.cat(outs, dim=-1) if directions == 2 else outs[0]
    return seq.transpose(0, 1) if batch_first else seq, torch.stack(hs), torch.stack(cs)


def _scan_cell(seq: Any, h0: Any, c0: Any, weights: Any, reverse: bool) -> tuple[Any, Any, Any]:
    """One layer and direction over ``seq`` (time first): ``(outputs, last h, last c)``; gates in torch's order
    (input, forget, cell, output)."""
    import torch
    from torch._higher_order_ops.scan import scan

    w_ih, w_hh = weights[0], weights[1]
    projected = torch.nn.functional.linear(seq, w_ih)
    if len(weights) == 4:
        projected = projected + (weights[2] + weights[3])  # a bias computed here would keep the linear off XNNPACK
    size = w_hh.shape[1]

    def step(carry: tuple[Any, Any], xt: Any) -> tuple[tuple[Any, Any], Any]:
        h, c = carry
        gates = xt + torch.nn.functional.linear(h, w_hh)
        i, f = torch.sigmoid(gates[:, :size]), torch.sigmoid(gates[:, size:2 * size])
        g, o = torch.tanh(gates[:, 2 * size:3 * size]), torch.sigmoid(gates[:, 3 * size:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c), h.clone()  # scan outputs may not alias the carry

    (h, c), out = scan(step, (h0.clone(), c0.clone()), projected, reverse=reverse)
    return out, h, c


def check_unrolled(graph_module: Any, backend: str) -> None:
    """Refuse recurrent ops that would unroll for xnnpack into more than :data:`MAX_UNROLLED_STEPS` cells (rule 3).

    Raises:
        UnsupportedError: naming the op, its steps and cells, and what builds instead.
    """
    if backend not in UNROLLING_BACKENDS:
        return
    for node in graph_module.graph.nodes:
        name = _recurrent_name(node)
        if name is None or scannable(node):
            continue
        steps, cells = _unrolled(node)
        if steps is not None and cells > MAX_UNROLLED_STEPS:
            raise UnsupportedError(
                f"executorch would unroll {name} over {steps} steps into {cells} cells (over {MAX_UNROLLED_STEPS}: "
                "lowering takes many minutes)",
                hint="build it for --target onnx or tflite, or as an LSTM (which lowers as a loop)")


def _recurrent_name(node: Any) -> str | None:
    """``aten.lstm.input`` and the like for a recurrent op, else None."""
    from edgec.targets._executorch_program import RECURRENT_OPS, op_name, short_op

    if node.op != "call_function":
        return None
    name = op_name(node.target)
    return name if short_op(name) in RECURRENT_OPS else None


def _unrolled(node: Any) -> tuple[int | None, int]:
    """``(steps, steps x layers x directions)`` of a recurrent node in its ``.input`` overload (``input, hx,
    params, has_biases, num_layers, dropout, train, bidirectional, batch_first``); ``(None, 0)`` when unknown."""
    import torch

    args = node.args
    val = args[0].meta.get("val") if args and isinstance(args[0], torch.fx.Node) else None
    if len(args) != 9 or not isinstance(val, torch.Tensor) or val.dim() not in (2, 3):
        return None, 0
    layers, bidirectional, batch_first = args[4], args[7], args[8]
    steps = val.shape[1 if batch_first and val.dim() == 3 else 0]
    if not isinstance(steps, int):
        return None, 0
    return steps, steps * int(layers) * (2 if bidirectional else 1)


def scan_partitioner() -> Any:
    """An ``XnnpackPartitioner`` that also delegates loop bodies (rule 2)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.graph_module import get_control_flow_submodules

    class ScanBodyPartitioner(XnnpackPartitioner):  # type: ignore[misc]
        def partition(self, exported_program: Any) -> Any:
            result = super().partition(exported_program)
            for index, (_, body, _) in enumerate(get_control_flow_submodules(exported_program.graph_module)):
                if tag_body(body, f"scan_body{index}"):
                    result.partition_tags[f"scan_body{index}"] = self.delegation_spec
            return result

    return ScanBodyPartitioner()


def tag_body(body: Any, tag: str) -> bool:
    """Tag the ops of a float32 or float16 loop body whose ops are all in :data:`BODY_OPS` (its output copies
    aside) for one delegate; False (nothing tagged) otherwise."""
    import torch

    from edgec.targets._executorch_program import op_name

    floats = (torch.float32, torch.float16)
    ops = [n for n in body.graph.nodes if n.op == "call_function" and op_name(n.target) not in _COPIES]
    values = [n.meta.get("val") for n in body.graph.nodes if n.op in ("placeholder", "call_function")]
    if not ops or any(op_name(n.target) not in BODY_OPS for n in ops) or any(
            isinstance(v, torch.Tensor) and v.dtype not in floats for v in values):
        return False
    for node in ops:
        node.meta["delegation_tag"] = tag
    return True
