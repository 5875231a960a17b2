"""Input drift: population stability index (PSI) of live inputs against the calibration summary.

The bundle's manifest carries ``input_stats[name] = {edges, expected}``: inner quantile edges of the
calibration values and the share of values per bin. Live values are counted into the same bins;
``PSI = sum((a - e) * ln(a / e))`` over bins, with shares floored at 1e-4. Rules of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 significant shift.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

FLOOR = 1e-4


class DriftTracker:
    """Running bin counts per input and their PSI against the expected shares.

    Args:
        stats: the manifest's ``input_stats`` (may be empty: no calibration summary, no drift score).
    """

    def __init__(self, stats: dict[str, Any] | None) -> None:
        self._edges = {name: np.asarray(s["edges"], np.float64) for name, s in (stats or {}).items()}
        self._expected = {name: np.asarray(s["expected"], np.float64) for name, s in (stats or {}).items()}
        self._counts = {name: np.zeros(len(e), np.int64) for name, e in self._expected.items()}
        self._lock = threading.Lock()

    @property
    def inputs(self) -> list[str]:
        """Inputs with a calibration summary."""
        return sorted(self._edges)

    def update(self, feed: dict[str, np.ndarray]) -> None:
        """Count the values of one request."""
        for name, edges in self._edges.items():
            if name in feed:
                values = np.asarray(feed[name], np.float64).ravel()
                bins = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
                with self._lock:
                    self._counts[name] += bins

    def samples(self, name: str) -> int:
        """Values counted so far for ``name``."""
        return int(self._counts[name].sum())

    def psi(self, name: str) -> float:
        """PSI of everything seen for ``name``; 0.0 before any value arrived."""
        with self._lock:
            counts = self._counts[name].astype(np.float64)
        total = counts.sum()
        if total == 0:
            return 0.0
        actual = np.maximum(counts / total, FLOOR)
        expected = np.maximum(self._expected[name], FLOOR)
        return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_of(values: np.ndarray, stats: dict[str, Any]) -> float:
    """PSI of one batch of values against one input's stats (for tests and offline checks)."""
    tracker = DriftTracker({"v": stats})
    tracker.update({"v": values})
    return tracker.psi("v") if math.isfinite(tracker.psi("v")) else float("inf")
