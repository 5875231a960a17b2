"""Mixed precision under an accuracy budget: keep the layers whose float precision buys the most, measured.

The search (:func:`search`), after NNCF's accuracy-aware quantization
(``nncf/quantization/algorithms/accuracy_control``: ``Ranker`` reverts one group of quantizers at a time to
float and measures it; the restorer keeps the groups that help), made cheap enough for a few builds:

1. Build and measure the all-quantized candidate against the target's own FP32 model on the budget feeds
   (held-out data, see :mod:`edgec.compiler.fidelity_stage`). Within the budget: done.
2. Rank the current candidate's layers by the error they add (the target's
   :meth:`~edgec.targets.base.LayerTools.compare_layers`, see :mod:`edgec.frameworks.fidelity`) on the
   :data:`RANK_SAMPLES` budget feeds where its outputs are furthest from FP32 (NNCF's ``select_subset``).
   This costs runs, not builds.
3. Measure the :data:`TOP_K` best-ranked groups (a layer and the layers the target says must go with it,
   :meth:`~edgec.targets.base.LayerTools.float_group`), each kept in float alone on top of the current
   candidate: one build each, in ranking order, stopping at the first that meets the budget.
4. No group helped (none closed :data:`MIN_GAIN` of the gap between the current candidate and FP32): stop,
   the cheap ranking has nothing better to offer. Otherwise start from the group that helped most and add the
   others that helped, one at a time, keeping each only when it helps in the same sense (a pick that hurts
   is dropped, as NNCF steps back).
5. Repeat from 2 on the new candidate until the budget is met, ``max_builds`` candidates were built or
   ``max_float_layers`` layers are in float.

The result is the first candidate that meets the budget; otherwise the build fails naming the best candidate
seen and why the search stopped. The target's own mechanism keeps layers in float
(:attr:`PrecisionRequest.exclude`: ``nodes_to_exclude`` for onnxruntime's quantizers, an ignored scope for
nncf, denylisted nodes for TFLite's quantizer). Candidates are built with the target's real
:meth:`~edgec.targets.base.Target.export` into scratch folders and run with its runtime shim
(:class:`TargetProbe`), so what is measured is what ships. Only the reference's outputs are kept; a
candidate's outputs are scored and dropped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.metrics import Metric, output_errors
from edgec.core.errors import (
    AccuracyGateError,
    EdgecError,
    ExportError,
    UnsupportedError,
    brief,
    raise_if_bug,
)
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks.fidelity import LayerDivergence
from edgec.runtime_shims.measure import time_calls
from edgec.targets.base import ExportResult, LayerTools, PrecisionRequest, Target

MAX_BUILDS = 8
"""Candidates built and measured at most (``--max-builds``), besides the FP32 reference."""
MAX_FLOAT_LAYERS = 16
"""Layers kept in float at most (``--max-float-layers``)."""
TOP_K = 3
"""Groups measured per round (step 3)."""
RANK_SAMPLES = 32
"""Budget feeds the per-layer ranking runs on (step 2)."""
MIN_GAIN = 0.01
"""A group helps when it closes at least this share of the gap to FP32 (step 4): measurement noise does not."""


@dataclass(frozen=True)
class Candidate:
    """One reduced-precision model built in a scratch folder."""

    exclude: tuple[str, ...]
    model: Path
    result: ExportResult

    @property
    def size(self) -> int:
        """Bytes of the model's files."""
        return sum((self.model.parent / f).stat().st_size for f in self.result.files)


@dataclass(frozen=True)
class Trial:
    """A candidate measured on the budget feeds: its score and, per feed, its outputs' error."""

    candidate: Candidate
    float_layers: tuple[str, ...]
    value: float
    errors: np.ndarray

    @property
    def exclude(self) -> tuple[str, ...]:
        return self.candidate.exclude


