"""Graph clean-up with onnxslim: constant folding, dead-node removal, fusion of trivial patterns.

Rules:
1. The model's inputs and outputs keep their names, shapes and dtypes.
2. The pass is skipped (``modified=False``) when onnxslim changes nothing.
"""

from __future__ import annotations

from edgec.compiler.passes.base import Pass, PassContext, PassResult
from edgec.core.errors import require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


class Simplify(Pass):
    """Clean the graph with onnxslim."""

    name = "simplify"

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        onnxslim = require("onnxslim", "onnx", "graph clean-up")
        model = onnx_utils.load_model(artifact.path)
        before = len(model.graph.node)
        slim = onnxslim.slim(model)
        after = len(slim.graph.node)
        out = onnx_utils.save_artifact(slim, ctx.work_dir)
        return PassResult(out, out.digest != artifact.digest, {"nodes_before": before, "nodes_after": after})
