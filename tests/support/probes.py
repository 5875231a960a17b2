"""A scripted stand-in for the ``--max-drop`` search's probe: scores are looked up, nothing is built."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.compiler.search_probe import Candidate
from edgec.frameworks.fidelity import LayerDivergence

Key = tuple[str, frozenset[str]]
"""(calibration method, float layers); the build's own method is ``minmax``."""


class ScriptedProbe:
    """Scores per (method, float layers) or per float layers alone (any method); a fixed layer ranking.

    ``cosine`` reads the score back; ``built`` lists each (method, layers) built, once. ``same`` maps float layers
    to the float layers whose model they build (an exclusion that changes nothing: ``{frozenset({"mul"}):
    frozenset()}``); such a build scores as that model and is not counted in :attr:`builds`.
    """

    def __init__(self, scores: dict[Key, float] | dict[frozenset[str], float], ranking: list[str],
                 default: float = 0.9, same: dict[frozenset[str], frozenset[str]] | None = None) -> None:
        self.scores: dict[object, float] = dict(scores)
        self.ranking, self.default, self.same = ranking, default, same or {}
        self.built: list[Key] = []
        self.reference_outputs = [{"y": np.array([1.0, 0.0])} for _ in range(4)]

    def _model(self, key: Key) -> Key:
        return key[0], self.same.get(key[1], key[1])

    @property
    def builds(self) -> int:
        return len({self._model(k) for k in self.built})

    def seen(self, candidate: Candidate) -> bool:
        key = (candidate.method or "minmax", frozenset(candidate.exclude))
        earlier = self.built[:self.built.index(key)]
        return self._model(key) in {self._model(k) for k in earlier}

    def build(self, exclude: tuple[str, ...], method: str | None = None, variant: str | None = None) -> Candidate:
        assert variant is None, "ScriptedProbe scores no target variants (tests/unit/compiler/test_search_variants.py does)"
        key = (method or "minmax", frozenset(exclude))
        if key not in self.built:
            self.built.append(key)
        model = self._model(key)
        digest = f"{model[0]}:{','.join(sorted(model[1]))}"  # one per model: the same-model builds share it
        return Candidate(tuple(sorted(exclude)), Path("/nowhere/model"), None, method, digest)  # type: ignore[arg-type]

    def run(self, candidate: Candidate) -> list[dict[str, np.ndarray]]:
        layers = self.same.get(frozenset(candidate.exclude), frozenset(candidate.exclude))
        value = self.scores.get((candidate.method or "minmax", layers), self.scores.get(layers, self.default))
        return [{"y": np.array([value, np.sqrt(1 - value**2)])} for _ in range(4)]

    def rank(self, candidate: Candidate, indices: list[int]) -> list[LayerDivergence]:
        return [LayerDivergence(x, "Conv", x, x, 0.1, 0.9, 0.1 - i / 100) for i, x in enumerate(self.ranking)]

    def group(self, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        return [layer]

    def nodes(self, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        return tuple(layers)
