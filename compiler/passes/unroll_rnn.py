"""Unroll ONNX ``LSTM``, ``GRU`` and ``RNN`` nodes over their fixed sequence length into plain ops per time step.

Why: onnx2tf 1.28 turns a recurrent node into a Keras RNN layer, a TFLite ``WHILE`` loop. TensorFlow 2.21's
full-integer INT8 quantizer crashes the process (a segmentation fault) on that loop, dynamic-range INT8 leaves
its weights in float, and onnx2tf fails outright when the initial state is a 3-D model input it made
channels-last (``initial_state`` not compatible with ``cell.state_size``). Unrolled, the node is
``MatMul``/``Add``/``Sigmoid``/``Tanh``/``Mul`` per step: TFLite builtins that every precision quantizes op by op.
The tflite target's ONNX route asks for this pass (``TfliteTarget.onnx_rewrites``).

Math (why it is exact; ONNX operator spec, gates in ONNX order, ``Wt = W[d]ᵀ``, ``Rt = R[d]ᵀ``):
- all steps' input projections at once: ``XW = X·Wt + Wb (+ Rb)``, then ``XW[t]`` per step (``Gather``/``Slice``);
- LSTM (gates i, o, f, c): ``g = XW[t] + H·Rt``; ``i = f(gi + Pi⊙C)``, ``f = f(gf + Pf⊙C)``,
  ``C' = f⊙C + i⊙g(gc)``, ``o = f(go + Po⊙C')``, ``H' = o⊙h(C')``;
- GRU (gates z, r, h): ``z = f(xz + H·Rzt + Rbz)``, ``r = f(xr + H·Rrt + Rbr)``; ``linear_before_reset=1``:
  ``n = g(xh + r⊙(H·Rht + Rbh))``, else ``n = g(xh + (r⊙H)·Rht + Rbh)``; ``H' = (1 - z)⊙n + z⊙H``, written
  ``n + z⊙(H - n)``;
- RNN: ``H' = f(XW[t] + H·Rt)``.
A missing initial state is zero: the first step then drops the terms that read it (no zero tensors, so the
batch size may stay dynamic). The reverse direction runs ``t = T-1 … 0``; ``Y`` keeps time order. Only the
summation order of the bias changes (below 1e-6 relative).

Rules, for each ``LSTM``/``GRU``/``RNN`` node:
1. Only the default ONNX domain.
2. The sequence length ``T`` is static (shape inference or a fixed ``--input``) and ``1 <= T <= 512``
   (:data:`MAX_STEPS`).
3. ``W``, ``R`` and, where given, ``B`` and ``P`` are initializers (constant weights).
4. ``sequence_lens`` is absent, or an initializer whose values all equal ``T``.
5. Activations are among Sigmoid, Tanh and Relu; no ``clip``; LSTM ``input_forget`` is 0.
6. The new nodes are named ``<node>/t<step>/<what>``, so converted layer names keep the source scope; the
   outputs keep their names. Between one ``Reshape`` of each input (``X`` to ``[T·B, I]`` or ``[B·T, I]``, a
   state to ``[dirs·B, H]`` or ``[B, dirs·H]``) and one ``Reshape`` of each output, every tensor is 2-D
   ``[batch, features]`` (or 1-D): converters that move 3-D/4-D tensors to channels-last (onnx2tf) leave them
   as they are. ``Split`` takes its sizes as an input from opset 13 (an attribute below; equal parts take
   ``num_outputs`` from opset 18).
7. A constant initial state (an initializer) is folded: zeros as if absent, else one constant per direction.

A node that breaks a rule stays as it is; the stats count, per broken rule, the nodes it stopped
(``not_unrolled``), and the log says why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.compiler.passes.upgrade_opset import default_opset
from edgec.core.errors import require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils

RECURRENT = {"LSTM": 4, "GRU": 3, "RNN": 1}
"""Recurrent op types and their number of gates."""
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
SUPPORTED_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Relu"})
MAX_STEPS = 512
"""Longest sequence unrolled (rule 2): each step adds 10-20 nodes. Measured on an LSTM 40 -> 64 with its state as
inputs, tflite fp32 (2 cores): T=100 builds in 34 s into 1607 ops (358 KB), T=512 in 188 s into 8199 ops (1.4 MB)."""
WHY = {
    1: "1: not the default ONNX domain (a custom op)",
    2: "2: the sequence length is dynamic or above 512 steps (fix it with --input)",
    3: "3: weights are not initializers",
    4: "4: sequence_lens varies per batch item",
    5: "5: activations other than Sigmoid/Tanh/Relu, clip or input_forget",
}


@dataclass(frozen=True)
class _Cell:
    """One recurrent node's constants and attributes."""

    op: str
    hidden: int
    steps: int
    layout: int
    activations: tuple[str, ...]
    weights: dict[str, np.ndarray]
    linear_before_reset: bool = False

    @property
    def directions(self) -> int:
        return int(self.weights["W"].shape[0])

    @property
    def inputs(self) -> int:
        return int(self.weights["W"].shape[2])


