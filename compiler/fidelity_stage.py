"""The fidelity stage of a build (``--max-drop``, ``--report-layers``): its frozen records, and the
measurements that make them.

:meth:`edgec.compiler.pipeline.Build.fidelity` makes one :class:`Fidelity`; the later stages read it: the
export reuses its chosen candidate's files, the bundle gets its extra files and manifest fields, and the
CLI prints its cost.

Where ``--max-drop`` measures (:func:`budget_feeds`), never on samples calibration saw:
1. ``--eval DATA`` when given: every sample (inputs, plus ``labels`` for ``--metric accuracy``).
2. Else, with ``--calib``, held-out calibration samples (:func:`hold_out`, deterministic): when
   ``--calib-samples N`` leaves at least :data:`HOLDOUT_MIN` samples of the data unused, up to
   :data:`BUDGET_SAMPLES` of those, spread evenly over them; otherwise a quarter of the samples (at most
   :data:`BUDGET_SAMPLES`) are taken out of calibration: of ``n`` samples, ``k = min(128, n // 4)``, sample
   ``i * n // k`` for ``i < k`` (spread evenly, so data sorted by class is held out across classes).
   Fewer than :data:`HOLDOUT_MIN` to hold out is a calibration error that asks for ``--eval``.
3. Else (no data given: fp16, dynamic INT8) the golden inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgec.calibration.dataset import IGNORED_ARRAYS, CalibrationSet, subset_indices
from edgec.calibration.readers import read_path
from edgec.compiler import input_values, mixed_precision
from edgec.compiler.config import BuildConfig
from edgec.compiler.golden import spread
from edgec.compiler.metrics import Metric
from edgec.compiler.mixed_precision import SearchResult
from edgec.compiler.search_probe import Candidate, TargetProbe
from edgec.core.errors import CalibrationError, ConfigError
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks.fidelity import LayerDivergence
from edgec.targets.base import PrecisionRequest, Target

BUDGET_SAMPLES = 128
"""Held-out calibration samples ``--max-drop`` measures on, at most, when no ``--eval`` is given."""
HOLDOUT_MIN = 4
"""Fewest held-out samples ``--max-drop`` measures on without ``--eval``."""

LAYERS = "layers.json"
"""The layer report's file in the bundle."""


@dataclass(frozen=True)
class MixedPrecision:
    """What ``--max-drop`` chose and how it got there (the manifest's ``mixed_precision``)."""

    metric: str
    max_drop: float
    samples: int
    fp32: float
    value: float
    drop: float
    float_layers: tuple[str, ...]
    float_nodes: tuple[str, ...]
    steps: tuple[dict[str, Any], ...]
    size_all_quantized: int
    size: int
    measured_on: str = "golden"
    builds: int = 0
    how: Metric = Metric()
    calibration: str | None = None
    """The calibration method the chosen model was built with, when the search tried several."""
    calibrations: tuple[tuple[str, float], ...] = ()
    """(method, the all-quantized model's score with it) for each calibration method the search tried."""
    variant: str | None = None
    """The target variant the chosen model was built with (``quantize_ops=onnxruntime``), when the search tried several."""
    variants: tuple[tuple[str, float], ...] = ()
    """(variant, the all-quantized model's score with it) for each target variant the search tried."""

    @classmethod
    def from_search(cls, result: SearchResult, metric: Metric, max_drop: float, budget: Budget,
                    size_all_quantized: int) -> MixedPrecision:
        """The record of a finished search (values rounded to 6 decimals, as the manifest keeps them)."""
        chosen = (result.method or next(iter(result.calibrations))) if result.calibrations else None
        variant = (result.variant or next(iter(result.variants))) if result.variants else None
        return cls(metric.name, max_drop, len(budget.feeds), round(result.baseline, 6), round(result.value, 6),
                   round(result.drop, 6), tuple(result.float_layers), tuple(result.exclude), tuple(result.steps),
                   size_all_quantized, result.candidate.size, budget.source, result.builds, metric, chosen,
                   tuple(result.calibrations.items()), variant, tuple(result.variants.items()))

    @property
    def label(self) -> str:
        """The metric as messages name it (``cosine (min)``)."""
        return self.how.label

    def to_json(self) -> dict[str, Any]:
        """The manifest entry."""
        entry = {**self.how.to_json(), "max_drop": self.max_drop, "samples": self.samples, "measured_on": self.measured_on,
                 "fp32": self.fp32, "value": self.value, "drop": self.drop, "float_layers": list(self.float_layers),
                 "float_nodes": list(self.float_nodes), "steps": list(self.steps), "builds": self.builds,
                 "size_all_quantized": self.size_all_quantized, "size": self.size}
        if self.calibration is not None:
            entry["calibration"] = {"method": self.calibration, "tried": dict(self.calibrations)}
        if self.variant is not None:
            entry["variant"] = {"chosen": self.variant, "tried": dict(self.variants)}
        return entry


