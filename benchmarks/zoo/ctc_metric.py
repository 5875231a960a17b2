"""A ``--metric`` function for CTC recognizers (text recognition, speech): how much of FP32's text survives.

Per-time-step top-1 agreement is a weak proxy for a CTC model's accuracy: a frame that flips between two
blanks changes nothing, one that drops a character changes the text. This scores what the user reads::

    edgec build rec.onnx --precision int8 --calib calib.npz --max-drop 0.01 \\
        --metric edgec.benchmarks.zoo.ctc_metric:char_accuracy --metric-reduce p5

How it scores (``char_accuracy``):
1. The first output holds per-time-step class scores, classes on the last axis and time on the one before
   (``(batch, T, C)``, as PaddleOCR's recognizers and most CTC heads give); other leading axes are rows.
2. Greedy CTC decoding of each row: the argmax per time step, repeats merged, blanks (class
   :data:`BLANK`) dropped.
3. Per sample, one minus the character error rate of the candidate's text against FP32's text (the
   Levenshtein distance over the length of FP32's text, at least 1), averaged over the sample's rows;
   ``--metric-reduce`` then takes the mean, the worst sample or a percentile.

A model whose blank is another class (the last, for some speech models) needs a two-line module of its own::

    from edgec.benchmarks.zoo.ctc_metric import char_accuracy
    def score(reference, candidate): return char_accuracy(reference, candidate, blank=-1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLANK = 0
"""The CTC blank class (PaddleOCR, most OCR heads)."""

Feed = dict[str, np.ndarray]


def greedy_decode(scores: np.ndarray, blank: int = BLANK) -> list[list[int]]:
    """Greedy CTC decoding of ``scores`` (``(..., T, C)``): one label sequence per row (rule 2)."""
    values = np.asarray(scores)
    best = values.reshape(-1, values.shape[-2], values.shape[-1]).argmax(-1)
    blank %= values.shape[-1]
    decoded = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append([int(c) for c in row[keep] if c != blank])
    return decoded


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two label sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def char_error_rate(reference: Sequence[int], candidate: Sequence[int]) -> float:
    """Edit distance over the reference's length (at least 1)."""
    return edit_distance(reference, candidate) / max(len(reference), 1)


def char_accuracy(reference: list[Feed], candidate: list[Feed], blank: int = BLANK) -> list[float]:
    """Per sample, one minus the CER of the candidate's greedy text against FP32's (rule 3); higher is better."""
    scores = []
    for ref, got in zip(reference, candidate):
        name = next(iter(ref))
        pairs = zip(greedy_decode(ref[name], blank), greedy_decode(got[name], blank))
        scores.append(float(np.mean([1.0 - char_error_rate(r, g) for r, g in pairs])))
    return scores
