"""The ``--max-drop`` search's probe: builds a target's candidates into scratch folders with its real export and
runs them with its runtime shim (:class:`TargetProbe`), so what is measured is what ships. The search itself is
:mod:`edgec.compiler.mixed_precision`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from edgec.core.errors import EdgecError, ExportError, UnsupportedError, brief, raise_if_bug
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks.fidelity import LayerDivergence
from edgec.runtime_shims.measure import time_calls
from edgec.targets.base import ExportResult, LayerTools, PrecisionRequest, Target
from edgec.targets.options import TargetOptions

METHOD_ORDER = ("percentile", "entropy", "minmax")
"""Calibration methods in the order step 1 tries them after the build's own: ``percentile`` first (it drops the
rare outliers that stretch a min/max range, the usual reason a whole model breaks), ``entropy`` next (it clips
harder and calibrates slower), ``minmax`` last (the default, so usually tried first as the build's own)."""


@dataclass(frozen=True)
class Candidate:
    """One reduced-precision model built in a scratch folder."""

    exclude: tuple[str, ...]
    model: Path
    result: ExportResult
    method: str | None = None
    """The calibration method it was built with; None: the build's own (``--calib-method``)."""
    digest: str = ""
    """sha256 over the model's files: equal digests are the same model (an exclusion that changed nothing)."""
    variant: str | None = None
    """The target variant it was built with (:meth:`Target.searched_variants`); None: the build's own options."""
    options: TargetOptions | None = None
    """That variant's target options (None with it)."""

    @property
    def size(self) -> int:
        """Bytes of the model's files."""
        return sum((self.model.parent / f).stat().st_size for f in self.result.files)


class TargetProbe:
    """Builds a target's model files in scratch folders and runs them: the FP32 reference and candidates.

    Args:
        target: the build's target.
        request: the build's precision request (its ``exclude`` is replaced per candidate).
        float_art: the float model the target exports.
        quantize: runs the target's precision passes for a request (some nodes kept in float, a calibration
            method) on the float model (identity for targets that quantize in :meth:`Target.export`).
        feeds: the budget feeds, in the source model's layout.
        scratch: a folder for the candidates (removed by the caller).
    """

    def __init__(self, target: Target, request: PrecisionRequest, float_art: ModelArtifact,
                 quantize: Callable[[PrecisionRequest], ModelArtifact], feeds: list[Feed], scratch: Path) -> None:
        self.target, self.request, self.float_art, self.quantize = target, request, float_art, quantize
        self.feeds, self.scratch = feeds, scratch
        self._built: dict[tuple[str | None, str | None, tuple[str, ...]], Candidate] = {}
        self._reference: Candidate | None = None
        self._reference_outputs: list[Feed] | None = None

    @property
    def builds(self) -> int:
        """Distinct reduced-precision models built so far: a candidate whose files equal an earlier one's (keeping
        a node in float that the target already leaves float, or whose tensors its neighbours quantize anyway)
        is not counted against ``--max-builds``."""
        return len({c.digest for c in self._built.values()})

    def seen(self, candidate: Candidate) -> bool:
        """Whether another candidate built before ``candidate`` is the same model."""
        return any(c.digest == candidate.digest and c is not candidate for c in self._built.values())

    @property
    def reference(self) -> Candidate:
        """The target's FP32 model (built once)."""
        if self._reference is None:
            # calibration goes along: a converter may use it for shapes (onnx2tf's check feed), not for precision
            request = PrecisionRequest("fp32", calibration=self.request.calibration, options=self.request.options,
                                       data_shapes=self.request.data_shapes)  # sizes a target may fix dims to
            self._reference = self._make(self.float_art, request, "fp32")
        return self._reference

    @property
    def reference_outputs(self) -> list[Feed]:
        """The FP32 model's outputs on the budget feeds (run once, kept)."""
        if self._reference_outputs is None:
            self._reference_outputs = self.run(self.reference)
        return self._reference_outputs

    def methods(self) -> tuple[str, ...]:
        """The calibration methods the search tries: the build's own first, then the others the target tells
        apart for this request, in :data:`METHOD_ORDER` (empty when calibration does not shape the model)."""
        own = self.request.calibration.method if self.request.calibration is not None else None
        supported = self.target.searched_methods(self.request, self.float_art)
        if own is None or not supported:
            return ()
        return (own, *(m for m in METHOD_ORDER if m in supported and m != own))

    @cached_property
    def _variant_options(self) -> dict[str, TargetOptions]:
        return dict(self.target.searched_variants(self.request, self.float_art))

    def variants(self) -> tuple[str, ...]:
        """The target variants the search tries (:meth:`Target.searched_variants`), the build's own first; empty
        when the target offers no alternative."""
        return tuple(self._variant_options) if len(self._variant_options) > 1 else ()

    def with_request(self, exclude: tuple[str, ...], method: str | None = None, variant: str | None = None) -> PrecisionRequest:
        """The build's request with ``exclude`` kept in float, calibrated with ``method`` (None: its own) and built
        with ``variant``'s target options (None: its own)."""
        calibration = self.request.calibration
        if method is not None and calibration is not None and method != calibration.method:
            calibration = replace(calibration, method=method)
        options = self.request.options if variant is None else self._variant_options[variant]
        return replace(self.request, exclude=exclude, calibration=calibration, options=options)

    def build(self, exclude: tuple[str, ...], method: str | None = None, variant: str | None = None) -> Candidate:
        """The reduced-precision model with ``exclude`` kept in float, calibrated with ``method`` and built with
        target ``variant`` (None: the build's own), built once per (method, variant, exclusion set)."""
        own = self.request.calibration.method if self.request.calibration is not None else None
        own_variant = next(iter(self.variants()), None)
        key = (None if method == own else method, None if variant == own_variant else variant, tuple(sorted(exclude)))
        if key not in self._built:
            request = self.with_request(exclude, key[0], key[1])
            candidate = self._make(self.quantize(request), request, f"candidate-{len(self._built)}")
            options = None if key[1] is None else request.options
            self._built[key] = replace(candidate, method=key[0], variant=key[1], options=options)
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
        digest = self.target.model_digest(folder, result.files)
        return Candidate(request.exclude, folder / result.model_file, result, digest=digest)
