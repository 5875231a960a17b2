"""``onnx`` target: an ONNX model for onnxruntime (cloud and edge servers), fp32, fp16 or int8.

INT8 modes:
- ``static``: QDQ with per-channel int8 weights and uint8 activations calibrated on ``--calib``.
- ``dynamic``: per-channel int8 weights, activations quantized at run time; no calibration needed.
- ``auto`` (default): static for convolutional models when calibration data is given (as many Conv as
  MatMul/Gemm nodes, or as many Conv weights: magika's one large Conv and two MatMuls, static 0.27x size and
  0.16x time on one thread, dynamic 0.88x and 0.99x, top-1 1.000 both); dynamic for models dominated by MatMul (transformers), whose
  activations have outliers that static per-tensor ranges cannot hold (MiniLM: cosine 0.94 static vs 0.993
  dynamic, measured), and when no calibration data is given.

Which ops each mode quantizes (``--target-option quantize_ops``):
- ``default``: static INT8 quantizes onnxruntime's default list less :data:`STATIC_FLOAT_OPS` (elementwise
  ``Add`` and ``Mul``; the pass's stats list them under ``float_op_types``) and less the activations and moves
  whose outputs only float ops read (:func:`float_readers_only`; the pass's ``nodes_to_exclude``); dynamic INT8
  quantizes :data:`DYNAMIC_OPS` (no ``Conv``, no ``LSTM``).
- ``compute``: Conv, ConvTranspose, Gemm and MatMul only (dynamic INT8 then quantizes Conv as ``ConvInteger``).
- ``onnxruntime``: onnxruntime's own default lists (static: also Add and Mul; dynamic: also Conv, LSTM...).

LSTMs (``--target-option recurrent``): onnxruntime's static quantizer has no LSTM and :data:`DYNAMIC_OPS` leaves
it out, so Resemblyzer's INT8 (three LSTMs, one Gemm) was 0.97x its FP32 size. ``auto`` (default): after either
INT8 pass each LSTM becomes onnxruntime's contrib ``DynamicQuantizeLSTM`` (int8 weights, input and hidden state
quantized at run time) unless quantizing it alone takes the outputs' mean cosine on the calibration set under
0.995 (:mod:`edgec.compiler.passes._recurrent_int8`); without calibration data they stay float. Resemblyzer on the
zoo: 0.42x size, 0.52x time, cosine 0.9992 mean / 0.9964 worst (0.9999 / 0.9998 with float LSTMs), its first LSTM
float; 0.78 with all three quantized. ``float``: every LSTM
float. ``int8``: every LSTM quantized, unchecked. The INT8 pass's stats list them under ``recurrent``. ``GRU`` and
``RNN`` stay float (onnxruntime has no quantized kernel for them).
"""

from __future__ import annotations

import math
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Literal

from edgec.core.errors import UnsupportedError
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.frameworks import fidelity, onnx_utils
from edgec.targets import _calibration_reuse as _onnx_reuse
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
    model = onnx_utils.load_model(artifact.path)
    ops = onnx_utils.op_counts(model)
    convs = ops.get("Conv", 0) + ops.get("ConvTranspose", 0)
    matmuls = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    if convs >= matmuls:
        return "static"
    conv_weights, matmul_weights = weight_sizes(model, ("Conv", "ConvTranspose")), weight_sizes(model, ("MatMul", "Gemm"))
    return "static" if conv_weights >= matmul_weights else "dynamic"


def weight_sizes(model: Any, op_types: tuple[str, ...]) -> int:
    """How many weights (initializer elements read as the second input) the nodes of ``op_types`` hold."""
    sizes = {init.name: math.prod(init.dims) for init in model.graph.initializer}
    return sum(sizes.get(node.input[1], 0) for node in model.graph.node if node.op_type in op_types and len(node.input) > 1)


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
STATIC_FLOAT_OPS = ("Add", "Mul")
"""Op types of onnxruntime's default static list that static INT8 leaves float by default. Measured on the zoo
(``benchmarks/zoo``, one op type left out of onnxruntime's list, or added to ``compute``, at a time): quantized
``Add`` and ``Mul`` (decomposed LayerNorm, HardSwish, residuals and scales of SVTR blocks) take PP-OCRv4's
recognizer to 0.90 character accuracy (cosine 0.897: collapsed), 0.94 (cosine 0.947) without them; leaving out
either alone changes nothing (both quantize the same tensors), adding either to ``compute`` costs 0.06-0.08.
PP-OCRv4's detector goes from 0.91 to 0.95 map IoU; latency is unchanged on the demo CNN (same graph), YOLOv8n
and the detector (within 3%)."""
DYNAMIC_OPS = ("MatMul", "Gemm", "Gather")
"""What dynamic INT8 quantizes by default: onnxruntime runs a dynamic Conv as ``ConvInteger``, 3.9-12.8x slower
than FP32 on six models at one thread (``benchmarks/int8_dynamic_conv.py``); convolutions want static INT8. A dynamic ``LSTM``
(``DynamicQuantizeLSTM``) is 3.6x faster on Resemblyzer but its embedding cosine to FP32 falls to 0.78: the
``recurrent`` option quantizes the LSTMs that keep the outputs instead (see the module docstring)."""


