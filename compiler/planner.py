"""The planner: which conversion and clean-up passes bring a source artifact to a target's route."""

from __future__ import annotations

from typing import Any

from edgec.compiler.config import BuildConfig
from edgec.core.errors import UnsupportedError
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2

PassStep = tuple[str, dict[str, Any]]

FORMAT_SOURCES = {
    "onnx": "an .onnx file",
    "pt2": "a PyTorch factory (file.py:function) or a torch.export .pt2 file",
    "savedmodel": "a TensorFlow SavedModel directory",
    "keras": "a Keras .keras file",
}
"""What a user gives edgec to get a model in each format (for error messages)."""

CONVERSIONS: dict[tuple[str, str], str] = {(FORMAT_PT2, FORMAT_ONNX): "export_onnx"}
"""(from format, to format) -> converting pass."""


def conversion_steps(source_format: str, routes: tuple[str, ...], target: str,
                     needs_onnx: bool = False) -> tuple[str, list[PassStep]]:
    """The route format chosen for the target and the conversion passes to reach it.

    Args:
        needs_onnx: an ONNX-only step was asked for (``--input``): take the ONNX route where the target has one.

    Raises:
        UnsupportedError: no route from the source format to the target.
    """
    if needs_onnx:
        if FORMAT_ONNX not in routes:
            raise UnsupportedError(f"--input fixes dims on the ONNX route, which the {target} target does not take; "
                                   "fix the shapes in the source model (e.g. the factory's example inputs)")
        routes = (FORMAT_ONNX,)
    for route in routes:
        if route == source_format:
            return route, []
        step = CONVERSIONS.get((source_format, route))
        if step:
            return route, [(step, {})]
    raise UnsupportedError(
        f"the {target} target cannot take a {source_format} model (no conversion to {', '.join(routes)}); "
        f"give it {'; or '.join(FORMAT_SOURCES.get(r, r) for r in routes)}"
    )


def prune_steps(config: BuildConfig, source_format: str) -> list[PassStep]:
    """Pruning passes, run on the PyTorch program before any conversion.

    Raises:
        UnsupportedError: pruning was asked for a source that is not PyTorch.
    """
    if config.prune is None:
        return []
    if source_format != FORMAT_PT2:
        raise UnsupportedError(f"--prune needs a PyTorch source (.pt2 or module:factory), not {source_format}")
    from edgec.compiler.passes._torch_edit import finetune_options

    return [(f"prune_{config.prune_mode}", {"ratio": config.prune, **finetune_options(config.finetune)})]


def float_steps(config: BuildConfig, route: str) -> list[PassStep]:
    """Clean-up passes run on the float model before any precision change."""
    if route != FORMAT_ONNX:
        return []
    steps: list[PassStep] = []
    if config.input_shapes:
        steps.append(("fix_shapes", {"shapes": {k: list(v) for k, v in config.input_shapes.items()}}))
    if config.simplify:
        steps.append(("simplify", {}))
    return steps
