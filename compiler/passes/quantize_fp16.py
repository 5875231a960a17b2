"""FP16: weights and activations in float16, model inputs and outputs kept float32.

Uses onnxruntime's ``convert_float_to_float16``; ops without float16 kernels on a runtime are
wrapped in casts by that runtime (onnxruntime's CPU provider does so itself).
"""

from __future__ import annotations

from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


class Fp16Options(PassOptions):
    keep_io_types: bool = True
    """Keep float32 model inputs/outputs so callers feed the same arrays as for fp32."""


class QuantizeFp16(Pass):
    """Convert float32 weights and activations to float16."""

    name = "quantize_fp16"
    Options = Fp16Options

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        float16 = require("onnxruntime.transformers.float16", "onnx", "FP16 conversion")
        model = onnx_utils.load_model(artifact.path)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=self.options.keep_io_types, disable_shape_infer=False  # type: ignore[attr-defined]
        )
        onnx_utils.sort_nodes(converted)  # the converter appends input casts at the end of the node list
        out = onnx_utils.save_artifact(converted, ctx.work_dir)
        return PassResult(out, True, {"size_before": artifact.path.stat().st_size, "size_after": out.path.stat().st_size})
