"""``unroll_rnn`` on one-node recurrent graphs built inline: the unrolled graph computes what the ``LSTM``/``GRU``/
``RNN`` node computed (onnxruntime, or onnx's reference evaluator for ``layout=1``, which onnxruntime lacks), keeps
its tensors 2-D between the first and the last ``Reshape``, and says which rule left a node alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.passes.base import PassContext, PassResult, make_pass
from edgec.compiler.passes.unroll_rnn import unroll
from edgec.frameworks import onnx_utils
from tests.support.recurrent import make_recurrent_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run(src: Path, work: Path) -> tuple[PassResult, list[str]]:
    work.mkdir(parents=True, exist_ok=True)
    logged: list[str] = []
    result = make_pass("unroll_rnn").run(onnx_utils.artifact_from_file(src), PassContext(work, log=logged.append))
    return result, logged


def feeds(path: Path, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = onnx.load(str(path))
    out = {}
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
        out[value.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def reference(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    layout = next((a.i for a in onnx.load(str(path)).graph.node[0].attribute if a.name == "layout"), 0)
    if layout == 1:  # onnxruntime: "Batchwise recurrent operations (layout == 1) are not supported"
        from onnx.reference import ReferenceEvaluator

        return list(ReferenceEvaluator(str(path)).run(None, feed))
    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed))


def unrolled(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed))


CASES: dict[str, dict[str, Any]] = {
    "lstm_state_inputs": {"op": "LSTM"},
    "lstm_peepholes_full_sequence_lens": {"op": "LSTM", "peepholes": True, "sequence_lens": [4, 4]},
    "lstm_bidirectional_no_state": {"op": "LSTM", "direction": "bidirectional", "state_inputs": False},
    "lstm_bidirectional_opset18_state": {"op": "LSTM", "direction": "bidirectional", "opset": 18},
    "lstm_layout1_bidirectional": {"op": "LSTM", "layout": 1, "direction": "bidirectional", "peepholes": True},
    "lstm_opset12_reverse": {"op": "LSTM", "direction": "reverse", "opset": 12},
    "gru_linear_before_reset": {"op": "GRU", "linear_before_reset": 1},
    "gru_reset_before_linear_reverse": {"op": "GRU", "direction": "reverse"},
    "gru_bidirectional_no_state": {"op": "GRU", "direction": "bidirectional", "state_inputs": False,
                                   "linear_before_reset": 1},
    "gru_layout1": {"op": "GRU", "layout": 1, "linear_before_reset": 1},
    "rnn_bidirectional_relu_tanh": {"op": "RNN", "direction": "bidirectional", "activations": ["Relu", "Tanh"]},
    "lstm_one_step": {"op": "LSTM", "steps": 1},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unrolled_node_gives_the_recurrent_nodes_outputs(case: str, tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", **CASES[case])
    result, logged = run(src, tmp_path / "w")
    op = CASES[case]["op"]
    assert result.modified and result.stats == {"unrolled": {op: 1}, "not_unrolled": {}} and logged == []
    model = onnx.load(str(result.artifact.path))
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.op_type in ("LSTM", "GRU", "RNN") for n in model.graph.node)
    assert {i.name for i in model.graph.initializer}.isdisjoint({"W", "R", "B", "P"})  # replaced, not left behind
    feed = feeds(src, batch=2)
    for got, want in zip(unrolled(result.artifact.path, feed), reference(src, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unrolled_tensors_are_2d_between_the_first_and_last_reshape(tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", "LSTM", direction="bidirectional", peepholes=True)
    result, _ = run(src, tmp_path / "w")
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(result.artifact.path)), strict_mode=True)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    edges = {n.output[0] for n in inferred.graph.node if n.op_type == "Reshape" and n.input[0] in ("x", "h0", "c0")}
    inner = {o for n in inferred.graph.node if n.op_type != "Reshape" or n.output[0] in edges for o in n.output}
    assert edges and {ranks[name] for name in inner if name in ranks} <= {1, 2}


def test_dynamic_batch_stays_dynamic(tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", "GRU", batch="batch", direction="bidirectional",
                              linear_before_reset=1)
    result, _ = run(src, tmp_path / "w")
    for batch in (1, 3):
        feed = feeds(src, batch=batch, seed=batch)
        for got, want in zip(unrolled(result.artifact.path, feed), reference(src, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_initial_state_constant_is_dropped_and_nonzero_one_kept(tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", "LSTM", state_inputs=False)
    model = onnx.load(str(src))
    zeros, ones = (onnx.numpy_helper.from_array(np.full((1, 2, 5), v, np.float32), n) for v, n in ((0, "h0"), (0.5, "c0")))
    model.graph.initializer.extend([zeros, ones])
    model.graph.node[0].input[5:7] = ["h0", "c0"]
    expected = list(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds(src, 2)))
    done, _ = unroll(model)
    assert done == {"LSTM": 1}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not any(name in consts or name in n.input for n in model.graph.node for name in ("h0", "c0"))
    assert [a.shape for a in consts.values() if a.size > 1 and np.all(a == 0.5)] == [(2, 5)]  # c0 per direction
    assert not any(a.shape == (2, 5) and not np.any(a) for a in consts.values())  # zero h0: as if absent
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds(src, 2))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"clip": 1.0}, "5: activations other than Sigmoid/Tanh/Relu, clip or input_forget"),
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "5: activations other than Sigmoid/Tanh/Relu, clip or input_forget"),
    ({"steps": "seq"}, "2: the sequence length is dynamic or above 512 steps (fix it with --input)"),
    ({"steps": 513}, "2: the sequence length is dynamic or above 512 steps (fix it with --input)"),
    ({"sequence_lens": [4, 2]}, "4: sequence_lens varies per batch item"),
])
def test_node_breaking_a_rule_is_left_as_it_is_and_the_log_says_why(kwargs: dict[str, Any], rule: str,
                                                                      tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", "LSTM", **kwargs)
    result, logged = run(src, tmp_path / "w")
    assert not result.modified and result.artifact.digest == onnx_utils.artifact_from_file(src).digest
    assert result.stats == {"unrolled": {}, "not_unrolled": {rule: 1}}
    assert logged == [f"unroll_rnn: 1 recurrent node(s) not unrolled, rule {rule}"]


def test_weights_computed_in_the_graph_are_not_unrolled(tmp_path: Path) -> None:
    src = make_recurrent_onnx(tmp_path / "src.onnx", "GRU")
    model = onnx.load(str(src))
    model.graph.node.insert(0, onnx.helper.make_node("Identity", ["W"], ["W_live"], name="w_copy"))
    model.graph.node[1].input[1] = "W_live"
    done, missed = unroll(model)
    assert not done and missed == {"3: weights are not initializers": 1}
