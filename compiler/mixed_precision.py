"""Mixed precision under an accuracy budget: keep the most sensitive layers in float, step by step.

Each step ranks the layers of the current reduced-precision model by the error they add (the target's
:meth:`~edgec.targets.base.Target.compare_layers`, see :mod:`edgec.compiler.fidelity`), moves the worst
layer not yet in float (with the layers the target says must go with it, :meth:`~edgec.targets.base.Target.float_group`)
to float, rebuilds and measures again, until the metric's drop from the target's own FP32 model is
within the budget. The target's own mechanism keeps the layers in float (:attr:`PrecisionRequest.exclude`:
``nodes_to_exclude`` for onnxruntime's quantizers, an ignored scope for nncf, denylisted nodes for
TFLite's quantizer).

Candidates are built with the target's real :meth:`~edgec.targets.base.Target.export` into scratch
folders and run with its runtime shim (:class:`TargetProbe`), so what is measured is what ships.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.fidelity import LayerDivergence
from edgec.core.errors import AccuracyGateError, EdgecError, ExportError
from edgec.core.types import ModelArtifact
from edgec.runtime_shims.measure import time_calls
from edgec.targets.base import ExportResult, PrecisionRequest, Target

Feed = dict[str, np.ndarray]
MAX_STEPS = 16
RANK_SAMPLES = 32
"""Feeds used to rank layers at each step (the metric uses all budget feeds)."""


@dataclass(frozen=True)
class Candidate:
    """One reduced-precision model built in a scratch folder, and its outputs on the budget feeds."""

    exclude: tuple[str, ...]
    model: Path
    result: ExportResult
    feeds: list[Feed]
    outputs: list[Feed]

    @property
    def size(self) -> int:
        """Bytes of the model's files."""
        return sum((self.model.parent / f).stat().st_size for f in self.result.files)


@dataclass
class SearchResult:
    """The chosen model and how the search got there."""

    candidate: Candidate
    float_layers: list[str]
    baseline: float
    value: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    @property
    def exclude(self) -> tuple[str, ...]:
        return self.candidate.exclude