@dataclass(frozen=True)
class Cost:
    """Size and latency (batch 1, this host) of the chosen model versus the all-quantized one."""

    size: int
    size_all_quantized: int
    latency_ms: float
    latency_ms_all_quantized: float
    float_layers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms_all_quantized": self.latency_ms_all_quantized, "latency_ms": self.latency_ms,
                "size_all_quantized": self.size_all_quantized, "size": self.size, "float_layers": list(self.float_layers)}


@dataclass(frozen=True)
class LayerReport:
    """``--report-layers``: the chosen model's layers by the error they add, on the golden inputs."""

    samples: int
    layers: tuple[LayerDivergence, ...]

    def text(self) -> str:
        """The content of ``layers.json``."""
        body = {"samples": self.samples, "layers": [d.to_json() for d in self.layers]}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``layer_report``."""
        return {"file": LAYERS, "worst": [d.layer for d in self.layers[:5]]}


@dataclass(frozen=True)
class Fidelity:
    """The fidelity stage's outcome.

    Args:
        chosen: the reduced-precision model built and measured in a scratch folder; the bundle ships its files.
        mixed_precision: the ``--max-drop`` search's record, when one ran.
        cost: what keeping layers in float costs, when the search ran.
        layer_report: the ``--report-layers`` report, when asked for.
    """

    chosen: Candidate
    mixed_precision: MixedPrecision | None = None
    cost: Cost | None = None
    layer_report: LayerReport | None = None

    @property
    def exclude(self) -> tuple[str, ...]:
        """The nodes kept in float."""
        return self.chosen.exclude

    def apply(self, request: PrecisionRequest) -> PrecisionRequest:
        """The build's request as the chosen model was built: its nodes kept in float, its calibration method, its
        target variant's options."""
        calibration = request.calibration
        if self.chosen.method is not None and calibration is not None:
            calibration = replace(calibration, method=self.chosen.method)
        options = self.chosen.options if self.chosen.options is not None else request.options
        return replace(request, exclude=self.exclude, calibration=calibration, options=options)

    def files(self) -> dict[str, str]:
        """Extra bundle files: relative path -> text."""
        return {LAYERS: self.layer_report.text()} if self.layer_report is not None else {}

    def manifest_fields(self) -> dict[str, Any]:
        """Extra manifest fields."""
        fields: dict[str, Any] = {}
        if self.mixed_precision is not None:
            fields["mixed_precision"] = self.mixed_precision.to_json()
        if self.layer_report is not None:
            fields["layer_report"] = self.layer_report.to_json()
        return fields


@dataclass(frozen=True)
class Budget:
    """The feeds ``--max-drop`` measures on, their labels (``--metric accuracy``) and where they come from
    (``eval``, ``held-out calibration`` or ``golden``)."""

    feeds: list[Feed]
    labels: np.ndarray | None
    source: str


def holds_out(config: BuildConfig) -> bool:
    """Whether calibration samples are held out for ``--max-drop`` (rule 2 of the module docstring)."""
    return config.max_drop is not None and config.eval is None and config.calib is not None


def calibration_samples(config: BuildConfig) -> int | None:
    """The ``samples`` to load calibration data with: all of them when some are held out (:func:`hold_out`
    draws ``--calib-samples`` itself), else ``--calib-samples``."""
    return None if holds_out(config) else config.calib_samples


