"""Fold inputs that take one value into the graph (``--input-value NAME=VALUE --fold-input-values``).

Why: a setting such as a voice-activity model's ``sample_rate`` is the same for every call on a device.
Written into the graph as a constant, the bundle no longer takes it, and the clean-up pass after this one
can fold what depends on it (an ``If`` on ``sample_rate == 16000`` becomes its branch).

Rules:
1. Each named input becomes an initializer of the same name holding ``VALUE`` in the input's dtype and
   declared shape (which must be fixed); the graph input is removed. The other inputs keep their order.
2. A name that is not a graph input is an error (the build checks names before any pass runs).
"""

from __future__ import annotations

from typing import Any

from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import ConfigError, InternalError
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


class FoldInputsOptions(PassOptions):
    values: dict[str, int | float]


class FoldInputs(Pass):
    """Replace graph inputs by constants of the given values."""

    name = "fold_inputs"
    Options = FoldInputsOptions

    def requires(self, artifact: ModelArtifact, ctx: PassContext) -> None:
        super().requires(artifact, ctx)
        from edgec.compiler.input_values import value_arrays

        value_arrays(artifact.inputs, self.options.values)  # type: ignore[attr-defined]  # rule 2, dtypes, shapes

    def ensures(self, before: ModelArtifact, result: PassResult) -> None:
        """The folded inputs are gone and the others kept their order (instead of the base's unchanged names).

        Raises:
            InternalError: the inputs are not what rule 1 says.
        """
        folded = set(self.options.values)  # type: ignore[attr-defined]
        expected = [s.name for s in before.inputs if s.name not in folded]
        if [s.name for s in result.artifact.inputs] != expected:
            raise InternalError(f"pass {self.name!r} left inputs {[s.name for s in result.artifact.inputs]}, expected {expected}")

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        from edgec.compiler.input_values import value_arrays

        values: dict[str, int | float] = self.options.values  # type: ignore[attr-defined]
        arrays = value_arrays(artifact.inputs, values)
        model = onnx_utils.load_model(artifact.path)
        _fold(model, arrays)
        out = onnx_utils.save_artifact(model, ctx.work_dir)
        return PassResult(out, True, {"folded": {k: arrays[k].tolist() for k in sorted(arrays)}})


def _fold(model: Any, arrays: dict[str, Any]) -> None:
    """Rule 1 in place.

    Raises:
        ConfigError: a name is not a graph input.
    """
    from onnx import numpy_helper

    names = {v.name for v in model.graph.input}
    missing = sorted(set(arrays) - names)
    if missing:
        raise ConfigError(f"--input-value names {', '.join(map(repr, missing))}, which the graph does not take as inputs")
    kept = [v for v in model.graph.input if v.name not in arrays]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(numpy_helper.from_array(arrays[k], k) for k in sorted(arrays))