@dataclass
class SearchResult:
    """The chosen model and how the search got there."""

    candidate: Candidate
    float_layers: list[str]
    baseline: float
    value: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    builds: int = 0

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
        self._reference_outputs: list[Feed] | None = None

    @property
    def builds(self) -> int:
        """Reduced-precision candidates built so far."""
        return len(self._built)

    @property
    def reference(self) -> Candidate:
        """The target's FP32 model (built once)."""
        if self._reference is None:
            # calibration goes along: a converter may use it for shapes (onnx2tf's check feed), not for precision
            request = PrecisionRequest("fp32", calibration=self.request.calibration, options=self.request.options)
            self._reference = self._make(self.float_art, request, "fp32")
        return self._reference

    @property
    def reference_outputs(self) -> list[Feed]:
        """The FP32 model's outputs on the budget feeds (run once, kept)."""
        if self._reference_outputs is None:
            self._reference_outputs = self.run(self.reference)
        return self._reference_outputs

    def build(self, exclude: tuple[str, ...]) -> Candidate:
        """The reduced-precision model with ``exclude`` kept in float (built once per exclusion set)."""
        key = tuple(sorted(exclude))
        if key not in self._built:
            self._built[key] = self._make(self.quantize(exclude), replace(self.request, exclude=exclude), f"candidate-{len(self._built)}")
        return self._built[key]

    def run(self, candidate: Candidate) -> list[Feed]:
        """The candidate's outputs on the budget feeds, with the target's runtime shim.

        Raises:
            ExportError: the runtime cannot run the model.
        """
        name = candidate.model.parent.name
        try:
            with self.target.runner(candidate.model.parent, candidate.result.model_file) as runner:
                return [runner.infer(feed) for feed in self.target.bundle_feeds(self.feeds, candidate.result)]
        except EdgecError:
            raise
        except Exception as exc:  # the runtime's own errors on this candidate; a bug in edgec's runner is raised as one
            raise_if_bug(exc, f"running the {name} {self.target.name} candidate")
            raise ExportError(f"the {name} {self.target.name} model does not run: {type(exc).__name__}: {brief(exc, 300)}") from exc

    @property
    def layers(self) -> LayerTools:
        """The target's per-layer tools.

        Raises:
            UnsupportedError: the target has none.
        """
        if not isinstance(self.target, LayerTools):
            raise UnsupportedError(f"per-layer comparison is not available for the {self.target.name} target")
        return self.target

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        """The candidate's layers by the error they add against the FP32 reference, on the budget feeds ``indices``."""
        feeds = self.target.bundle_feeds([self.feeds[i] for i in indices], candidate.result)
        return self.layers.compare_layers(self.reference.model, candidate.model, feeds)

    def group(self, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        return self.layers.float_group(self.reference.model, layer, ranked)

    def nodes(self, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        return self.layers.float_nodes(self.reference.model, layers, ranked)

    def latency_ms(self, candidate: Candidate, runs: int = 50) -> float:
        """Median single-feed latency of the candidate with the target's runtime shim."""
        feed = self.target.bundle_feeds(self.feeds[:1], candidate.result)[0]
        with self.target.runner(candidate.model.parent, candidate.model.name) as runner:
            rounds = time_calls(lambda: runner.infer(feed), runs, warmup=5, repeats=1)
        return round(float(np.median(rounds[0])) * 1000, 4)

    def _make(self, artifact: ModelArtifact, request: PrecisionRequest, name: str) -> Candidate:
        folder, work = self.scratch / name, self.scratch / f"{name}-work"
        folder.mkdir(parents=True)
        work.mkdir()
        try:
            result = self.target.export(artifact, folder, request, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return Candidate(request.exclude, folder / result.model_file, result)


class Search:
    """One ``--max-drop`` search (see the module docstring for its steps).

    Args:
        probe: builds and runs candidates.
        metric: what is measured.
        labels: labels of the budget feeds, for ``accuracy``.
        max_drop: the budget: largest drop of the metric from FP32.
        log: progress messages.
        max_float_layers: at most this many layers in float.
        max_builds: at most this many candidates built.
    """

    def __init__(self, probe: TargetProbe, metric: Metric, labels: np.ndarray | None, max_drop: float,
                 log: Callable[[str], None], max_float_layers: int = MAX_FLOAT_LAYERS, max_builds: int = MAX_BUILDS) -> None:
        self.probe, self.metric, self.labels, self.max_drop, self.log = probe, metric, labels, max_drop, log
        self.max_float_layers, self.max_builds = max_float_layers, max_builds
        self.reference = probe.reference_outputs
        self.baseline = metric.score(self.reference, self.reference, labels)
        self.steps: list[dict[str, Any]] = []
        self.tried: set[frozenset[str]] = set()
        self.best: Trial | None = None
        self.stopped = ""

    def run(self) -> SearchResult:
        """Search, and return the first candidate within the budget.

        Raises:
            AccuracyGateError: the budget was not met; the message names the best result and why it stopped.
        """
        current = self.measure((), ())
        self.log(f"{self.metric.label}: fp32 {self.baseline:.4f}, all layers quantized {current.value:.4f} "
                 f"(budget: drop <= {self.max_drop})")
        while not self.met() and not self.stopped:
            current = self.round(current)
        return self.result()

    def met(self) -> bool:
        """Whether the best candidate so far is within the budget."""
        return self.best is not None and self.within(self.best)

    def within(self, trial: Trial) -> bool:
        return self.baseline - trial.value <= self.max_drop

    def round(self, current: Trial) -> Trial:
        """Steps 2-4 from ``current``; returns the candidate the next round starts from."""
        options = self.options(current)
        helpful = []
        for layers, exclude in options:
            if self.met() or self.out_of_builds():
                return current
            trial = self.measure(layers, exclude)
            if self.helps(trial, current):
                helpful.append(trial)
        if not helpful:
            self.stopped = self.stopped or ("no untried layer adds error" if not options else "no candidate layer helped")
            return current
        helpful.sort(key=lambda t: t.value, reverse=True)
        return self.combine(helpful)

    def combine(self, helpful: list[Trial]) -> Trial:
        """Step 4: the best trial, plus each other one that raises its score."""
        current = helpful[0]
        for other in helpful[1:]:
            layers = tuple(dict.fromkeys((*current.float_layers, *other.float_layers)))
            if self.met() or self.out_of_builds():
                break
            if len(layers) > self.max_float_layers:
                continue
            trial = self.measure(layers, tuple(dict.fromkeys((*current.exclude, *other.exclude))))
            if self.helps(trial, current):
                current = trial
        return current

    def helps(self, trial: Trial, current: Trial) -> bool:
        """Whether ``trial`` closes at least :data:`MIN_GAIN` of ``current``'s gap to FP32."""
        return trial.value - current.value > MIN_GAIN * max(self.baseline - current.value, 0.0)

    def options(self, current: Trial) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Step 2: the :data:`TOP_K` best-ranked groups not tried yet, each added to ``current``: (layers, nodes)."""
        room = self.max_float_layers - len(current.float_layers)
        if room <= 0:
            self.stopped = f"--max-float-layers {self.max_float_layers} reached"
            return []
        worst = sorted(np.argsort(-current.errors, kind="stable")[:RANK_SAMPLES].tolist())
        ranked = self.probe.rank(current.candidate, worst)
        found: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        for d in ranked:
            if d.growth <= 0 or len(found) == TOP_K:
                break
            if d.layer in current.float_layers:
                continue
            group = [x for x in dict.fromkeys(self.probe.group(d.layer, ranked)) if x not in current.float_layers][:room]
            layers = (*current.float_layers, *group)
            if frozenset(layers) not in self.tried:
                self.tried.add(frozenset(layers))
                nodes = self.probe.nodes(list(layers), ranked)
                found.append((layers, tuple(dict.fromkeys((*current.exclude, *nodes)))))
        return found

    def out_of_builds(self) -> bool:
        if self.probe.builds >= self.max_builds:
            self.stopped = f"--max-builds {self.max_builds} reached"
        return bool(self.stopped)

    def measure(self, layers: tuple[str, ...], exclude: tuple[str, ...]) -> Trial:
        """Build (or reuse) the candidate keeping ``exclude`` in float and score it."""
        candidate = self.probe.build(exclude)
        outputs = self.probe.run(candidate)
        trial = Trial(candidate, layers, self.metric.score(self.reference, outputs, self.labels), output_errors(self.reference, outputs))
        del outputs
        if self.best is None or self.helps(trial, self.best) or (self.within(trial) and not self.within(self.best)):
            self.best = trial  # a gain within noise does not buy more layers in float
        self.steps.append({"float_layers": list(layers), self.metric.name: round(trial.value, 6),
                           "drop": round(self.baseline - trial.value, 6)})
        if layers:
            self.log(f"keeping {', '.join(layers)} in float: {self.metric.label} {trial.value:.4f}")
        return trial

    def result(self) -> SearchResult:
        best = self.best
        assert best is not None
        result = SearchResult(best.candidate, list(best.float_layers), self.baseline, best.value, self.steps, self.probe.builds)
        if not self.met():
            count = len(best.float_layers)
            raise AccuracyGateError(
                f"could not meet --max-drop {self.max_drop} on {self.metric.label}: best drop {result.drop:.4f} "
                f"({self.metric.label} {best.value:.4f} vs fp32 {self.baseline:.4f}) with {count} "
                f"layer{'' if count == 1 else 's'} in float ({', '.join(best.float_layers) or 'none'}); "
                f"{self.stopped or 'search ended'} after {self.probe.builds} builds; no bundle written"
            )
        return result


def search(probe: TargetProbe, metric: Metric, labels: np.ndarray | None, max_drop: float, log: Callable[[str], None],
           max_float_layers: int | None = None, max_builds: int | None = None) -> SearchResult:
    """Find a model within ``max_drop`` of FP32 on ``metric`` (see the module docstring).

    Raises:
        AccuracyGateError: the budget cannot be met; the message names the best result reached and why it stopped.
        ConfigError: the metric cannot measure these outputs (:meth:`Metric.score`).
    """
    return Search(probe, metric, labels, max_drop, log, MAX_FLOAT_LAYERS if max_float_layers is None else max_float_layers,
                  MAX_BUILDS if max_builds is None else max_builds).run()