@dataclass
class _Graph:
    """The nodes and initializers the pass writes, with unique value names."""

    opset: int
    taken: set[str]
    """Value names in use."""
    node_names: set[str]
    nodes: list[Any] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)
    """Inputs of the unrolled nodes: their initializers go when nothing else reads them."""
    initializers: list[Any] = field(default_factory=list)

    def unique(self, name: str, taken: set[str] | None = None) -> str:
        taken = self.taken if taken is None else taken
        candidate, n = name, 1
        while candidate in taken:
            candidate, n = f"{name}_{n}", n + 1
        taken.add(candidate)
        return candidate

    def node_name(self, name: str) -> str:
        return self.unique(name, self.node_names)

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        unique = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), unique))  # 0-d stays 0-d
        return unique

    def op(self, op_type: str, inputs: list[str], name: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        output = out or self.unique(name)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.node_name(name), **attrs))
        return output

    def split(self, value: str, sizes: list[int], axis: int, name: str) -> list[str]:
        """``Split`` into parts of ``sizes`` along ``axis`` (its ``split`` an input from opset 13)."""
        from onnx import helper

        outs = [self.unique(f"{name}_{i}") for i in range(len(sizes))]
        if self.opset >= 13:
            sizes_input = self.const(f"{name}_sizes", np.array(sizes, np.int64))
            node = helper.make_node("Split", [value, sizes_input], outs, name=self.node_name(name), axis=axis)
        else:
            node = helper.make_node("Split", [value], outs, name=self.node_name(name), axis=axis, split=sizes)
        self.nodes.append(node)
        return outs

    def split_equal(self, value: str, parts: int, axis: int, name: str) -> list[str]:
        """``Split`` into ``parts`` equal parts (a dynamic batch has no sizes to give)."""
        from onnx import helper

        outs = [self.unique(f"{name}_{i}") for i in range(parts)]
        attrs: dict[str, Any] = {"num_outputs": parts} if self.opset >= 18 else {}
        self.nodes.append(helper.make_node("Split", [value], outs, name=self.node_name(name), axis=axis, **attrs))
        return outs

    def reshape(self, value: str, shape: list[int], name: str, out: str | None = None) -> str:
        return self.op("Reshape", [value, self.const(f"{name}_shape", np.array(shape, np.int64))], name, out)

    def concat(self, parts: list[str], axis: int, name: str) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, name, axis=axis)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _static_steps(node: Any, shapes: dict[str, list[Any]], layout: int) -> int | None:
    dims = shapes.get(node.input[0])
    step = dims[layout] if dims and len(dims) == 3 else None
    return step if isinstance(step, int) and step > 0 else None


