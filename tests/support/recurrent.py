"""Tiny recurrent ONNX graphs (one ``LSTM``/``GRU``/``RNN`` node) built with onnx.helper, for the ``unroll_rnn``
pass and the tflite target's recurrent tests; no torch needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def make_recurrent_onnx(path: Path, op: str = "LSTM", *, hidden: int = 5, features: int = 3, steps: int | str = 4,
                        batch: int | str = 2, layout: int = 0, direction: str = "forward", state_inputs: bool = True,
                        peepholes: bool = False, sequence_lens: list[int] | None = None, opset: int = 14,
                        seed: int = 1, **attrs: Any) -> Path:
    """A graph ``x -> op -> (y, y_h[, y_c])``; with ``state_inputs`` the initial states are model inputs
    ``h0`` (and ``c0``), as a streaming model that carries its state between calls has them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dirs, gates = (2 if direction == "bidirectional" else 1), GATES[op]
    arrays = {"W": (dirs, gates * hidden, features), "R": (dirs, gates * hidden, hidden), "B": (dirs, 2 * gates * hidden)}
    if peepholes:
        arrays["P"] = (dirs, 3 * hidden)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), k) for k, s in arrays.items()]
    if sequence_lens is not None:
        inits.append(numpy_helper.from_array(np.array(sequence_lens, np.int32), "lens"))
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    inputs = ["x", "W", "R", "B", "lens" if sequence_lens is not None else "", *(states if state_inputs else [""] * len(states))]
    inputs += ["P"] if peepholes else []
    x_shape = [batch, steps, features] if layout else [steps, batch, features]
    s_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    y_shape = [batch, steps, dirs, hidden] if layout else [steps, dirs, batch, hidden]
    outputs = ["y", "y_h", "y_c"][: len(states) + 1]
    if opset >= 14:  # the attribute exists from opset 14
        attrs["layout"] = layout
    node = helper.make_node(op, inputs, outputs, name=f"/rec/{op}", hidden_size=hidden, direction=direction, **attrs)
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    graph_inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, s_shape) for s in states] if state_inputs else []
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, y_shape if o == "y" else s_shape) for o in outputs]
    graph = helper.make_graph([node], f"tiny_{op.lower()}", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_lstm_onnx(path: Path) -> Path:
    """The contract tests' model for ``unroll_rnn``: a forward LSTM with its state as inputs."""
    return make_recurrent_onnx(path, "LSTM")