class TargetProbe:
    """Builds a target's model files in scratch folders and runs them: the FP32 reference and candidates.

    Args:
        target: the build's target.
        request: the build's precision request (its ``exclude`` is replaced per candidate).
        float_art: the float model the target exports.
        quantize: runs the target's precision passes with some nodes kept in float (identity for
            targets that quantize in :meth:`Target.export`).
        feeds: the budget feeds, in the source model's layout.
        scratch: a folder for the candidates (removed by the caller).
    """

    def __init__(self, target: Target, request: PrecisionRequest, float_art: ModelArtifact,
                 quantize: Callable[[tuple[str, ...]], ModelArtifact], feeds: list[Feed], scratch: Path) -> None:
        self.target, self.request, self.float_art, self.quantize = target, request, float_art, quantize
        self.feeds, self.scratch = feeds, scratch
        self._built: dict[tuple[str, ...], Candidate] = {}
        self._reference: Candidate | None = None

    @property
    def reference(self) -> Candidate:
        """The target's FP32 model (built once)."""
        if self._reference is None:
            # calibration goes along: a converter may use it for shapes (onnx2tf's check feed), not for precision
            request = PrecisionRequest("fp32", calibration=self.request.calibration, options=self.request.options)
            self._reference = self._make(self.float_art, request, "fp32")
        return self._reference

    def build(self, exclude: tuple[str, ...]) -> Candidate:
        """The reduced-precision model with ``exclude`` kept in float (built once per exclusion set)."""
        key = tuple(sorted(exclude))
        if key not in self._built:
            self._built[key] = self._make(self.quantize(exclude), replace(self.request, exclude=exclude), f"candidate-{len(self._built)}")
        return self._built[key]

    def rank(self, candidate: Candidate, samples: int = RANK_SAMPLES) -> list[LayerDivergence]:
        """The candidate's layers by the error they add, against the FP32 reference."""
        return self.target.compare_layers(self.reference.model, candidate.model, candidate.feeds[:samples])

    def group(self, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        return self.target.float_group(self.reference.model, layer, ranked)

    def nodes(self, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        return self.target.float_nodes(self.reference.model, layers, ranked)

    def latency_ms(self, candidate: Candidate, runs: int = 50) -> float:
        """Median single-feed latency of the candidate with the target's runtime shim."""
        with self.target.runner(candidate.model.parent, candidate.model.name) as runner:
            rounds = time_calls(lambda: runner.infer(candidate.feeds[0]), runs, warmup=5, repeats=1)
        return round(float(np.median(rounds[0])) * 1000, 4)

    def _make(self, artifact: ModelArtifact, request: PrecisionRequest, name: str) -> Candidate:
        folder, work = self.scratch / name, self.scratch / f"{name}-work"
        folder.mkdir(parents=True)
        work.mkdir()
        try:
            result = self.target.export(artifact, folder, request, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        feeds = self.target.bundle_feeds(self.feeds, result)
        try:
            with self.target.runner(folder, result.model_file) as runner:
                outputs = [runner.infer(feed) for feed in feeds]
        except EdgecError:
            raise
        except Exception as exc:
            raise ExportError(f"the {name} {self.target.name} model does not run: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
        return Candidate(request.exclude, folder / result.model_file, result, feeds, outputs)


def score(metric: str, reference: list[Feed], outputs: list[Feed], labels: np.ndarray | None) -> float:
    """Higher is better: top-1 agreement or minimum cosine with the reference, or accuracy on labels."""
    first = next(iter(reference[0]))
    if metric == "accuracy":
        assert labels is not None
        predicted = np.concatenate([_rows(o[first]).argmax(-1) for o in outputs])
        return float(np.mean(predicted == labels.reshape(-1)))
    if metric == "top1":
        ref = np.concatenate([_rows(r[first]) for r in reference])
        got = np.concatenate([_rows(o[first]) for o in outputs])
        return float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    cosines = []
    for name in reference[0]:
        a = np.concatenate([np.asarray(r[name], np.float64).ravel() for r in reference])
        b = np.concatenate([np.asarray(o[name], np.float64).ravel() for o in outputs])
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
    return min(cosines)


def _rows(array: Any) -> np.ndarray:
    values = np.asarray(array, np.float64)
    return values.reshape(-1, values.shape[-1])


def search(probe: TargetProbe, labels: np.ndarray | None, metric: str, max_drop: float, log: Callable[[str], None],
           max_float_layers: int | None = None) -> SearchResult:
    """Find a model within ``max_drop`` of FP32 on ``metric``, keeping as few layers in float as the ranking allows.

    Raises:
        AccuracyGateError: the budget cannot be met; the message names the best result reached.
    """
    reference = probe.reference.outputs
    baseline = score(metric, reference, reference, labels)
    candidate = probe.build(())
    value = score(metric, reference, candidate.outputs, labels)
    best = SearchResult(candidate, [], baseline, value)
    steps = [{"float_layers": [], metric: round(value, 6), "drop": round(baseline - value, 6)}]
    log(f"{metric}: fp32 {baseline:.4f}, all layers quantized {value:.4f} (budget: drop <= {max_drop})")
    float_layers: list[str] = []
    exclude: tuple[str, ...] = ()
    limit = MAX_STEPS if max_float_layers is None else max_float_layers
    while baseline - value > max_drop and len(float_layers) < limit:
        ranked = probe.rank(candidate)
        pick = next((d for d in ranked if d.node not in exclude and d.layer not in float_layers and d.growth > 0), None)
        if pick is None:
            break
        group = [x for x in dict.fromkeys(probe.group(pick.layer, ranked)) if x not in float_layers]
        float_layers.extend(group[: limit - len(float_layers)])
        exclude = exclude + tuple(n for n in probe.nodes(float_layers, ranked) if n not in exclude)
        candidate = probe.build(exclude)
        value = score(metric, reference, candidate.outputs, labels)
        steps.append({"float_layers": list(float_layers), metric: round(value, 6), "drop": round(baseline - value, 6)})
        log(f"keeping {pick.layer} in float: {metric} {value:.4f}")
        if value > best.value:
            best = SearchResult(candidate, list(float_layers), baseline, value)
    best.steps = steps
    if best.drop > max_drop:
        raise AccuracyGateError(
            f"could not meet --max-drop {max_drop} on {metric}: best drop {best.drop:.4f} "
            f"({metric} {best.value:.4f} vs fp32 {baseline:.4f}) with {len(best.float_layers)} "
            f"layer{'' if len(best.float_layers) == 1 else 's'} in float "
            f"({', '.join(best.float_layers) or 'none'}); no bundle written"
        )
    return best