def hold_out(calibration: CalibrationSet | None, config: BuildConfig,
             log: Callable[[str], None]) -> tuple[CalibrationSet | None, tuple[Feed, ...]]:
    """Split the calibration data (loaded with :func:`calibration_samples`) into what calibration uses and
    the held-out feeds ``--max-drop`` measures on (rule 2 of the module docstring); no split otherwise.

    Raises:
        CalibrationError: fewer than :data:`HOLDOUT_MIN` samples to hold out.
    """
    if calibration is None or not holds_out(config):
        return calibration, ()
    count = len(calibration)
    chosen = [int(i) for i in subset_indices(count, config.calib_samples)]
    unused = sorted(set(range(count)) - set(chosen))
    if len(unused) >= HOLDOUT_MIN:
        held = [unused[i] for i in spread(len(unused), min(BUDGET_SAMPLES, len(unused)))]
    else:
        wanted = min(BUDGET_SAMPLES, len(chosen) // 4)
        if wanted < HOLDOUT_MIN:
            raise CalibrationError(f"--max-drop measures on samples calibration does not use: {len(chosen)} calibration "
                                   f"samples leave {wanted} to hold out, fewer than {HOLDOUT_MIN}",
                                   hint=f"give --eval DATA.npz, or at least {4 * HOLDOUT_MIN} calibration samples")
        held = [chosen[i] for i in spread(len(chosen), wanted)]
        chosen = [i for i in chosen if i not in set(held)]
    log(f"--max-drop: measuring on {len(held)} held-out calibration samples, calibrating on {len(chosen)}")
    feeds = tuple({name: np.array(arr[i]) for name, arr in calibration.arrays.items()} for i in held)
    return calibration.select(chosen), feeds


def metric(config: BuildConfig) -> Metric:
    """The build's ``--metric``, ``--metric-reduce`` and ``--threshold``."""
    return Metric(config.metric, config.metric_reduce, config.threshold)


def budget_feeds(config: BuildConfig, artifact: ModelArtifact, holdout: tuple[Feed, ...],
                 golden_inputs: list[Feed]) -> Budget:
    """Where ``--max-drop`` measures (the module docstring's rules), checked against the metric before anything
    is built.

    Raises:
        ConfigError: ``--metric accuracy`` without ``--eval``; a metric that cannot measure these outputs
            (``top1`` on a single score) or cannot be imported.
        CalibrationError: the ``--eval`` data does not match the model's inputs, or has no labels for ``accuracy``.
    """
    metric(config).check(artifact.outputs)
    if config.eval is not None:
        raw = _eval_arrays(read_path(config.eval, artifact.inputs, None, max_bytes=config.calib_max_mb << 20), artifact, config)
        if config.metric == "accuracy" and "labels" not in raw:
            raise CalibrationError(f"--eval {config.eval} has no 'labels' array; expected inputs plus labels")
        data = CalibrationSet.from_arrays(raw, artifact.inputs, source=str(config.eval))
        labels = np.asarray(raw["labels"]).reshape(-1) if "labels" in raw else None
        return Budget(list(data.feeds()), labels, "eval")
    if config.metric == "accuracy":
        raise ConfigError("--metric accuracy needs --eval DATA.npz (model inputs plus a 'labels' array)")
    if holdout:
        return Budget(list(holdout), None, "held-out calibration")
    return Budget(golden_inputs, None, "golden")


def _eval_arrays(raw: dict[str, np.ndarray], artifact: ModelArtifact, config: BuildConfig) -> dict[str, np.ndarray]:
    """``--eval`` arrays as calibration reads them with ``--input-value``: a setting folded into the graph (no
    longer an input) is dropped, one that is still an input takes its value in every sample (the data need
    not hold it)."""
    names = {spec.name for spec in artifact.inputs}
    kept = {k: v for k, v in raw.items() if k not in config.input_values or k in names}
    settings = {k: v for k, v in config.input_values.items() if k in names}
    if not settings:
        return kept
    data = [np.asarray(v) for k, v in kept.items() if k not in settings and k not in IGNORED_ARRAYS]
    count = len(data[0]) if data else 1
    arrays = input_values.value_arrays(artifact.inputs, settings)
    return {**kept, **{k: np.broadcast_to(v, (count, *v.shape)).copy() for k, v in arrays.items()}}


def search(probe: TargetProbe, budget: Budget, config: BuildConfig, log: Callable[[str], None]) -> tuple[MixedPrecision, Cost]:
    """Run the ``--max-drop`` search and measure what its choice costs against the all-quantized model.

    Raises:
        AccuracyGateError: the budget cannot be met.
        ConfigError: the metric cannot measure these outputs.
    """
    assert config.max_drop is not None
    how = metric(config)
    result = mixed_precision.search(probe, how, budget.labels, config.max_drop, log, config.max_float_layers, config.max_builds,
                                    probe.methods(), probe.variants())
    all_quantized = probe.build(())
    mixed = MixedPrecision.from_search(result, how, config.max_drop, budget, all_quantized.size)
    latency_all_quantized = probe.latency_ms(all_quantized)
    cost = Cost(result.candidate.size, all_quantized.size, probe.latency_ms(result.candidate), latency_all_quantized,
                tuple(result.float_layers))
    return mixed, cost


def layer_report(target: Target, probe: TargetProbe, chosen: Candidate, golden_inputs: list[Feed]) -> LayerReport:
    """``--report-layers``: the chosen model's layers against the target's FP32 model, on the golden inputs."""
    feeds = target.bundle_feeds(golden_inputs, chosen.result)
    return LayerReport(len(feeds), tuple(probe.layers.compare_layers(probe.reference.model, chosen.model, feeds)))
