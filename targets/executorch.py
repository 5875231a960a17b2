"""``executorch`` target: a ``model.pte`` program for ExecuTorch, PyTorch's own runtime for iOS, Android and
embedded devices.

Route: PyTorch sources only (a ``.pt2`` or a factory): the ``torch.export`` program is lowered with
``executorch.exir.to_edge_transform_and_lower`` and the backend's partitioner, then serialized with
``to_executorch()``. ONNX and TensorFlow sources are refused by the planner with one line naming what works.

Backends (``--target-option backend=``): ``xnnpack`` (default; CPU, the one this host runs), ``coreml``
(Apple; fp32 or fp16 compute precision), ``vulkan`` (Android GPUs; fp32 or an fp16 program) and ``qnn``
(Qualcomm HTP in fp16; needs the QNN SDK, ``QNN_SDK_ROOT``). Operators the backend does not take run on
ExecuTorch's portable kernels; ``target_details.operators`` counts both by op name. Parity is measured for
xnnpack bundles; the others are recorded as not measured here (their runtimes are on devices).

Precisions:
- ``fp32``: the program as exported.
- ``fp16``: parameters and float inputs cast to float16 inside the program (inputs and outputs stay
  float32 at the bundle's interface); XNNPACK runs its fp16 kernels (not GELU: portable kernels run it).
  ExecuTorch 1.5.1's XNNPACK stores convolution weights as fp32 even then (it converts them when the
  program loads), so fp16 halves linear weights only (MiniLM 0.50x, the digits CNNs 1.00x the fp32 size).
  Layer norms run in fp32 between casts: ExecuTorch's portable fp16 layer norm is off by whole units and
  gives NaN on MiniLM (measured). coreml and qnn take fp16 as their compiler's compute precision instead.
- ``int8`` ``static``: PT2E with ``XNNPACKQuantizer`` (symmetric, per-channel int8 weights, per-tensor int8
  activations; ``prepare_pt2e`` / ``convert_pt2e`` from torchao) calibrated on the build's calibration set.
  Activation ranges: ``minmax`` -> ``MinMaxObserver``; ``percentile`` and ``entropy`` -> XNNPACK's default
  ``HistogramObserver`` (the range that minimises the L2 quantization error; there is no percentile observer).
- ``int8`` ``dynamic``: per-channel int8 weights of linear layers, activations quantized at run time (the
  choice for transformers, whose activations have outliers); no data needed.
- ``int8`` ``auto``: as the onnx target decides: ``dynamic`` without calibration data or when matmuls and
  linear layers outnumber convolutions, ``static`` otherwise.
- Recurrent ops (``aten.lstm``, ``gru``, ``rnn_*``) stay float in INT8: ``XNNPACKQuantizer`` does not annotate
  them (``target_details.quantization.kept_float_ops`` counts them). A program in which nothing was quantized (an
  LSTM and no linear or convolution) is refused with one line naming the onnx target's ``DynamicQuantizeLSTM``,
  as the onnx target refuses a dynamic INT8 with nothing to quantize (exit 4), rather than called int8.

Recurrent ops: ExecuTorch unrolls an LSTM into one XNNPACK delegate per step and layer, and lowering time grows
faster than the steps (Resemblyzer, 3 layers over 160 steps: over 900 s). For backend=xnnpack an LSTM becomes
one ``scan`` loop per layer and direction whose body is one XNNPACK delegate (``target_details.rewrites
.lstm_as_loop``; Resemblyzer's fp32 and int8 build in 90-130 s together); a GRU or RNN that would unroll for
xnnpack into more than 64 cells is refused before lowering. Core ML keeps an LSTM whole. See
:mod:`edgec.targets._executorch_recurrent`.

Dynamic dims: ExecuTorch plans every buffer outside the delegates (inputs, outputs, tensors of portable ops)
for a dim's upper bound (``target_details.planned_inputs``; the runner refuses larger feeds) and a device
allocates that plan when the program loads; XNNPACK sizes its own workspace for each call's real shapes. ``--target-option
max_dim=N`` caps every dynamic dim, ``max_dim=batch=1,seq=128`` caps them by the source's dim names (a dim
capped to its lower bound becomes static); a plan over :data:`MAX_PLANNED_BYTES` is refused, naming the
option. torch 2.13's fake convolution narrows a batch dim to ``<= 15`` while ExecuTorch re-traces (it guards
on the example size to pick a conv backend; measured), so lowering runs with dims unhinted there
(:func:`_bounds_kept`) and the planned bounds are checked against the program's.

The manifest's ``target_details``: ``operators`` (``delegated`` to the backend and ``portable``, counted by
op name), ``delegates`` (delegate calls per backend), ``planned_memory_bytes`` (the memory plan's buffers:
what the runtime allocates for tensors outside the delegates, not XNNPACK's own workspace),
``planned_inputs``, and ``quantization`` for int8.

The input and output names are stored in the program (constant method ``edgec_io``, see
:mod:`edgec.runtime_shims.executorch`), so a device needs only the ``.pte``; the torch-free
``executorch-numpy-runtime`` (Python >= 3.12, numpy only) runs the xnnpack bundles too. Rebuilds are
byte-identical for the xnnpack and vulkan backends (Core ML's backend names its models with random UUIDs).
Per-layer tools (``--report-layers``, ``--max-drop``): layers are the torch model's modules (``conv3``,
``encoder.layer.0.attention.self.query``), compared in the torch programs that were lowered (the PT2E-converted
graph, its quantization simulated in float32, against the float graph; a ``.pte`` exposes no intermediate
tensors) and kept in float with the quantizer's per-module config; see :mod:`edgec.targets._executorch_layers`.
``--max-drop`` measures each candidate with the ``.pte`` itself. ``edgec debug`` of a finished bundle is not
offered: the torch programs are known only while the build runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from edgec.core.errors import (
    CalibrationError,
    EdgecError,
    ExportError,
    MissingDependencyError,
    UnsupportedError,
    brief,
    raise_if_bug,
)
from edgec.core.installed import lookup, require_installed
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.frameworks.fidelity import LayerDivergence, NodeInfo
from edgec.runtime_shims.executorch import IO_METHOD, captured_native_stderr, quiet_python_logs
from edgec.targets import _executorch_layers
from edgec.targets._executorch_layers import LayerMemo, Lowered
from edgec.targets._executorch_program import (
    Dim,
    apply_precision,
    decompose_prelu,
    dim_bounds,
    op_counts,
    op_name,
    symbol_caps,
)
from edgec.targets._executorch_recurrent import check_unrolled, scan_partitioner
from edgec.targets.base import ExportResult, Feed, LayerTools, PassStep, PrecisionRequest, Target
from edgec.targets.options import TargetOptions, option

MODEL_FILE = "model.pte"
BACKENDS = ("xnnpack", "coreml", "vulkan", "qnn")
BACKEND_PRECISIONS = {"xnnpack": ("fp32", "fp16", "int8"), "coreml": ("fp32", "fp16"), "vulkan": ("fp32", "fp16"),
                      "qnn": ("fp16",)}
"""What each backend builds here. INT8 for coreml, vulkan and qnn needs their own quantizers (not wired)."""
BACKEND_PACKAGES = {"xnnpack": (), "coreml": ("coremltools",), "vulkan": (), "qnn": ()}
MAX_PLANNED_BYTES = 1 << 30
"""Refuse programs whose memory plan (for the dims' upper bounds) exceeds 1 GiB: MiniLM with its exported
bounds (batch 4096, sequence 512) would ask a device for gigabytes on load."""


class ExecuTorchOptions(TargetOptions):
    """Options of the executorch target (unknown keys rejected)."""

    backend: Literal["xnnpack", "coreml", "vulkan", "qnn"] = option(
        "xnnpack", "the delegate the program is lowered to: xnnpack (CPU), coreml, vulkan or qnn")
    max_dim: dict[str, int] = option(
        {}, "cap on the planned size of dynamic dims: N for every dim, or NAME=N,... by the source's dim names "
            "(batch=1,seq=128); memory is planned for the upper bound")
    qnn_soc: str = option("SM8650", "Qualcomm SoC for backend=qnn (a QcomChipset name)")

    @field_validator("max_dim", mode="before")
    @classmethod
    def _caps(cls, value: Any) -> Any:
        """``"64"`` -> ``{"*": 64}``; ``"batch=1,seq=128"`` -> ``{"batch": 1, "seq": 128}``; sizes >= 1."""
        if isinstance(value, int):
            value = {"*": value}
        if isinstance(value, str):
            pairs = [p.strip().partition("=") for p in value.split(",") if p.strip()]
            value = {key if sep else "*": size if sep else key for key, sep, size in pairs}
        if isinstance(value, dict):
            try:
                value = {str(k).strip(): int(v) for k, v in value.items()}
            except ValueError:
                raise ValueError("sizes must be whole numbers") from None
            if any(v < 1 for v in value.values()):
                raise ValueError("sizes must be at least 1")
        return value

    def suffix(self) -> str:
        return "" if self.backend == "xnnpack" else f"-{self.backend}"


class QnnSdkMissing(MissingDependencyError):
    """backend=qnn without the Qualcomm SDK (not a Python package, so its own message)."""

    def __init__(self) -> None:
        EdgecError.__init__(self, "backend=qnn needs the Qualcomm AI Engine Direct (QNN) SDK, which is not set up "
                            "(QNN_SDK_ROOT is not set)",
                            hint="install the QNN SDK and set QNN_SDK_ROOT, or use backend=xnnpack")
        self.package, self.extra = "qnn-sdk", "executorch"


class ExecuTorchTarget(Target, LayerTools):
    """ExecuTorch ``.pte`` bundles (options: :class:`ExecuTorchOptions`)."""

    name = "executorch"
    extra = "executorch"
    routes = (FORMAT_PT2,)
    precisions = ("fp32", "fp16", "int8")
    modules = ("torch", "executorch.exir", "torchao")
    """``executorch.exir``: the top-level ``executorch`` is a namespace package (no ``__init__.py``)."""
    runtime_modules = ("executorch.runtime",)
    packages = ("executorch", "torch", "torchao")
    Options = ExecuTorchOptions
    precision_notes = {"fp16": "halves linear weights only (XNNPACK keeps conv weights fp32); on x86 without fp16 "
                               "arithmetic 1.3-1.8x fp32 latency (measured); int8 is the CPU speed-up"}
    sparsity_gain = "size after compression"
    color = "#8c564b"

    def __init__(self) -> None:
        self.backend: str | None = None
        """The backend of the build this instance validated; None for a bundle of unknown backend."""
        self._memo = LayerMemo()
        """The torch programs behind the ``.pte`` files this instance wrote (the per-layer tools run them)."""

    def validate(self, request: PrecisionRequest) -> None:
        """Check the backend/precision combination (and the QNN SDK) before anything is imported.

        Raises:
            UnsupportedError: a precision the backend does not build here.
            MissingDependencyError: backend=qnn without ``QNN_SDK_ROOT``.
        """
        super().validate(request)
        backend = request.options_as(ExecuTorchOptions).backend
        if request.precision not in BACKEND_PRECISIONS[backend]:
            hint = ("backend=xnnpack builds int8 (PT2E with XNNPACKQuantizer)" if request.precision == "int8"
                    else f"--precision {BACKEND_PRECISIONS[backend][0]}")
            raise UnsupportedError(f"the executorch target builds {', '.join(BACKEND_PRECISIONS[backend])} for "
                                   f"backend={backend}, not {request.precision}", hint=hint)
        if backend == "qnn" and not os.environ.get("QNN_SDK_ROOT"):
            raise QnnSdkMissing()
        self.backend = backend

    def check_available(self, route: str | None = None) -> None:
        """Look the packages up without importing them (torchao's import logs warnings).

        Raises:
            MissingDependencyError: naming the first missing package and the ``executorch`` extra.
        """
        backend = self.backend or "xnnpack"
        require_installed((*self.modules, *BACKEND_PACKAGES.get(backend, ())), self.extra,
                          f"the executorch target (backend={backend})")

    def check_runtime(self) -> None:
        """Either ExecuTorch runtime runs the bundles: ``executorch`` or the torch-free numpy one.

        Raises:
            MissingDependencyError: neither is installed.
        """
        if not any(lookup(m).installed for m in ("executorch.runtime", "executorch_numpy_runtime")):
            raise MissingDependencyError("executorch", self.extra, "running executorch bundles")

    def measures_parity(self) -> bool:
        """Only xnnpack programs run on this host. An instance that validated no build (``edgec verify`` of a
        bundle) does not know the backend: parity is then checked where the manifest says it was measured."""
        return self.backend == "xnnpack"

    def precision_passes(self, request: PrecisionRequest, artifact: ModelArtifact) -> list[PassStep]:
        return []  # the precision is applied to the torch program inside export (PT2E, half casts)

    def export(self, artifact: ModelArtifact, bundle_dir: Path, request: PrecisionRequest, work_dir: Path) -> ExportResult:
        if artifact.format != FORMAT_PT2:
            raise UnsupportedError(f"the executorch target takes torch.export programs, not {artifact.format}")
        options = request.options_as(ExecuTorchOptions)
        if request.precision == "int8" and request.int8_mode == "static" and request.calibration is None:
            raise CalibrationError("static INT8 for the executorch target needs calibration data",
                                   hint="give --calib PATH, or --int8-mode dynamic")
        log = io.StringIO()
        with _toolchain_errors(log), _quiet(log):
            from edgec.frameworks.torch_utils import safe_load_pt2

            program = safe_load_pt2(artifact.path)
            caps = symbol_caps(program, artifact, options.max_dim)
            check_unrolled(program.graph_module, options.backend)
            program, details, reduced = apply_precision(program, request, artifact, caps, options.backend)
            buffer, lowered = lower(program, artifact, options, request.precision)
            inputs = fixed_specs(artifact.inputs, dim_bounds(program))
        (bundle_dir / MODEL_FILE).write_bytes(buffer)
        self._memo.remember(buffer, Lowered(artifact, request.precision, reduced))
        details.update(lowered, rewrites={**details.get("rewrites", {}), **lowered.get("rewrites", {})})
        if not details["rewrites"]:
            del details["rewrites"]
        return ExportResult(MODEL_FILE, (MODEL_FILE,), inputs, artifact.outputs, details)

    # ---- per-layer tools (LayerTools; see edgec.targets._executorch_layers)

    def compare_layers(self, reference: Path, candidate: Path, feeds: list[Feed]) -> list[LayerDivergence]:
        """Per-op divergence of the torch program lowered into ``candidate`` from the float program lowered into
        ``reference``, run node by node in torch (a ``.pte`` exposes no intermediate tensors; see
        :mod:`edgec.targets._executorch_layers` for what is compared).

        Raises:
            UnsupportedError: a file this target instance did not build (``edgec debug`` of a bundle).
            ConfigError: not an fp32 reference and a reduced-precision candidate of the same model.
        """
        with _quiet(io.StringIO()):
            return _executorch_layers.compare(self._memo, reference, candidate, feeds)

    def float_group(self, reference: Path, layer: str, ranked: list[LayerDivergence]) -> list[str]:
        """The layer and the layers producing the activations it reads (PT2E quantizes a tensor at its producer)."""
        return _executorch_layers.float_group(self._reference_nodes(reference), layer)

    def float_nodes(self, reference: Path, layers: list[str], ranked: list[LayerDivergence]) -> tuple[str, ...]:
        """The modules' qualified names (``conv3``), or the op names of layers that are no module."""
        nodes = self._reference_nodes(reference)
        graph = self._memo.float_graph(self._memo.lookup(reference))  # loaded by _reference_nodes
        return _executorch_layers.float_names(graph, nodes, layers)

    def _reference_nodes(self, reference: Path) -> list[NodeInfo]:
        with _quiet(io.StringIO()):
            return _executorch_layers.graph_nodes(self._memo.float_graph(self._memo.lookup(reference)))


@contextlib.contextmanager
def _quiet(log: io.StringIO) -> Iterator[None]:
    """Keep the toolchain's chatter (Python logs, progress bars, native stderr) off edgec's output, in ``log``."""
    native: list[str] = []
    try:
        with quiet_python_logs(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            with captured_native_stderr() as native:
                yield
    finally:
        log.write("".join(native))


@contextlib.contextmanager
def _toolchain_errors(log: io.StringIO) -> Iterator[None]:
    """A toolchain failure on the user's model -> one-line :class:`ExportError` with the converter log."""
    try:
        yield
    except EdgecError:
        raise
    except Exception as exc:
        raise_if_bug(exc, "lowering for the executorch target")
        raise ExportError(f"ExecuTorch could not lower the program: {type(exc).__name__}: {brief(exc)}",
                          log=log.getvalue() + f"\n{type(exc).__name__}: {exc}\n") from exc


# ---- lowering


def lower(program: Any, artifact: ModelArtifact, options: ExecuTorchOptions, precision: str) -> tuple[bytes, dict[str, Any]]:
    """Lower to the backend and serialize; the ``.pte`` bytes and the manifest's details.

    Raises:
        ExportError: the planned input shapes are smaller than the program's bounds.
    """
    import torch
    from executorch.exir import to_edge_transform_and_lower

    partitioner, converter = _partitioner(options, precision)
    rewritten = decompose_prelu(program)
    names = json.dumps({"inputs": [s.name for s in artifact.inputs], "outputs": [s.name for s in artifact.outputs]})
    io_names = torch.tensor(list(names.encode("utf-8")), dtype=torch.uint8)
    with _bounds_kept():
        edge = to_edge_transform_and_lower(program, partitioner=[partitioner], constant_methods={IO_METHOD: io_names})
        delegated, portable, delegates = delegation(edge.exported_program().graph_module)
        manager = edge.to_executorch()
    plan = next(p for p in manager.executorch_program.execution_plan if p.name == "forward")
    planned = {s.name: list(plan.values[i].val.sizes) for s, i in zip(artifact.inputs, plan.inputs)}
    memory = int(sum(plan.non_const_buffer_sizes))
    _check_plan(program, planned, memory, artifact)
    return bytes(manager.buffer), {
        "runtime": "executorch", "route": FORMAT_PT2, "backend": options.backend, "converter": converter,
        "operators": {"delegated": delegated, "portable": portable}, "delegates": delegates,
        "planned_memory_bytes": memory, "planned_inputs": planned,
        **({"rewrites": {"prelu_not_4d_decomposed": rewritten}} if rewritten else {}),
    }


def _partitioner(options: ExecuTorchOptions, precision: str) -> tuple[Any, str]:
    """The backend's partitioner and a description of the lowering.

    Raises:
        MissingDependencyError: the backend's partitioner does not import here.
    """
    backend = options.backend
    try:
        if backend == "xnnpack":
            part: Any = scan_partitioner()
        elif backend == "coreml":
            part = _coreml_partitioner(precision)
        elif backend == "vulkan":
            from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

            part = VulkanPartitioner()
        else:
            part = _qnn_partitioner(options.qnn_soc)
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "executorch", "executorch", f"backend={backend} of the executorch target") from exc
    return part, f"executorch.exir.to_edge_transform_and_lower + {type(part).__name__}"


def _coreml_partitioner(precision: str) -> Any:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    specs = CoreMLBackend.generate_compile_specs(compute_precision=compute,
                                                 minimum_deployment_target=ct.target.iOS16)
    return CoreMLPartitioner(compile_specs=specs)


def _qnn_partitioner(soc: str) -> Any:
    from executorch.backends.qualcomm.partition.qnn_partitioner import QnnPartitioner
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
    )

    chip = getattr(QcomChipset, soc, None)
    if chip is None:
        raise UnsupportedError(f"unknown qnn_soc {soc!r}; expected a QcomChipset name such as SM8650")
    spec = generate_qnn_executorch_compiler_spec(soc_model=chip, backend_options=generate_htp_compiler_spec(use_fp16=True))
    return QnnPartitioner(spec)


@contextlib.contextmanager
def _bounds_kept() -> Iterator[None]:
    """Treat dims as unhinted in torch's fake convolution while ExecuTorch re-traces.

    With hints, ``_select_conv_backend`` guards on the example batch (``s < 16``) and the guard narrows the
    dim's range in the program's shape env, so memory is planned for 15 instead of the exported bound
    (torch 2.13, ExecuTorch 1.5.1, measured). Unhinted, the fake kernel skips only a memory-format guess.
    """
    import torch
    from torch.fx.experimental import symbolic_shapes

    real = symbolic_shapes.has_guarding_hint

    def only_ints(value: Any) -> bool:
        return not isinstance(value, torch.SymInt) and bool(real(value))

    setattr(symbolic_shapes, "has_guarding_hint", only_ints)  # noqa: B010 - a narrower signature than mypy knows
    try:
        yield
    finally:
        setattr(symbolic_shapes, "has_guarding_hint", real)  # noqa: B010


def _check_plan(program: Any, planned: dict[str, list[int]], memory: int, artifact: ModelArtifact) -> None:
    """The planned input shapes hold the program's (capped) bounds, and the planned memory is sane.

    Raises:
        ExportError: a planned dim is smaller than the program allows, or the plan exceeds
            :data:`MAX_PLANNED_BYTES`.
    """
    for (name, shape), dims in zip(planned.items(), dim_bounds(program)):
        for axis, d in enumerate(dims):
            if not isinstance(d, int) and d[2] is not None and shape[axis] < d[2]:
                raise ExportError(f"ExecuTorch planned input {name!r} for dim {axis} <= {shape[axis]}, but the program "
                                  f"allows {d[2]}", hint="pass --target-option max_dim=N to plan a smaller bound")
    if memory > MAX_PLANNED_BYTES:
        shapes = "; ".join(f"{n} {tuple(s)}" for n, s in planned.items())
        raise ExportError(f"ExecuTorch would plan {memory / 2**30:.1f} GiB of activation memory for the inputs' upper "
                          f"bounds ({shapes}), over the {MAX_PLANNED_BYTES >> 30} GiB a device can be asked for",
                          hint=f"cap the dynamic dims: --target-option max_dim={_caps_example(artifact)}")


def _caps_example(artifact: ModelArtifact) -> str:
    """``batch=N,seq=N`` with the inputs' dim names, or ``N`` when they have none."""
    names = dict.fromkeys(d for spec in artifact.inputs for d in spec.shape if isinstance(d, str))
    return ",".join(f"{name}=N" for name in names) or "N"


def fixed_specs(specs: tuple[TensorSpec, ...], bounds: list[list[Dim]]) -> tuple[TensorSpec, ...]:
    """The input specs with the dims the lowered program fixed (``max_dim`` capped them to one size) as that size."""
    fixed = []
    for spec, dims in zip(specs, bounds):
        shape = tuple(d if isinstance(d, int) else d[1] if d[1] == d[2] else s for s, d in zip(spec.shape, dims))
        fixed.append(dataclasses.replace(spec, shape=shape) if shape != spec.shape else spec)
    return tuple(fixed)


def delegation(graph_module: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """``(delegated ops, portable ops, delegate calls per backend)``, ops counted by name, loop bodies' too."""
    from executorch.exir.graph_module import get_control_flow_submodules

    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    backends: Counter[str] = Counter()
    modules = [graph_module]
    while modules:
        module = modules.pop()
        modules += [body for _, body, _ in get_control_flow_submodules(module)]
        portable.update(op_counts(module))
        for node in module.graph.nodes:
            if node.op == "call_function" and op_name(node.target) == "executorch_call_delegate":
                lowered = getattr(module, node.args[0].target)
                backends[lowered.backend_id] += 1
                delegated.update(op_counts(lowered.original_module.graph_module))
    return dict(sorted(delegated.items())), dict(sorted(portable.items())), dict(sorted(backends.items()))
