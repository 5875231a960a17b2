"""``onnx`` target: an ONNX model for onnxruntime (cloud and edge servers), fp32, fp16 or int8.

INT8 modes:
- ``static``: QDQ with per-channel int8 weights and uint8 activations calibrated on ``--calib``.
- ``dynamic``: per-channel int8 weights, activations quantized at run time; no calibration needed.
- ``auto`` (default): static for convolutional models when calibration data is given; dynamic for
  models dominated by MatMul (transformers), whose activations have outliers that static per-tensor
  ranges cannot hold (MiniLM: cosine 0.94 static vs 0.993 dynamic, measured), and when no
  calibration data is given.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar, Literal

from edgec.core.errors import UnsupportedError
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.frameworks import fidelity, onnx_utils
from edgec.targets.base import ExportResult, Feed, LayerTools, PassStep, PrecisionRequest, Target
from edgec.targets.options import TargetOptions, option

MODEL_FILE = "model.onnx"
ORT_CALIBRATION_METHODS = ("minmax", "percentile")
"""The calibration methods that give onnxruntime's static INT8 different models, tried by ``--max-drop``:
``entropy`` is left out because ``quantize_static`` fixes its histogram at 128 bins for 128 quantized bins,
so the KL search has one threshold, the full range: measured equal to ``minmax`` to 4 decimals on three models."""


def choose_int8_mode(request: PrecisionRequest, artifact: ModelArtifact) -> str:
    """Resolve ``auto`` to ``static`` or ``dynamic`` (see the module docstring)."""
    if request.int8_mode != "auto":
        return request.int8_mode
    if request.calibration is None:
        return "dynamic"
    ops = onnx_utils.op_counts(onnx_utils.load_model(artifact.path))
    convs = ops.get("Conv", 0) + ops.get("ConvTranspose", 0)
    matmuls = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    return "static" if convs >= matmuls else "dynamic"


class OnnxLayers(LayerTools):
    """What targets whose precision comes from ONNX passes share: the fp32/fp16 passes, and per-layer tools
    (intermediate tensors made graph outputs; onnxruntime's ``nodes_to_exclude`` keeps nodes in float)."""

    name: ClassVar[str]

    def float_passes(self, request: PrecisionRequest) -> list[PassStep]:
        """Passes for fp32 (none) and fp16.

        Raises:
            UnsupportedError: any other precision but int8, which each target handles itself.
        """
        if request.precision == "fp32":
            return []
        if request.precision == "fp16":
            return [("quantize_fp16", {})]
        raise UnsupportedError(f"the {self.name} target has no precision {request.precision!r}")

    @staticmethod
    def exclude_options(request: PrecisionRequest) -> dict[str, list[str]]:
        """The INT8 pass options that keep ``request.exclude`` in float (mixed precision, ``--max-drop``)."""
        return {"nodes_to_exclude": list(request.exclude)} if request.exclude else {}

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[fidelity.LayerDivergence]:
        return fidelity.layer_divergence(reference, candidate, feeds)

    def float_group(self, reference: Path, layer: str, ranked: list[fidelity.LayerDivergence]) -> list[str]:
        """The layer and the layers producing its input activations: onnxruntime quantizes a tensor when its
        producer or any consumer is quantized, so the activation a float layer reads needs a float producer."""
        model = onnx_utils.load_model(reference)
        return [layer, *fidelity.input_layers(model, fidelity.layer_names(model), layer)]

    def float_nodes(self, reference: Path, layers: list[str], ranked: list[fidelity.LayerDivergence]) -> tuple[str, ...]:
        """Every node of the layers (a Conv and its fused Relu), whether or not its output could be compared."""
        names = fidelity.layer_names(onnx_utils.load_model(reference))
        return tuple(node for node, layer in names.items() if layer in layers)


COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""What ``quantize_ops=compute`` quantizes: the ops that carry the weights and the arithmetic."""


class OnnxOptions(TargetOptions):
    """Options of the onnx target (unknown keys rejected)."""

    quantize_ops: Literal["default", "compute"] = option(
        "default", "static INT8 op set: default (onnxruntime's list, which also quantizes pooling, Add, Mul, "
        "Concat, Softmax...) or compute (Conv, ConvTranspose, Gemm, MatMul only; safer on detectors, recognizers "
        "and models with arithmetic front ends)")


class OnnxTarget(OnnxLayers, Target):
    """onnxruntime bundles."""

    name = "onnx"
    extra = "onnx"
    sparsity_gain = "size after compression"
    color = "#1f77b4"
    routes = (FORMAT_ONNX,)
    precisions = ("fp32", "fp16", "int8")
    modules = ("onnx", "onnxruntime", "onnxslim")
    runtime_modules = ("onnxruntime",)
    packages = ("onnx", "onnxruntime", "onnxslim")
    precision_notes = {"fp16": "halves storage; on CPU onnxruntime computes in fp32 plus casts: 1.04-1.22x fp32 latency "
                               "(measured); int8 is the CPU speed-up"}
    Options = OnnxOptions
    dynamic_shapes = True
    calibration_methods = ORT_CALIBRATION_METHODS
    collapse_hint = "--target-option quantize_ops=compute (Conv, Gemm and MatMul only)"

    def searched_methods(self, request: PrecisionRequest, artifact: ModelArtifact) -> tuple[str, ...]:
        """All three for static INT8; none when ``auto`` resolves to dynamic (see :func:`choose_int8_mode`)."""
        methods = super().searched_methods(request, artifact)
        return methods if methods and choose_int8_mode(request, artifact) == "static" else ()

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        if request.precision != "int8":
            return self.float_passes(request)
        exclude = self.exclude_options(request)
        if choose_int8_mode(request, artifact) == "static":
            method = request.calibration.method if request.calibration else "minmax"
            ops = {"op_types": list(COMPUTE_OPS)} if request.options_as(OnnxOptions).quantize_ops == "compute" else {}
            return [("quantize_static", {"method": method, **ops, **exclude})]
        return [("quantize_dynamic", exclude)]

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        shutil.copyfile(artifact.path, bundle_dir / MODEL_FILE)
        return ExportResult(MODEL_FILE, (MODEL_FILE,), artifact.inputs, artifact.outputs, {"runtime": "onnxruntime"})