def _read_cell(node: Any, shapes: dict[str, list[Any]], consts: dict[str, np.ndarray], max_steps: int) -> _Cell | int:
    """The node's :class:`_Cell`, or the number of the rule it breaks."""
    attrs = _attrs(node)
    if node.domain not in DEFAULT_DOMAINS:
        return 1
    layout = int(attrs.get("layout", 0))
    steps = _static_steps(node, shapes, layout)
    if steps is None or steps > max_steps:
        return 2
    names = dict(zip(("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"), node.input, strict=False))
    weights = {k: consts[v] for k, v in names.items() if k not in ("X", "sequence_lens") and v in consts}
    if any(names.get(k) and k not in weights for k in ("W", "R", "B", "P")):
        return 3
    lens = names.get("sequence_lens")
    if lens and (lens not in consts or not np.all(consts[lens] == steps)):
        return 4
    directions = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
    activations = tuple(a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", ()))
    activations = activations or DEFAULT_ACTIVATIONS[node.op_type] * directions
    if set(activations) - SUPPORTED_ACTIVATIONS or "clip" in attrs or attrs.get("input_forget", 0):
        return 5
    return _Cell(node.op_type, int(attrs["hidden_size"]), steps, layout, activations, weights,
                 bool(attrs.get("linear_before_reset", 0)))


# ---- one direction, step by step ----------------------------------------------------------------------


@dataclass
class _Direction:
    """What every step of one direction reads: its projected inputs, transposed recurrent weights and names."""

    cell: _Cell
    index: int
    xs: str
    """The projected inputs of all steps, 2-D: ``[T, B·G]`` (layout 0) or ``[B, T·G]`` (layout 1)."""
    rt: str
    prefix: str
    bias_h: str | None = None
    """GRU with ``linear_before_reset``: ``Rbh``, added to ``H·Rht`` inside the reset gate."""

    def act(self, position: int) -> str:
        per_direction = len(DEFAULT_ACTIVATIONS[self.cell.op])
        return self.cell.activations[self.index * per_direction + position]

    def step_input(self, g: _Graph, t: int, name: str) -> str:
        """``XW[t]`` as ``[B, G]``."""
        width = RECURRENT[self.cell.op] * self.cell.hidden
        if self.cell.layout == 0:
            row = g.op("Gather", [self.xs, g.const(f"{name}/t", np.array(t, np.int64))], f"{name}/x_row", axis=0)
            return g.reshape(row, [-1, width], f"{name}/x")
        bounds = [g.const(f"{name}/x_{k}", np.array([v], np.int64)) for k, v in
                  (("start", t * width), ("end", (t + 1) * width), ("axis", 1))]
        return g.op("Slice", [self.xs, *bounds], f"{name}/x")


def _projection(g: _Graph, cell: _Cell, d: int, rows: str, prefix: str) -> _Direction:
    """``XW = X·Wt + bias`` for all steps at once (``rows``: X as ``[T·B, I]`` or ``[B·T, I]``), and the
    recurrent weights (the math in the module docstring)."""
    h, gates = cell.hidden, RECURRENT[cell.op]
    w, r = cell.weights["W"][d], cell.weights["R"][d]
    b = cell.weights.get("B", np.zeros((cell.directions, 2 * gates * h), np.float32))[d]
    wb, rb = b[: gates * h], b[gates * h:]
    bias, bias_h = wb + rb, None
    if cell.op == "GRU" and cell.linear_before_reset:
        bias = wb + np.concatenate([rb[: 2 * h], np.zeros(h, rb.dtype)])
        bias_h = g.const(f"{prefix}/Rbh", rb[2 * h:]) if np.any(rb[2 * h:]) else None
    if cell.op == "GRU" and not cell.linear_before_reset:
        r = r[: 2 * h]  # H·Rht is taken after the reset gate (_reset_term)
    matmul = g.op("MatMul", [rows, g.const(f"{prefix}/Wt", w.T)], f"{prefix}/x_matmul")
    xw = g.op("Add", [matmul, g.const(f"{prefix}/bias", bias.astype(w.dtype))], f"{prefix}/x_bias")
    xs = g.reshape(xw, [cell.steps, -1] if cell.layout == 0 else [-1, cell.steps * gates * h], f"{prefix}/x_steps")
    return _Direction(cell, d, xs, g.const(f"{prefix}/Rt", r.T), prefix, bias_h)


def _gates(g: _Graph, dr: _Direction, t: int, h: str | None, name: str) -> str:
    """``XW[t]`` plus ``H·Rt`` when there is a state."""
    x_t = dr.step_input(g, t, name)
    if h is None:
        return x_t
    return g.op("Add", [x_t, g.op("MatMul", [h, dr.rt], f"{name}/h_matmul")], f"{name}/gates")


def _lstm_step(g: _Graph, dr: _Direction, t: int, h: str | None, c: str | None) -> tuple[str, str]:
    name = f"{dr.prefix}/t{t}"
    gi, go, gf, gc = g.split(_gates(g, dr, t, h, name), [dr.cell.hidden] * 4, 1, f"{name}/split")
    peep = dr.cell.weights.get("P")
    p_i, p_o, p_f = (np.split(peep[dr.index], 3) if peep is not None else (None, None, None))

    def peephole(gate: str, p: np.ndarray | None, state: str | None, what: str) -> str:
        if p is None or state is None:
            return gate
        scaled = g.op("Mul", [state, g.const(f"{name}/P{what}", p)], f"{name}/peep_{what}")
        return g.op("Add", [gate, scaled], f"{name}/{what}_peep")

    i = g.op(dr.act(0), [peephole(gi, p_i, c, "i")], f"{name}/i")
    cand = g.op(dr.act(1), [gc], f"{name}/candidate")
    c_new = g.op("Mul", [i, cand], f"{name}/i_candidate")
    if c is not None:
        f = g.op(dr.act(0), [peephole(gf, p_f, c, "f")], f"{name}/f")
        c_new = g.op("Add", [g.op("Mul", [f, c], f"{name}/f_c"), c_new], f"{name}/c")
    o = g.op(dr.act(0), [peephole(go, p_o, c_new, "o")], f"{name}/o")
    return g.op("Mul", [o, g.op(dr.act(2), [c_new], f"{name}/c_act")], f"{name}/h"), c_new


def _gru_step(g: _Graph, dr: _Direction, t: int, h: str | None) -> str:
    name, size = f"{dr.prefix}/t{t}", dr.cell.hidden
    xz, xr, xh = g.split(dr.step_input(g, t, name), [size] * 3, 1, f"{name}/x_split")
    hh = None
    if h is not None:
        parts = g.split(g.op("MatMul", [h, dr.rt], f"{name}/h_matmul"), [size] * (3 if dr.cell.linear_before_reset else 2),
                        1, f"{name}/h_split")
        hz, hr, hh = parts[0], parts[1], (parts[2] if len(parts) == 3 else None)
        xz, xr = g.op("Add", [xz, hz], f"{name}/z_in"), g.op("Add", [xr, hr], f"{name}/r_in")
    z = g.op(dr.act(0), [xz], f"{name}/z")
    reset = _reset_term(g, dr, h, hh, g.op(dr.act(0), [xr], f"{name}/r") if h is not None or dr.bias_h else None,
                        name)
    n = g.op(dr.act(1), [g.op("Add", [xh, reset], f"{name}/n_in") if reset else xh], f"{name}/n")
    if h is None:  # H' = (1 - z) * n
        return g.op("Sub", [n, g.op("Mul", [z, n], f"{name}/z_n")], f"{name}/h")
    diff = g.op("Sub", [h, n], f"{name}/h_minus_n")
    return g.op("Add", [n, g.op("Mul", [z, diff], f"{name}/z_diff")], f"{name}/h")


def _reset_term(g: _Graph, dr: _Direction, h: str | None, hh: str | None, r: str | None, name: str) -> str | None:
    """What the reset gate adds to the candidate's input (the GRU line of the module docstring)."""
    if r is None:
        return None
    if dr.cell.linear_before_reset:
        inner = hh
        if dr.bias_h:
            inner = g.op("Add", [hh, dr.bias_h], f"{name}/h_bias") if hh else dr.bias_h
        return g.op("Mul", [r, inner], f"{name}/r_h") if inner else None
    if h is None:
        return None
    rh_weights = g.const(f"{name}/Rht", dr.cell.weights["R"][dr.index][2 * dr.cell.hidden:].T)
    return g.op("MatMul", [g.op("Mul", [r, h], f"{name}/r_h"), rh_weights], f"{name}/r_h_matmul")


def _rnn_step(g: _Graph, dr: _Direction, t: int, h: str | None) -> str:
    name = f"{dr.prefix}/t{t}"
    return g.op(dr.act(0), [_gates(g, dr, t, h, name)], f"{name}/h")


def _initial(g: _Graph, node: Any, cell: _Cell, position: int, base: str) -> list[str | None]:
    """Per direction, the initial state at input ``position`` as ``[B, H]``, or None where it is not given."""
    if len(node.input) <= position or not node.input[position]:
        return [None] * cell.directions
    name, dirs, size = f"{base}/initial_{position}", cell.directions, cell.hidden
    constant = cell.weights.get(("initial_h", "initial_c")[position - 5])
    if constant is not None:  # zeros: as if absent; else one constant per direction
        parts = [constant[d] if cell.layout == 0 else constant[:, d] for d in range(dirs)]
        return [g.const(f"{name}_{d}", p) if np.any(p) else None for d, p in enumerate(parts)]
    if cell.layout == 0:  # [dirs, B, H] -> [dirs·B, H]
        rows = g.reshape(node.input[position], [-1, size], name)
        return list(g.split_equal(rows, dirs, 0, f"{name}_split") if dirs > 1 else [rows])
    cols = g.reshape(node.input[position], [-1, dirs * size], name)  # [B, dirs, H] -> [B, dirs·H]
    return list(g.split(cols, [size] * dirs, 1, f"{name}_split") if dirs > 1 else [cols])


_Run = tuple[list[str], str, "str | None"]
"""One direction's hidden states in time order, its last hidden state and its last cell state."""


def _run_direction(g: _Graph, node: Any, cell: _Cell, d: int, rows: str, initial: tuple[str | None, str | None],
                   base: str) -> _Run:
    prefix = f"{base}/{'reverse' if d == 1 else 'forward'}" if cell.directions == 2 else base
    dr = _projection(g, cell, d, rows, prefix)
    h, c = initial
    reverse = d == 1 or _attrs(node).get("direction") in (b"reverse", "reverse")
    states: dict[int, str] = {}
    for t in range(cell.steps - 1, -1, -1) if reverse else range(cell.steps):
        if cell.op == "LSTM":
            h, c = _lstm_step(g, dr, t, h, c)
        else:
            h = _gru_step(g, dr, t, h) if cell.op == "GRU" else _rnn_step(g, dr, t, h)
        states[t] = h
    return [states[t] for t in range(cell.steps)], states[0 if reverse else cell.steps - 1], c


def _outputs(g: _Graph, node: Any, cell: _Cell, runs: list[_Run], base: str) -> None:
    """``Y`` ``[T, dirs, B, H]`` (layout 1: ``[B, T, dirs, H]``), ``Y_h`` and ``Y_c`` ``[dirs, B, H]``
    (layout 1: ``[B, dirs, H]``), written under the node's output names: the 2-D states are concatenated
    (rows for layout 0, columns for layout 1) and reshaped once."""
    names = list(node.output) + [""] * (3 - len(node.output))
    axis, dirs, size = (0, cell.directions, cell.hidden)
    axis = 0 if cell.layout == 0 else 1
    if names[0]:
        ordered = [run[0][t] for t in range(cell.steps) for run in runs]
        shape = [cell.steps, dirs, -1, size] if cell.layout == 0 else [-1, cell.steps, dirs, size]
        g.reshape(g.concat(ordered, axis, f"{base}/y"), shape, f"{base}/y_shape", names[0])
    for position in (1, 2):
        lasts = [run[position] for run in runs]
        if names[position] and all(lasts):
            shape = [dirs, -1, size] if cell.layout == 0 else [-1, dirs, size]
            joined = g.concat([str(x) for x in lasts], axis, f"{base}/last_{position}")
            g.reshape(joined, shape, f"{base}/last_{position}_shape", names[position])


def unroll_node(g: _Graph, node: Any, cell: _Cell) -> None:
    """Write the unrolled ``node`` into ``g`` (the math and rule 6 of the module docstring): every tensor
    between the first and the last ``Reshape`` is 2-D ``[batch, features]``, which converters that move
    3-D/4-D tensors to channels-last (onnx2tf) leave as they are."""
    base = node.name or node.output[0]
    rows = g.reshape(node.input[0], [-1, cell.inputs], f"{base}/x_rows")
    hs, cs = _initial(g, node, cell, 5, base), _initial(g, node, cell, 6, base)
    runs = [_run_direction(g, node, cell, d, rows, (hs[d], cs[d]), base) for d in range(cell.directions)]
    _outputs(g, node, cell, runs, base)


# ---- the pass -----------------------------------------------------------------------------------------


def _shapes(model: Any) -> dict[str, list[Any]]:
    onnx = require("onnx", "onnx", "unrolling recurrent nodes")
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes: dict[str, list[Any]] = {}
    for v in (*graph.input, *graph.value_info, *graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def unroll(model: Any, max_steps: int = MAX_STEPS) -> tuple[Counter[str], Counter[str]]:
    """Unroll every recurrent node that follows the rules, in place; returns the counts per op type and,
    per broken rule, the misses."""
    from onnx import numpy_helper

    graph = model.graph
    done: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    if not any(n.op_type in RECURRENT for n in graph.node):
        return done, missed
    shapes = _shapes(model)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    taken = {name for n in graph.node for name in (*n.input, *n.output)} | set(consts)
    g = _Graph(default_opset(model), taken, {n.name for n in graph.node})
    for node in graph.node:
        cell = _read_cell(node, shapes, consts, max_steps) if node.op_type in RECURRENT else None
        if isinstance(cell, _Cell):
            unroll_node(g, node, cell)
            g.replaced.update(node.input)
            done[node.op_type] += 1
            continue
        if isinstance(cell, int):
            missed[WHY[cell]] += 1
        g.nodes.append(node)
    if done:
        del graph.node[:]
        graph.node.extend(g.nodes)
        read = {name for n in g.nodes for name in n.input}
        kept = [i for i in graph.initializer if i.name in read or i.name not in g.replaced]
        del graph.initializer[:]
        graph.initializer.extend([*kept, *g.initializers])
    return done, missed


class UnrollRnn(Pass):
    """``LSTM``/``GRU``/``RNN`` -> plain ops per time step (see the module docstring for the rules)."""

    name = "unroll_rnn"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        model = onnx_utils.load_model(artifact.path)
        done, missed = unroll(model)
        for why, n in sorted(missed.items()):
            ctx.log(f"unroll_rnn: {n} recurrent node(s) not unrolled, rule {why}")
        stats = {"unrolled": dict(sorted(done.items())), "not_unrolled": dict(sorted(missed.items()))}
        if not done:
            return PassResult(unchanged(artifact, ctx), False, stats)
        return PassResult(onnx_utils.save_artifact(model, ctx.work_dir), True, stats)
