"""What ``--max-drop`` measures: a score of a candidate's outputs against the target's FP32 outputs on the
same feeds, higher is better (see :mod:`edgec.compiler.mixed_precision`).

Metrics (``--metric``), each first computed per sample (one feed):
1. ``top1``: the share of the first output's rows (its last axis holds the classes) whose argmax agrees
   with FP32's. Refused on an output with a single column (one sigmoid score, ``(batch, 1)``) or no class
   axis: the argmax of one column always agrees, so it would pass any model.
2. ``decision``: the share of the first output's values on the same side of ``--threshold`` (default 0.5)
   as FP32's: the decisions of a binary (sigmoid) or multi-label output.
3. ``cosine``: cosine similarity to FP32, the lowest over the outputs.
4. ``accuracy``: the share of the first output's rows whose argmax equals the ``labels`` of ``--eval``
   (refused on one column, as ``top1``).
5. ``pkg.module:function``: ``function(reference, candidate)``, the two lists of outputs (one dict per
   sample, output name -> array, the target's FP32 model's and the candidate's) -> a score, higher is
   better: one number for all samples, or one per sample. ``benchmarks/zoo/ctc_metric.py`` is an example
   (one minus the character error rate of CTC greedy decoding).

Per-sample scores are reduced by ``--metric-reduce``: ``mean`` (default), ``min`` (the worst sample), or
``pN`` (the N-th percentile, low tail: ``p5`` is a score 95% of the samples reach). A function that returns
one number takes ``mean`` only.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.core.errors import ConfigError, brief, raise_if_bug
from edgec.core.types import Feed, TensorSpec

BUILTIN = ("top1", "decision", "cosine", "accuracy")
ARGMAX = ("top1", "accuracy")
_FUNCTION = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*")
_PERCENTILE = re.compile(r"p(\d{1,2}(\.\d+)?)")

MetricFunction = Callable[[list[Feed], list[Feed]], Any]


def check_name(name: str) -> str:
    """``name`` when it is a built-in metric or ``pkg.module:function``.

    Raises:
        ValueError: anything else (the config turns it into a one-line error naming the flag).
    """
    if name in BUILTIN or _FUNCTION.fullmatch(name):
        return name
    raise ValueError(f"expected {', '.join(BUILTIN)} or pkg.module:function")


def check_reduce(reduce: str) -> str:
    """``reduce`` when it is ``mean``, ``min`` or ``pN`` with 0 < N < 100.

    Raises:
        ValueError: anything else.
    """
    match = _PERCENTILE.fullmatch(reduce)
    if reduce in ("mean", "min") or (match and 0 < float(match.group(1)) < 100):
        return reduce
    raise ValueError("expected mean, min or pN with 0 < N < 100 (p5: the 5th percentile of per-sample scores)")


@dataclass(frozen=True)
class Metric:
    """A metric and how its per-sample scores are reduced (validated values of the build config).

    Args:
        name: a built-in metric or ``pkg.module:function``.
        reduce: ``mean``, ``min`` or ``pN``.
        threshold: the decision threshold of ``decision``.
    """

    name: str = "top1"
    reduce: str = "mean"
    threshold: float = 0.5

    @property
    def label(self) -> str:
        """How messages name it: ``cosine``, ``cosine (min)``, ``decision@0.5 (p5)``."""
        name = f"decision@{self.threshold:g}" if self.name == "decision" else self.name
        return name if self.reduce == "mean" else f"{name} ({self.reduce})"

    def to_json(self) -> dict[str, Any]:
        """The manifest's description of the metric."""
        data: dict[str, Any] = {"metric": self.name, "reduce": self.reduce}
        if self.name == "decision":
            data["threshold"] = self.threshold
        return data

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Refuse what cannot measure this model, before anything is built (rule 1; the function resolves).

        Raises:
            ConfigError: ``top1``/``accuracy`` on an output with one column or no class axis; a function
                that cannot be imported.
        """
        if self.name in ARGMAX and outputs:
            _check_classes(self.name, outputs[0].name, outputs[0].shape)
        if self.name not in BUILTIN:
            self.function()

    def function(self) -> MetricFunction:
        """The ``pkg.module:function`` callable.

        Raises:
            ConfigError: the module cannot be imported or has no such function.
        """
        module_name, _, func = self.name.partition(":")
        if "" not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"--metric {self.name}: cannot import {module_name!r}: {brief(exc)}") from None
        found = getattr(module, func, None)
        if not callable(found):
            raise ConfigError(f"--metric {self.name}: {module_name} has no function {func!r}; "
                              "expected function(reference_outputs, candidate_outputs) -> score")
        return found  # type: ignore[no-any-return]

    def score(self, reference: list[Feed], outputs: list[Feed], labels: np.ndarray | None = None) -> float:
        """The reduced score of ``outputs`` against ``reference`` (same feeds, same order).

        Raises:
            ConfigError: rule 1 on the actual outputs; a function that raised, returned something that is not
                finite numbers, or one number with a reduction other than ``mean``.
        """
        return reduce_scores(self.per_sample(reference, outputs, labels), self.reduce, self.name)

    def per_sample(self, reference: list[Feed], outputs: list[Feed], labels: np.ndarray | None) -> np.ndarray:
        """One score per sample (a 0-d array when a function returns one number)."""
        if self.name not in BUILTIN:
            return _call(self.name, self.function(), reference, outputs)
        first = next(iter(reference[0]))
        if self.name in ARGMAX:
            _check_classes(self.name, first, np.shape(reference[0][first]))
        if self.name == "top1":
            return np.array([_agree(_rows(r[first]).argmax(-1), _rows(o[first]).argmax(-1)) for r, o in zip(reference, outputs)])
        if self.name == "decision":
            t = self.threshold
            return np.array([_agree(np.asarray(r[first]) > t, np.asarray(o[first]) > t) for r, o in zip(reference, outputs)])
        if self.name == "accuracy":
            return _accuracy(first, outputs, labels)
        return np.array([min(cosine(r[name], o[name]) for name in r) for r, o in zip(reference, outputs)])


def reduce_scores(scores: np.ndarray, reduce: str, name: str = "the metric") -> float:
    """``mean``, ``min`` or the ``pN`` percentile (``lower`` method: a sample's own score) of ``scores``.

    Raises:
        ConfigError: one number (``ndim == 0``) with a reduction other than ``mean``.
    """
    if scores.ndim == 0:
        if reduce != "mean":
            raise ConfigError(f"--metric-reduce {reduce} needs one score per sample; {name} returned one number")
        return float(scores)
    if reduce == "mean":
        return float(np.mean(scores))
    if reduce == "min":
        return float(np.min(scores))
    return float(np.percentile(scores, float(reduce[1:]), method="lower"))


def output_errors(reference: list[Feed], outputs: list[Feed]) -> np.ndarray:
    """Per sample, the relative L2 error of all outputs together (picks the samples the ranking uses)."""
    errors = []
    for r, o in zip(reference, outputs):
        ref = np.concatenate([np.asarray(r[n], np.float64).ravel() for n in r])
        got = np.concatenate([np.asarray(o[n], np.float64).ravel() for n in r])
        errors.append(float(np.linalg.norm(ref - got) / (np.linalg.norm(ref) + 1e-30)))
    return np.array(errors)


def _check_classes(metric: str, output: str, shape: Sequence[Any]) -> None:
    if len(shape) < 2 or shape[-1] == 1:
        raise ConfigError(f"--metric {metric} compares the argmax of output {output!r}'s last axis, which has "
                          f"{'one column' if len(shape) >= 2 else 'no class axis'} (shape {tuple(shape)}): it would always "
                          "agree; use --metric decision --threshold 0.5 for a sigmoid score, or --metric cosine")


def _call(name: str, function: MetricFunction, reference: list[Feed], outputs: list[Feed]) -> np.ndarray:
    try:
        result = function(reference, outputs)
    except Exception as exc:  # the user's own metric function: whatever it raises is the user's to fix
        raise_if_bug(exc, f"--metric {name}")
        raise ConfigError(f"--metric {name} raised {type(exc).__name__}: {brief(exc, 300)}") from exc
    try:
        scores = np.asarray(result, np.float64)
    except (TypeError, ValueError):
        scores = np.array([np.nan])
    if scores.ndim > 1 or (scores.ndim == 1 and len(scores) != len(outputs)) or not np.all(np.isfinite(scores)):
        raise ConfigError(f"--metric {name} returned {brief(repr(result), 80)}; expected a finite number or "
                          f"one per sample ({len(outputs)})")
    return scores


def _rows(array: Any) -> np.ndarray:
    values = np.asarray(array, np.float64)
    return values.reshape(-1, values.shape[-1])


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two zero arrays, 0.0 for one)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denom) if denom > 0 else float(np.array_equal(x, y))


def _accuracy(first: str, outputs: list[Feed], labels: np.ndarray | None) -> np.ndarray:
    assert labels is not None  # budget_feeds refuses --metric accuracy without labelled --eval data
    flat, scores, start = labels.reshape(-1), [], 0
    for output in outputs:
        predicted = _rows(output[first]).argmax(-1)
        scores.append(_agree(predicted, flat[start:start + len(predicted)]) if start + len(predicted) <= len(flat) else np.nan)
        start += len(predicted)
    if start != len(flat):
        raise ConfigError(f"--eval has {len(flat)} labels for {start} rows of output {first!r}; expected one label per row")
    return np.array(scores)
