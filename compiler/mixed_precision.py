"""Mixed precision under an accuracy budget: keep the most sensitive layers in float, step by step.

Each step ranks the layers of the current quantized model by the error they add (see
:mod:`edgec.compiler.fidelity`), moves the worst layer not yet in float (all nodes of that layer, e.g. a
Conv and its fused Relu) and the layers producing its input activations to float (so the activation it
reads is no longer quantized), re-quantizes and measures again, until the metric's drop from FP32 is
within the budget. The target's own mechanism keeps the layers in float (``nodes_to_exclude`` for
onnxruntime's quantizers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.compiler import fidelity, onnx_utils
from edgec.compiler.errors import AccuracyGateError, require
from edgec.compiler.types import ModelArtifact

Feed = dict[str, np.ndarray]
MAX_STEPS = 16


@dataclass
class SearchResult:
    """The chosen model and how the search got there."""

    artifact: ModelArtifact
    exclude: tuple[str, ...]
    float_layers: list[str]
    baseline: float
    value: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return self.baseline - self.value


def run_onnx(artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
    """Outputs of an ONNX artifact for each feed (onnxruntime, CPU)."""
    ort = require("onnxruntime", "onnx", "measuring accuracy")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed))) for feed in feeds]


def score(metric: str, reference: list[Feed], outputs: list[Feed], labels: np.ndarray | None) -> float:
    """Higher is better: top-1 agreement or minimum cosine with the reference, or accuracy on labels."""
    first = next(iter(reference[0]))
    if metric == "accuracy":
        assert labels is not None
        predicted = np.concatenate([np.asarray(o[first]).reshape(-1, np.asarray(o[first]).shape[-1]).argmax(-1) for o in outputs])
        return float(np.mean(predicted == labels.reshape(-1)))
    if metric == "top1":
        ref = np.concatenate([np.asarray(r[first]).reshape(-1, np.asarray(r[first]).shape[-1]) for r in reference])
        got = np.concatenate([np.asarray(o[first]).reshape(-1, np.asarray(o[first]).shape[-1]) for o in outputs])
        return float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    cosines = []
    for name in reference[0]:
        a = np.concatenate([np.asarray(r[name], np.float64).ravel() for r in reference])
        b = np.concatenate([np.asarray(o[name], np.float64).ravel() for o in outputs])
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
    return min(cosines)


def input_layers(model: Any, layers: dict[str, str], layer: str) -> list[str]:
    """Layers whose outputs feed ``layer``: keeping an activation in float means keeping its producer
    in float too, since onnxruntime quantizes a tensor when its producer or any consumer is quantized."""
    initializers = {i.name for i in model.graph.initializer}
    producer = {out: node.name for node in model.graph.node for out in node.output}
    found: list[str] = []
    for node in model.graph.node:
        if layers.get(node.name) != layer:
            continue
        for name in node.input:
            source = producer.get(name)
            if name not in initializers and source is not None and layers[source] != layer and layers[source] not in found:
                found.append(layers[source])
    return found


def search(float_art: ModelArtifact, quantize: Callable[[tuple[str, ...]], ModelArtifact], feeds: list[Feed],
           labels: np.ndarray | None, metric: str, max_drop: float, log: Callable[[str], None],
           max_float_layers: int | None = None) -> SearchResult:
    """Find a model within ``max_drop`` of FP32 on ``metric``, keeping as few layers in float as the ranking allows.

    Raises:
        AccuracyGateError: the budget cannot be met; the message names the best result reached.
    """
    reference = run_onnx(float_art, feeds)
    baseline = score(metric, reference, reference, labels)
    model = onnx_utils.load_model(float_art.path)
    layers = fidelity.layer_names(model)
    exclude: tuple[str, ...] = ()
    artifact = quantize(exclude)
    value = score(metric, reference, run_onnx(artifact, feeds), labels)
    best = SearchResult(artifact, exclude, [], baseline, value)
    steps = [{"float_layers": [], metric: round(value, 6), "drop": round(baseline - value, 6)}]
    log(f"{metric}: fp32 {baseline:.4f}, all layers quantized {value:.4f} (budget: drop <= {max_drop})")
    float_layers: list[str] = []
    limit = MAX_STEPS if max_float_layers is None else max_float_layers
    while baseline - value > max_drop and len(float_layers) < limit:
        ranked = fidelity.layer_divergence(float_art.path, artifact.path, feeds[:32])
        pick = next((d for d in ranked if d.node not in exclude and d.growth > 0), None)
        if pick is None:
            break
        group = [pick.layer, *(x for x in input_layers(model, layers, pick.layer) if x not in float_layers)]
        group = group[: limit - len(float_layers)]
        float_layers.extend(x for x in group if x not in float_layers)
        exclude = exclude + tuple(n for n, layer in layers.items() if layer in group and n not in exclude)
        artifact = quantize(exclude)
        value = score(metric, reference, run_onnx(artifact, feeds), labels)
        steps.append({"float_layers": list(float_layers), metric: round(value, 6), "drop": round(baseline - value, 6)})
        log(f"keeping {pick.layer} in float: {metric} {value:.4f}")
        if value > best.value:
            best = SearchResult(artifact, exclude, list(float_layers), baseline, value)
    best.steps = steps
    if best.drop > max_drop:
        raise AccuracyGateError(
            f"could not meet --max-drop {max_drop} on {metric}: best drop {best.drop:.4f} "
            f"({metric} {best.value:.4f} vs fp32 {baseline:.4f}) with {len(best.float_layers)} layers in float "
            f"({', '.join(best.float_layers) or 'none'}); no bundle written"
        )
    return best
