"""Mixed precision under an accuracy budget: keep the layers whose float precision buys the most, measured.

The search (:func:`search`), after NNCF's accuracy-aware quantization
(``nncf/quantization/algorithms/accuracy_control``: ``Ranker`` reverts one group of quantizers at a time to
float and measures it; the restorer keeps the groups that help), made cheap enough for a few builds:

1. Build and measure the all-quantized candidate against the target's own FP32 model on the budget feeds
   (held-out data, see :mod:`edgec.compiler.fidelity_stage`). Within the budget: done.
   Calibration is part of the search: otherwise the whole model is calibrated with the other methods the target
   tells apart (:meth:`~edgec.targets.base.Target.searched_methods`), one build each, in
   :data:`METHOD_ORDER`: the first within the budget ends the search (all layers quantized is the cheapest
   model), else the best one (it must beat the build's own method by :data:`MIN_GAIN` of the gap) is what
   the layer search starts from and every later candidate is calibrated with. A second alternative is tried
   only when the first moved the score by more than that: when clipping the ranges' tails changes nothing,
   the ranges are not what breaks the model and another estimator would be a wasted build.
   Then the whole-model variants the target offers (:meth:`~edgec.targets.base.Target.searched_variants`:
   onnx's other ``quantize_ops`` lists when the user chose none), one build each with the method chosen so
   far, in the target's order: the first within the budget ends the search (every layer quantized with
   another op list beats layers in float). One that misses the budget is not what the layer search starts
   from, however close: an op list that leaves more ops float has already spent the float layers the search
   would pick (YOLOv8n: ``compute`` 0.936 all-quantized against the default's 0.927, but no layer kept in
   float on top of it helped, where the default reached 0.941 with its head's Concat in float). Methods come
   first: a calibration method changes no op's precision, so it costs nothing at run time, where a variant
   changes which ops run in INT8. A variant whose model equals one measured before takes no build.
2. Rank the current candidate's layers by the error they add (the target's
   :meth:`~edgec.targets.base.LayerTools.compare_layers`, see :mod:`edgec.frameworks.fidelity`) on the
   :data:`RANK_SAMPLES` budget feeds where its outputs are furthest from FP32 (NNCF's ``select_subset``).
   This costs runs, not builds. Ops that keeping in float cannot change (:data:`NOT_CANDIDATES`: control
   flow, value movers, boolean ops) are skipped, except that a value mover's growth names the ops it feeds
   (:func:`owners`: the quantizer before a ``Squeeze`` is its reader's), and a set of layers measured once is
   never proposed again. Nor is a layer none of whose ops reads a quantized value in the candidate
   (:attr:`~edgec.frameworks.fidelity.LayerDivergence.quantized`, where the target can tell: on openvino the
   activation after a conv, whose quantizer nncf puts at its readers' inputs; YOLOv8n's ranking was led by
   ``Swish`` ops, each a build that changed nothing).
3. Measure the best-ranked groups (a layer and the layers the target says must go with it,
   :meth:`~edgec.targets.base.LayerTools.float_group`), each kept in float alone on top of the current
   candidate: one build each, in ranking order, stopping at the first that meets the budget; :data:`TOP_K` of
   them, or half the builds left when that is more (:meth:`Search.width`), so that a larger ``--max-builds``
   ranks more groups by their measured effect, as NNCF's ranker does with every group. A build that is a
   model already measured (keeping in float a node the target leaves float anyway, or whose tensors its
   quantized neighbours keep quantized; :meth:`~edgec.targets.base.Target.model_digest`) is not run again,
   takes no slot and does not count against ``max_builds``.
4. No group helped (none closed :data:`MIN_GAIN` of the gap between the current candidate and FP32): the
   error may be spread over a module whose ops only matter together, so the modules around the
   :data:`TOP_K` best-ranked groups are kept in float whole, one build each (:func:`module_members`); the
   first that helps is where the next round starts, and when none does the search stops. Otherwise start
   from the group that helped most and add the others that helped, one at a time, keeping each only when
   it helps in the same sense (a pick that hurts is dropped, as NNCF steps back).
5. Repeat from 2 on the new candidate until the budget is met, ``max_builds`` candidates were built or
   ``max_float_layers`` layers are in float.

The result is the first candidate that meets the budget; otherwise the build fails naming the best candidate
seen and why the search stopped. The target's own mechanism keeps layers in float
(:attr:`PrecisionRequest.exclude`: ``nodes_to_exclude`` for onnxruntime's quantizers, an ignored scope for
nncf, denylisted nodes for TFLite's quantizer). Candidates are built with the target's real
:meth:`~edgec.targets.base.Target.export` into scratch folders and run with its runtime shim
(:class:`TargetProbe`), so what is measured is what ships; inside :meth:`~edgec.targets.base.Target.reuse` the
target may share work that gives the same result every time (openvino: one conversion, nncf's statistics). Only the reference's outputs are kept; a
candidate's outputs are scored and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.compiler.metrics import Metric, output_errors
from edgec.compiler.search_probe import METHOD_ORDER, Candidate, TargetProbe
from edgec.core.errors import AccuracyGateError, UnsupportedError
from edgec.frameworks.fidelity import LayerDivergence

__all__ = ["METHOD_ORDER", "Candidate", "Search", "SearchResult", "TargetProbe", "Trial", "owners", "search"]

MAX_BUILDS = 8
"""Candidates built and measured at most (``--max-builds``), besides the FP32 reference."""
MAX_FLOAT_LAYERS = 16
"""Layers kept in float at most (``--max-float-layers``)."""
TOP_K = 3
"""Groups measured per round at least (step 3); more when ``--max-builds`` leaves room (:meth:`Search.width`)."""
RANK_SAMPLES = 32
"""Budget feeds the per-layer ranking runs on (step 2)."""
MIN_GAIN = 0.01
"""A group helps when it closes at least this share of the gap to FP32 (step 4): measurement noise does not."""
BUDGET_TOLERANCE = 1e-9
"""Float rounding allowed on a drop equal to the budget (scores that are shares of counts are exact otherwise)."""
NOT_CANDIDATES = frozenset({
    "If", "Loop", "Scan",  # control flow: no quantizer quantizes the node; its body reads outer values unseen
    "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Flatten", "Expand",  # move values; QDQ keeps their input's scale
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor",  # boolean results
    "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS",  # TFLite's value movers
})
"""Op types the search never keeps in float on their own (step 3), though the ranking may show growth on them:
keeping them in float changes no quantized op (an ``If``'s body reads tensors that are not its inputs, so all
their error counts as its own; a ``Squeeze`` only passes its input's quantized values on), so each would be a
build that cannot help. Seen on Silero VAD: every candidate was an ``If``, ``Equal``, ``Squeeze`` or ``Unsqueeze``.
Such an op that belongs to another op's layer (its layer is not its own name: the ``Transpose`` OpenVINO puts
before an LSTM's state input, where nncf's quantizer for that input sits) names that layer as usual; a value
mover that is a layer of its own names the layers of the ops it feeds (:func:`owners`)."""


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
    calibrations: dict[str, float] = field(default_factory=dict)
    """Calibration method -> the all-quantized model's score with it, for each method tried (step 1)."""
    variants: dict[str, float] = field(default_factory=dict)
    """Target variant -> the all-quantized model's score with it (and the chosen method), for each tried (step 1)."""

    @property
    def method(self) -> str | None:
        """The chosen calibration method; None: the build's own."""
        return self.candidate.method

    @property
    def variant(self) -> str | None:
        """The chosen target variant; None: the build's own options."""
        return self.candidate.variant

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    @property
    def exclude(self) -> tuple[str, ...]:
        return self.candidate.exclude


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
        methods: calibration methods to try before keeping layers in float, the build's own first
            (:meth:`TargetProbe.methods`); empty: calibration is not searched.
        variants: target variants to try after the methods, the build's own first (:meth:`TargetProbe.variants`);
            empty: none.
    """

    def __init__(self, probe: TargetProbe, metric: Metric, labels: np.ndarray | None, max_drop: float,
                 log: Callable[[str], None], max_float_layers: int = MAX_FLOAT_LAYERS, max_builds: int = MAX_BUILDS,
                 methods: tuple[str, ...] = (), variants: tuple[str, ...] = ()) -> None:
        self.probe, self.metric, self.labels, self.max_drop, self.log = probe, metric, labels, max_drop, log
        self.max_float_layers, self.max_builds, self.methods, self.variants = max_float_layers, max_builds, methods, variants
        self.method: str | None = None
        self.variant: str | None = None
        self.calibrations: dict[str, float] = {}
        self.variant_scores: dict[str, float] = {}
        self.reference = probe.reference_outputs
        self.baseline = metric.score(self.reference, self.reference, labels)
        self.steps: list[dict[str, Any]] = []
        self.tried: set[frozenset[str]] = set()
        self.best: Trial | None = None
        self.stopped = ""
        self.widened = 0
        self.by_digest: dict[str, Trial] = {}

    def run(self) -> SearchResult:
        """Search, and return the first candidate within the budget.

        Raises:
            AccuracyGateError: the budget was not met; the message names the best result and why it stopped.
        """
        current = self.measure((), ())
        self.log(f"{self.metric.label}: fp32 {self.baseline:.4f}, all layers quantized {current.value:.4f} "
                 f"(budget: drop <= {self.max_drop})")
        if self.methods:
            self.calibrations[self.methods[0]] = current.value
            current = self.calibrate(current)
        if self.variants:
            self.variant_scores[self.variants[0]] = current.value
            current = self.vary(current)
        while not self.met() and not self.stopped:
            current = self.round(current)
        return self.result()

    def calibrate(self, own: Trial) -> Trial:
        """Step 1's calibration methods: the all-quantized model with each, until one meets the budget; returns
        the best (the one later candidates are calibrated with)."""
        best = own
        for method in self.methods[1:]:
            if self.met() or self.out_of_builds():
                break
            trial = self.measure((), (), method)
            self.calibrations[method] = trial.value
            self.log(f"calibrating with {method}: {self.metric.label} {trial.value:.4f}")
            if self.helps(trial, best) or (self.within(trial) and not self.within(best)):
                best = trial
            if abs(trial.value - own.value) <= MIN_GAIN * max(self.baseline - own.value, 0.0):
                break  # the ranges are not what breaks the model (see the module docstring)
        self.method = best.candidate.method
        return best

    def vary(self, own: Trial) -> Trial:
        """Step 1's target variants: the all-quantized model with each (and the method chosen so far), until one
        meets the budget; returns it, else ``own`` (see the module docstring)."""
        for variant in self.variants[1:]:
            if self.met() or self.out_of_builds():
                break
            trial = self.measure((), (), variant=variant)
            self.variant_scores[variant] = trial.value
            same = " (the same model as an earlier candidate)" if self.probe.seen(trial.candidate) else ""
            self.log(f"building with {variant}: {self.metric.label} {trial.value:.4f}{same}")
            if self.within(trial):
                self.variant = variant
                return trial
        return own

    def met(self) -> bool:
        """Whether the best candidate so far is within the budget."""
        return self.best is not None and self.within(self.best)

    def within(self, trial: Trial) -> bool:
        """Whether ``trial``'s drop is at most the budget; a drop that equals it up to float rounding (1 - 0.95
        is 0.050000000000000044) is within."""
        return self.baseline - trial.value <= self.max_drop + BUDGET_TOLERANCE

    def round(self, current: Trial) -> Trial:
        """Steps 2-4 from ``current``; returns the candidate the next round starts from."""
        ranked = self.ranking(current)
        width = self.width()
        options = self.options(current, ranked, width)
        helpful, distinct = [], 0
        for layers, exclude in options:
            if self.met() or self.out_of_builds() or distinct == width:
                break
            try:
                trial = self.measure(layers, exclude)
            except UnsupportedError as exc:  # tflite's dynamic-range INT8 (auto on an LSTM model) keeps nothing float
                self.stopped = f"this build cannot keep layers in float: {exc.message}"
                return current
            distinct += not self.probe.seen(trial.candidate)  # a model measured before takes no slot of the round
            if self.helps(trial, current):
                helpful.append(trial)
        if self.met() or self.stopped:
            return current
        if not helpful:
            wider = self.widen(current, ranked) if options else None
            if wider is not None or self.met() or self.stopped:
                return wider or current
            modules = ", nor their modules" if self.widened else ""
            self.stopped = "no untried layer adds error" if not options else f"no candidate layer helped{modules}"
            return current
        helpful.sort(key=lambda t: t.value, reverse=True)
        return self.combine(helpful)

    def widen(self, current: Trial, ranked: list[LayerDivergence]) -> Trial | None:
        """Step 4b: no group helped alone, so each of the :data:`TOP_K` best-ranked groups' enclosing modules
        (:func:`module_members`) is kept in float whole, one build each; returns the first that helps (the next
        round starts from it), else None."""
        room = self.max_float_layers - len(current.float_layers)
        tried_scopes: set[str] = set()
        for d in ranked:
            if d.growth <= 0 or len(tried_scopes) == TOP_K or self.met() or self.out_of_builds():
                break
            scope, members = module_members(d, ranked, current.float_layers)
            if not scope or scope in tried_scopes or len(members) > room:
                continue
            tried_scopes.add(scope)
            self.widened += 1
            layers = (*current.float_layers, *members)
            if frozenset(layers) in self.tried:
                continue
            nodes = self.probe.nodes(list(layers), ranked)
            self.log(f"no layer helped alone: trying module {scope!r} whole")
            trial = self.measure(layers, tuple(dict.fromkeys((*current.exclude, *nodes))))
            if self.helps(trial, current):
                return trial
        return None

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

    def ranking(self, current: Trial) -> list[LayerDivergence]:
        """Step 2's ranking of ``current``'s layers on its worst budget feeds; empty (and the search stopped)
        when no more layers may go float."""
        if len(current.float_layers) >= self.max_float_layers:
            self.stopped = f"--max-float-layers {self.max_float_layers} reached"
            return []
        worst = sorted(np.argsort(-current.errors, kind="stable")[:RANK_SAMPLES].tolist())
        return self.probe.rank(current.candidate, worst)

    def width(self) -> int:
        """Groups a round measures alone (step 3): :data:`TOP_K`, or half the builds ``--max-builds`` has left
        when that is more (the other half combines the ones that helped): a larger budget buys a ranking by
        measured effect further down the error-added ranking, as NNCF's ranker measures every group."""
        return max(TOP_K, (self.max_builds - self.probe.builds) // 2)

    def options(self, current: Trial, ranked: list[LayerDivergence], width: int = TOP_K) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Step 2: the best-ranked groups not tried yet, each added to ``current``: (layers, nodes); the round
        measures them in order until ``width`` gave models not measured before."""
        room = self.max_float_layers - len(current.float_layers)
        found: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        by_node = {d.node: d for d in ranked}
        live = {d.layer for d in ranked if d.quantized}  # a layer none of whose ops reads a quantized value: no candidate
        for d in ranked:
            if d.growth <= 0 or len(found) == 4 * width:  # room for groups that turn out to change nothing
                break
            for layer in owners(d, by_node):
                if layer in current.float_layers or layer not in live:
                    continue
                group = [x for x in dict.fromkeys(self.probe.group(layer, ranked)) if x not in current.float_layers][:room]
                layers = (*current.float_layers, *group)
                if frozenset(layers) not in self.tried and all(frozenset(layers) != frozenset(f[0]) for f in found):
                    nodes = self.probe.nodes(list(layers), ranked)
                    found.append((layers, tuple(dict.fromkeys((*current.exclude, *nodes)))))
        return found

    def out_of_builds(self) -> bool:
        if self.probe.builds >= self.max_builds:
            self.stopped = f"--max-builds {self.max_builds} reached"
        return bool(self.stopped)

    def measure(self, layers: tuple[str, ...], exclude: tuple[str, ...], method: str | None = None,
                variant: str | None = None) -> Trial:
        """Build (or reuse) the candidate keeping ``exclude`` in float, calibrated with ``method`` and built with
        ``variant`` (None: the search's current ones) and score it."""
        method, variant = method or self.method, variant or self.variant
        self.tried.add(frozenset(layers))  # a combination step 4 measured is not proposed again in a later round
        candidate = self.probe.build(exclude, method, variant)
        earlier = self.by_digest.get(candidate.digest) if candidate.digest and self.probe.seen(candidate) else None
        if earlier is not None:  # the same model as one measured before: its outputs are the same
            trial = Trial(candidate, layers, earlier.value, earlier.errors)
        else:
            outputs = self.probe.run(candidate)
            trial = Trial(candidate, layers, self.metric.score(self.reference, outputs, self.labels), output_errors(self.reference, outputs))
            del outputs
            self.by_digest[candidate.digest] = trial
        if self.best is None or self.helps(trial, self.best) or (self.within(trial) and not self.within(self.best)):
            self.best = trial  # a gain within noise does not buy more layers in float
        step: dict[str, Any] = {"float_layers": list(layers), self.metric.name: round(trial.value, 6), "drop": round(self.baseline - trial.value, 6)}
        if self.methods:
            step["calibration"] = candidate.method or self.methods[0]
        if self.variants:
            step["variant"] = candidate.variant or self.variants[0]
        self.steps.append(step)
        if layers:
            same = " (the same model as an earlier candidate: not counted against --max-builds)" if self.probe.seen(candidate) else ""
            self.log(f"keeping {', '.join(layers)} in float: {self.metric.label} {trial.value:.4f}{same}")
        return trial

    def result(self) -> SearchResult:
        best = self.best
        assert best is not None
        result = SearchResult(best.candidate, list(best.float_layers), self.baseline, best.value, self.steps, self.probe.builds,
                              {m: round(v, 6) for m, v in self.calibrations.items()},
                              {v: round(x, 6) for v, x in self.variant_scores.items()})
        if not self.met():
            count = len(best.float_layers)
            method = f", calibrated with {best.candidate.method}" if best.candidate.method else ""
            method += f", built with {best.candidate.variant}" if best.candidate.variant else ""
            raise AccuracyGateError(
                f"could not meet --max-drop {self.max_drop} on {self.metric.label}: best drop {result.drop:.4f} "
                f"({self.metric.label} {best.value:.4f} vs fp32 {self.baseline:.4f}) with {count} "
                f"layer{'' if count == 1 else 's'} in float ({', '.join(best.float_layers) or 'none'}){method}; "
                f"{self.stopped or 'search ended'} after {self.probe.builds} builds; no bundle written"
            )
        return result


MOVERS = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Transpose", "Flatten", "Expand",
                    "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
"""The value movers of :data:`NOT_CANDIDATES`: their growth is the quantizer before them (see :func:`owners`)."""


def owners(d: LayerDivergence, by_node: dict[str, LayerDivergence]) -> list[str]:
    """The layers step 2 proposes for a ranked node: its own, except for an op of :data:`NOT_CANDIDATES` that is
    a layer of its own. A value mover's growth is the quantizer on its input, which belongs to the op it feeds
    (nncf and onnxruntime quantize an op's input before a ``Squeeze``): it names the layers of the nodes that
    read it, through further movers (silero-vad 16k on openvino: the speech probability quantized before
    ``Squeeze`` -> ``ReduceMean``, ranked on the ``Squeeze``; keeping the ``ReduceMean`` float took decisions from
    0.69 to 0.97). Control flow and boolean ops name nothing."""
    if not (d.op in NOT_CANDIDATES and d.layer in (d.node, d.tensor)):
        return [d.layer]  # a mover inside a bigger layer (an LSTM's state Transpose) names that layer
    if d.op not in MOVERS:
        return []
    found: dict[str, None] = {}
    pending, seen = list(d.readers), {d.node}
    while pending:
        reader = by_node.get(pending.pop(0))
        if reader is None or reader.node in seen:
            continue
        seen.add(reader.node)
        if reader.op in MOVERS and reader.layer in (reader.node, reader.tensor):
            pending += reader.readers
        elif reader.op not in NOT_CANDIDATES or reader.layer not in (reader.node, reader.tensor):
            found[reader.layer] = None
    return list(found)


def enclosing(name: str) -> str:
    """The module scope around a node or layer name: ``/stft/Pow`` -> ``/stft/``, ``convs.2`` -> ``convs.``; ""
    at the top (``/Relu_c12``, ``conv``)."""
    for sep in ("/", "."):
        head, found, _ = name.rstrip(sep).rpartition(sep)
        if found and head.strip(sep):
            return head + sep
    return ""


def module_members(d: LayerDivergence, ranked: list[LayerDivergence], kept: tuple[str, ...]) -> tuple[str, list[str]]:
    """The smallest module scope around ``d`` (by its node name, else its layer name: ``/stft/`` of
    ``/stft/Pow``, ``convs.`` of ``convs.2``) whose candidate layers not in ``kept`` come from at least two of
    its parts (sub-modules or ops: one op's ``Conv`` and its bias ``Add`` are one part), and those layers in
    ranking order; ("", []) when there is none below the top, or the scope names the op's type
    (paddle2onnx's ``p2o.Add.14`` is no module). A torch module's ops keep its path in
    their ONNX names, so the scope is the module: silero-vad's STFT front end (its ``Conv``, two ``Pow``, ``Add``
    and ``Sqrt``) met the budget kept float together (decisions 0.914 -> 0.969 on openvino, as NNCF found),
    where each alone moved nothing."""
    for attribute in ("node", "layer"):
        name = getattr(d, attribute)
        if attribute == "node" and "/" not in name:
            continue  # flat node names (``convolution_2``, paddle2onnx's ``p2o.Relu.12``): no module path
        scope = enclosing(name)
        while scope and scope.rstrip("/.").replace("/", ".").rpartition(".")[2] != d.op:  # not p2o.Add. (a module may be "conv")
            if attribute == "node" and not scope.startswith("/") and scope.count("/") == 1:
                break  # TensorFlow's model name scope (tflite: ``model_77/``), the whole model: try the layer names
            inside = [x for x in ranked if getattr(x, attribute).startswith(scope) and x.layer not in kept
                      and not (x.op in NOT_CANDIDATES and x.layer in (x.node, x.tensor))]
            parts, layers = {_child(getattr(x, attribute), scope) for x in inside}, list(dict.fromkeys(x.layer for x in inside))
            if len(parts) >= 2 and len(layers) >= 2:  # two sub-modules or ops, not one op's conv and bias (one layer)
                return scope, layers
            scope = enclosing(scope)
    return "", []


def _child(name: str, scope: str) -> str:
    """The first part of ``name`` below ``scope`` (``/stft/Pow/x`` below ``/stft/``: ``Pow``)."""
    rest = name[len(scope):]
    return rest.replace(".", "/").split("/", 1)[0]


def search(probe: TargetProbe, metric: Metric, labels: np.ndarray | None, max_drop: float, log: Callable[[str], None],
           max_float_layers: int | None = None, max_builds: int | None = None, methods: tuple[str, ...] = (),
           variants: tuple[str, ...] = ()) -> SearchResult:
    """Find a model within ``max_drop`` of FP32 on ``metric`` (see the module docstring).

    Raises:
        AccuracyGateError: the budget cannot be met; the message names the best result reached and why it stopped.
        ConfigError: the metric cannot measure these outputs (:meth:`Metric.score`).
    """
    with probe.target.reuse():  # candidates of one model: the target may share conversion and statistics
        return Search(probe, metric, labels, max_drop, log, MAX_FLOAT_LAYERS if max_float_layers is None else max_float_layers,
                      MAX_BUILDS if max_builds is None else max_builds, methods, variants).run()
