"""What the exact ONNX rewrite passes share (``fuse_gelu``, ``split_reduce_l2``, ``expand_activations``); not a pass itself."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

from edgec.compiler.passes.base import PassContext
from edgec.core.types import ModelArtifact

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The domain names of the standard ONNX operators."""


def unchanged(artifact: ModelArtifact, ctx: PassContext) -> ModelArtifact:
    """The input, byte for byte, as the pass's output (same digest: the pass changed nothing)."""
    path = ctx.work_dir / "model.onnx"
    shutil.copyfile(artifact.path, path)
    return replace(artifact, path=path)


class GraphIndex:
    """One ONNX graph indexed by value: constants (initializers and ``Constant`` nodes), producers, consumers and
    graph outputs."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                            if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"})
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
