"""What the exact ONNX rewrite passes share (``fuse_gelu``, ``split_reduce_l2``, ``expand_activations``); not a pass itself."""

from __future__ import annotations

import shutil
from dataclasses import replace

from edgec.compiler.passes.base import PassContext
from edgec.core.types import ModelArtifact

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The domain names of the standard ONNX operators."""


def unchanged(artifact: ModelArtifact, ctx: PassContext) -> ModelArtifact:
    """The input, byte for byte, as the pass's output (same digest: the pass changed nothing)."""
    path = ctx.work_dir / "model.onnx"
    shutil.copyfile(artifact.path, path)
    return replace(artifact, path=path)
