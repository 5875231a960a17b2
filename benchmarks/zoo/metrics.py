"""Task metrics of the zoo: how much of FP32's answer a reduced-precision bundle keeps, per sample.

Every metric has the ``--metric pkg.module:function`` signature ``metric(reference, candidate) -> list[float]``
(one score per sample, higher is better, 1.0 = FP32's answer), with each sample's outputs as a dict in the
model's output order, so that any of them can also drive ``edgec build --max-drop``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.benchmarks.zoo.ctc_metric import char_accuracy

Feed = dict[str, np.ndarray]
Metric = Callable[[list[Feed], list[Feed]], list[float]]


def _first(feed: Feed) -> np.ndarray:
    return np.asarray(next(iter(feed.values())), np.float64)


def top1_agreement(reference: list[Feed], candidate: list[Feed]) -> list[float]:
    """The share of rows of the first output whose top class (last axis) is FP32's."""
    return [float(np.mean(_first(r).argmax(-1) == _first(c).argmax(-1))) for r, c in zip(reference, candidate)]


def ctc_char_accuracy(reference: list[Feed], candidate: list[Feed]) -> list[float]:
    """One minus the character error rate of the greedy CTC text against FP32's (blank = class 0)."""
    return char_accuracy(reference, candidate)


def map_iou(reference: list[Feed], candidate: list[Feed], threshold: float = 0.3) -> list[float]:
    """Intersection over union of the first output's map above ``threshold`` (PP-OCR's DB binarisation)."""
    scores = []
    for r, c in zip(reference, candidate):
        a, b = _first(r) > threshold, _first(c) > threshold
        union = int(np.sum(a | b))
        scores.append(1.0 if union == 0 else float(np.sum(a & b)) / union)
    return scores


def vad_decision(reference: list[Feed], candidate: list[Feed], threshold: float = 0.5) -> list[float]:
    """The share of speech/non-speech decisions (first output above ``threshold``) that match FP32's."""
    return [float(np.mean((_first(r) > threshold) == (_first(c) > threshold))) for r, c in zip(reference, candidate)]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of centre-size boxes (rows of cx, cy, w, h)."""
    lo = np.maximum(a[:, :2] - a[:, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    hi = np.minimum(a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / np.maximum(np.prod(a[:, 2:], 1) + np.prod(b[:, 2:], 1) - inter, 1e-9)


def detection_agreement(reference: list[Feed], candidate: list[Feed], top: int = 20) -> list[float]:
    """YOLOv8 (``[1, 4 + classes, anchors]``): of FP32's ``top`` anchors by class score, the share the candidate
    gives the same class, a box with IoU >= 0.5 and a score within 0.1 of FP32's."""
    scores = []
    for r, c in zip(reference, candidate):
        ref, got = _first(r)[0], _first(c)[0]
        best = np.argsort(-ref[4:].max(0))[:top]
        same_class = ref[4:, best].argmax(0) == got[4:, best].argmax(0)
        close = np.abs(ref[4:, best].max(0) - got[4:, best].max(0)) <= 0.1
        overlap = _iou(ref[:4, best].T, got[:4, best].T) >= 0.5
        scores.append(float(np.mean(same_class & close & overlap)))
    return scores


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def min_output_cosine(reference: list[Feed], candidate: list[Feed]) -> list[float]:
    """Per sample, the worst cosine similarity over the outputs (each head on its own scale)."""
    return [min(_cosine(np.asarray(r[n], np.float64), np.asarray(c[n], np.float64)) for n in r)
            for r, c in zip(reference, candidate)]


def embedding_cosine(reference: list[Feed], candidate: list[Feed]) -> list[float]:
    """Cosine similarity of the first output (an embedding) to FP32's."""
    return [_cosine(_first(r), _first(c)) for r, c in zip(reference, candidate)]


def pitch_agreement(reference: list[Feed], candidate: list[Feed], tolerance: int = 1) -> list[float]:
    """The share of frames whose most likely pitch bin (20 cents each) is within ``tolerance`` bins of FP32's."""
    return [float(np.mean(np.abs(_first(r).argmax(-1) - _first(c).argmax(-1)) <= tolerance))
            for r, c in zip(reference, candidate)]


METRICS: dict[str, Metric] = {
    f.__name__: f for f in (top1_agreement, ctc_char_accuracy, map_iou, vad_decision, detection_agreement,
                            min_output_cosine, embedding_cosine, pitch_agreement)
}
"""The metrics by the name :attr:`edgec.benchmarks.zoo.models.ZooModel.metric` gives."""