class OnnxOptions(TargetOptions):
    """Options of the onnx target (unknown keys rejected)."""

    quantize_ops: Literal["default", "compute", "onnxruntime"] = option(
        "default", "INT8 op set: default (static: onnxruntime's list less Add and Mul, and less activations only "
        "float ops read; dynamic: MatMul, Gemm, Gather), compute (Conv, ConvTranspose, Gemm, MatMul only; dynamic "
        "Conv runs as the slow ConvInteger) or onnxruntime (its own default lists, as edgec used before)")
    recurrent: Literal["auto", "float", "int8"] = option(
        "auto", "LSTMs in INT8 as onnxruntime's DynamicQuantizeLSTM: auto (each LSTM whose quantization alone keeps the "
        "outputs' cosine >= 0.995 on the calibration set; float without one), float, int8 (all, unchecked)")


def float_readers_only(model: Any, quantized: set[str]) -> list[str]:
    """Named nodes of a quantized non-compute type (an activation, a move) whose every output is read only by ops
    that stay float, by If/Loop/Scan bodies or as a graph output: a Q/DQ there adds error and speeds up nothing.

    Measured on silero-vad (16 kHz, folded): quantizing the encoder's last Relu, whose output only a ``Shape`` and
    the float LSTM inside an ``If`` read, takes its speech decisions to 0.77 agreement with FP32 (1.00 kept float).
    """
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
        for sub in subgraphs_of(node):
            for inner in sub.node:
                for name in inner.input:
                    readers.setdefault(name, set()).add(node.op_type)
    for out in model.graph.output:
        readers.setdefault(out.name, set()).add("")
    return [n.name for n in model.graph.node if n.name and n.op_type in quantized and n.op_type not in COMPUTE_OPS
            and all(readers.get(o) and not readers[o] & quantized for o in n.output if o)]


def subgraphs_of(node: Any) -> list[Any]:
    """The graphs in ``node``'s attributes (an If's branches, a Loop's body), nested ones included."""
    found = []
    for attribute in node.attribute:
        for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            found.append(sub)
            found.extend(g for inner in sub.node for g in subgraphs_of(inner))
    return found


def int8_ops(choice: str, static: bool) -> dict[str, list[str]]:
    """The INT8 pass options that pick its op types for ``quantize_ops=choice`` (see the module docstring)."""
    if choice == "compute":
        return {"op_types": list(COMPUTE_OPS)}
    if choice == "onnxruntime":
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        return {} if static else {"op_types": sorted(IntegerOpsRegistry)}
    return {"float_op_types": list(STATIC_FLOAT_OPS)} if static else {"op_types": list(DYNAMIC_OPS)}


def recurrent_options(choice: str) -> dict[str, Any]:
    """The INT8 pass's LSTM options for ``recurrent=choice`` (see the module docstring)."""
    if choice == "float":
        return {}
    return {"recurrent": "dynamic", **({"recurrent_min_cosine": None} if choice == "int8" else {})}


def dynamic_recurrent(ops: dict[str, list[str]], choice: str) -> dict[str, list[str]]:
    """The dynamic pass's op types less ``LSTM`` for ``recurrent=float`` (``quantize_ops=onnxruntime`` lists it)."""
    return {**ops, "op_types": [op for op in ops["op_types"] if op != "LSTM"]} if choice == "float" else ops


def static_default_excludes(path: Path, exclude: tuple[str, ...]) -> dict[str, list[str]]:
    """``nodes_to_exclude`` for default static INT8: ``exclude`` and :func:`float_readers_only`'s nodes."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    quantized = (set(QDQRegistry) | set(QLinearOpsRegistry)) - set(STATIC_FLOAT_OPS)
    nodes = [*exclude, *(n for n in float_readers_only(onnx_utils.load_model(path), quantized) if n not in exclude)]
    return {"nodes_to_exclude": nodes} if nodes else {}


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

    def searched_variants(self, request: PrecisionRequest, artifact: ModelArtifact) -> tuple[tuple[str, TargetOptions], ...]:
        """For static INT8 whose ``quantize_ops`` the user did not set: the build's list, then ``onnxruntime``
        (more ops in INT8) and ``compute`` (fewest), each a whole model ``--max-drop`` may ship with every layer
        quantized (issue 19: no one list suits every model, see the module docstring)."""
        options = request.options_as(OnnxOptions)
        if "quantize_ops" in options.model_fields_set or not self.searched_methods(request, artifact):
            return ()
        order = (options.quantize_ops, *(c for c in ("onnxruntime", "compute") if c != options.quantize_ops))
        return tuple((f"quantize_ops={c}", options.model_copy(update={"quantize_ops": c})) for c in order)

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        if request.precision != "int8":
            return self.float_passes(request)
        exclude = self.exclude_options(request)
        options = request.options_as(OnnxOptions)
        choice = options.quantize_ops
        if choose_int8_mode(request, artifact) == "static":
            method = request.calibration.method if request.calibration else "minmax"
            if choice == "default":
                exclude = static_default_excludes(artifact.path, request.exclude)
            recurrent = recurrent_options(options.recurrent)
            return [("quantize_static", {"method": method, **int8_ops(choice, True), **recurrent, **exclude})]
        ops, recurrent = dynamic_recurrent(int8_ops(choice, False), options.recurrent), recurrent_options(options.recurrent)
        return [("quantize_dynamic", {**ops, **recurrent, **exclude})]

    def reuse(self) -> AbstractContextManager[Any]:
        """A scope whose static INT8 builds share onnxruntime's calibration ranges per model file, calibration set,
        method and options: a ``--max-drop`` search calibrates once per method, not once per candidate and
        ``quantize_ops`` list (:mod:`edgec.targets._calibration_reuse`)."""
        return _onnx_reuse.sharing()

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        shutil.copyfile(artifact.path, bundle_dir / MODEL_FILE)
        return ExportResult(MODEL_FILE, (MODEL_FILE,), artifact.inputs, artifact.outputs, {"runtime": "onnxruntime"})
