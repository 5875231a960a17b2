"""A scripted stand-in for the ``--max-drop`` search's probe: scores are looked up, nothing is built."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.compiler.mixed_precision import Candidate
from edgec.frameworks.fidelity import LayerDivergence

Key = tuple[str, frozenset[str]]
"""(calibration method, float layers); the build's own method is ``minmax``."""


class ScriptedProbe:
    """Scores per (method, float layers) or per float layers alone (any method); a fixed layer ranking.

    ``cosine`` reads the score back; ``built`` lists each (method, layers) built, once.
    """

    def __init__(self, scores: dict[Key, float] | dict[frozenset[str], float], ranking: list[str],
                 default: float = 0.9) -> None:
        self.scores: dict[object, float] = dict(scores)
        self.ranking, self.default = ranking, default
        self.built: list[Key] = []
        self.reference_outputs = [{"y": np.array([1.0, 0.0])} for _ in range(4)]

    @property
    def builds(self) -> int:
        return len(self.built)

    def build(self, exclude: tuple[str, ...], method: str | None = None) -> Candidate:
        key = (method or "minmax", frozenset(exclude))
        if key not in self.built:
            self.built.append(key)
        return Candidate(tuple(sorted(exclude)), Path("/nowhere/model"), None, method)  # type: ignore[arg-type]

    def run(self, candidate: Candidate) -> list[dict[str, np.ndarray]]:
        layers = frozenset(candidate.exclude)
        value = self.scores.get((candidate.method or "minmax", layers), self.scores.get(layers, self.default))
        return [{"y": np.array([value, np.sqrt(1 - value**2)])} for _ in range(4)]

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        return [LayerDivergence(x, "Conv", x, x, 0.1, 0.9, 0.1 - i / 100) for i, x in enumerate(self.ranking)]

    def group(self, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        return [layer]

    def nodes(self, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        return tuple(layers)
