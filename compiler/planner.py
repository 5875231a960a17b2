"""The planner: which conversion and clean-up passes bring a source artifact to a target's route."""

from __future__ import annotations

from typing import Any

from edgec.compiler import dynamic_dims
from edgec.compiler.config import BuildConfig
from edgec.core.errors import UnsupportedError
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2, ModelArtifact
from edgec.frameworks.tf_utils import FORMAT_KERAS, FORMAT_SAVEDMODEL

PassStep = tuple[str, dict[str, Any]]

FORMAT_SOURCES = {
    "onnx": "an .onnx file",
    "pt2": "a PyTorch factory (file.py:function) or a torch.export .pt2 file",
    "savedmodel": "a TensorFlow SavedModel directory",
    "keras": "a Keras .keras or .h5 file",
}
"""What a user gives edgec to get a model in each format (for error messages)."""

CONVERSIONS: dict[tuple[str, str], str] = {(FORMAT_PT2, FORMAT_ONNX): "export_onnx",
                                           (FORMAT_SAVEDMODEL, FORMAT_ONNX): "tf2onnx", (FORMAT_KERAS, FORMAT_ONNX): "tf2onnx"}
"""(from format, to format) -> converting pass. A target that takes a format directly lists it before ``onnx`` in
its routes (openvino, tflite take TensorFlow models themselves; onnx and tensorrt get them through tf2onnx)."""


def conversion_steps(source_format: str, routes: tuple[str, ...], target: str,
                     needs_onnx: bool = False) -> tuple[str, list[PassStep]]:
    """The route format chosen for the target and the conversion passes to reach it.

    Args:
        needs_onnx: an ONNX-only step was asked for (``--input``): take the ONNX route where the target has one.

    Raises:
        UnsupportedError: no route from the source format to the target.
    """
    if needs_onnx and FORMAT_ONNX in routes:
        routes = (FORMAT_ONNX,)
    elif needs_onnx and source_format != FORMAT_ONNX:  # an ONNX source the target cannot take at all: said below
        raise UnsupportedError(f"--input fixes dims on the ONNX route, which the {target} target does not take; "
                               "fix the shapes in the source model (e.g. the factory's example inputs)")
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


def graph_shapes(config: BuildConfig) -> dict[str, tuple[int, ...]]:
    """The ``--input`` sizes written into the graph: none for a target that keeps dynamic shapes
    (``Target.dynamic_shapes``), else the inputs given as sizes (see :mod:`edgec.compiler.dynamic_dims`)."""
    from edgec.targets.base import target_class

    return dynamic_dims.graph_shapes(config.input_shapes, target_class(config.target).dynamic_shapes)


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


def upgrade_steps(source: ModelArtifact, route: str) -> list[PassStep]:
    """For an ONNX source on the ONNX route: ``upgrade_opset`` when the model is older than opset 13 or keeps
    weights in ``Constant`` nodes (see :mod:`edgec.compiler.passes.upgrade_opset`); nothing otherwise."""
    if source.format != FORMAT_ONNX or route != FORMAT_ONNX:
        return []
    from edgec.compiler.passes.upgrade_opset import needs_upgrade

    return [("upgrade_opset", {})] if needs_upgrade(source.path) else []


def float_steps(config: BuildConfig, route: str, onnx_rewrites: tuple[str, ...] = ()) -> list[PassStep]:
    """Passes run on the float model before any precision change: clean-up, then the target's rewrites.

    Args:
        onnx_rewrites: the passes the target's converter needs on its ONNX route (``Target.onnx_rewrites``);
            run last, on that route only, so that the clean-up cannot undo them.
    """
    if config.fold_input_values and route != FORMAT_ONNX:
        raise UnsupportedError(f"--fold-input-values rewrites the ONNX graph, and this build takes the {route} route; "
                               "give the values with --input-value alone (the bundle then takes those inputs)")
    if route != FORMAT_ONNX:
        return []
    steps: list[PassStep] = []
    if config.fold_input_values:
        steps.append(("fold_inputs", {"values": dict(config.input_values)}))
    shapes = graph_shapes(config)
    if shapes:
        steps.append(("fix_shapes", {"shapes": {k: list(v) for k, v in shapes.items()}}))
    if config.simplify:
        steps.append(("simplify", {}))
    return steps + [(name, {}) for name in onnx_rewrites]
