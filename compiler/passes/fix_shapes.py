"""Fix dynamic input dimensions to the sizes given with ``--input NAME:1x3x32x32``.

Rules:
1. Only named inputs change; a fixed dim that disagrees with the requested size is an error.
2. Intermediate shape annotations are dropped and re-inferred, so no stale symbolic dims remain.
"""

from __future__ import annotations

from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import ConfigError, require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils


class FixShapesOptions(PassOptions):
    shapes: dict[str, tuple[int, ...]]


class FixShapes(Pass):
    """Set input dims to fixed sizes and re-run shape inference."""

    name = "fix_shapes"
    Options = FixShapesOptions

    def requires(self, artifact: ModelArtifact, ctx: PassContext) -> None:
        super().requires(artifact, ctx)
        names = [s.name for s in artifact.inputs]
        for name, dims in self.options.shapes.items():  # type: ignore[attr-defined]
            if name not in names:
                raise ConfigError(f"--input names {name!r}, which is not a model input; inputs are {', '.join(names)}")
            spec = artifact.input(name)
            if not spec.accepts_shape(tuple(dims)):
                raise ConfigError(f"--input {name}:{'x'.join(map(str, dims))} does not fit the model's shape {list(spec.shape)}")

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        onnx = require("onnx", "onnx", "fixing input shapes")
        model = onnx_utils.load_model(artifact.path)
        shapes: dict[str, tuple[int, ...]] = self.options.shapes  # type: ignore[attr-defined]
        for value in model.graph.input:
            if value.name in shapes:
                for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                    dim.ClearField("dim_param")
                    dim.dim_value = size
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        out = onnx_utils.save_artifact(model, ctx.work_dir)
        return PassResult(out, out.digest != artifact.digest, {"fixed": {k: list(v) for k, v in shapes.items()}})
