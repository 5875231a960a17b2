"""Convert a ``torch.export`` program (``.pt2``) to ONNX with the dynamo-based exporter.

Why this exporter: torch 2.13's ``torch.onnx.export`` defaults to it; it is the only one that takes a
saved ``ExportedProgram`` (so ``.pt2`` sources and factories share one path), keeps the dynamic dims
declared at capture time, and is deterministic (byte-identical output for the same program). The
TorchScript exporter (``dynamo=False``) is deprecated and would need the live ``nn.Module``.

Rules:
1. Input names are the program's argument names; output names come from the import (``output_names``).
2. The exporter's own progress printing is captured and only shown when the export fails.
3. Outputs are renamed here, not by the exporter: ``output_names`` there renames the output value even
   when an inner value already has that name (an output called ``embedding`` next to ``aten.embedding``'s
   values), which breaks SSA. An inner value holding a wanted name is renamed ``<name>_<n>`` first.
4. Symbolic dims get the names the import gave them (``batch``, ``seq``: see
   :func:`edgec.compiler.importers.torch.name_dims`), not the exporter's shape symbols (``s77``), in every
   value of the graph, so ONNX, OpenVINO and TFLite bundles, their manifests and serving errors show them.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

from edgec.compiler.importers.torch import SHAPE_SYMBOL
from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import ExportError, InternalError, brief, raise_if_bug, require
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2, ModelArtifact
from edgec.frameworks import onnx_utils
from edgec.frameworks.torch_utils import safe_load_pt2


def name_dims(graph: Any, artifact: ModelArtifact) -> None:
    """Rename the graph's shape symbols (``s77``) to the dim names of ``artifact``'s specs, matched by tensor
    name and axis; a symbol inside an expression (``s77 + 1``) is renamed too, in every value's shape."""
    import onnx_ir as ir

    specs = {s.name: s for s in (*artifact.inputs, *artifact.outputs)}
    names: dict[str, str] = {}
    for value in (*graph.inputs, *graph.outputs):
        spec = specs.get(value.name)
        if spec is None or value.shape is None or len(value.shape) != len(spec.shape):
            continue
        for dim, wanted in zip(value.shape, spec.shape):
            if isinstance(dim, ir.SymbolicDim) and isinstance(dim.value, str) and SHAPE_SYMBOL.fullmatch(dim.value) \
                    and isinstance(wanted, str) and wanted.isidentifier():
                names.setdefault(dim.value, wanted)
    if not names:
        return
    values = [*graph.inputs, *graph.outputs, *(v for node in ir.traversal.RecursiveGraphIterator(graph) for v in node.outputs)]
    for value in values:
        if value.shape is not None and any(isinstance(d, ir.SymbolicDim) and d.value for d in value.shape):
            value.shape = ir.Shape([_renamed_dim(ir, d, names) for d in value.shape])


def _renamed_dim(ir: Any, dim: Any, names: dict[str, str]) -> Any:
    if not isinstance(dim, ir.SymbolicDim) or not isinstance(dim.value, str):
        return dim
    return ir.SymbolicDim(SHAPE_SYMBOL.sub(lambda m: names.get(m.group(), m.group()), dim.value))


def rename_outputs(graph: Any, names: list[str]) -> None:
    """Give the graph outputs ``names``, first moving any other value that holds one of them aside."""
    taken = {v.name: v for v in (*graph.inputs, *graph.initializers.values()) if v.name}
    taken.update({v.name: v for node in graph for v in node.outputs if v.name})
    for value, name in zip(graph.outputs, names):
        clash = taken.get(name)
        if clash is not None and clash is not value:
            suffix = 1
            while f"{name}_{suffix}" in taken:
                suffix += 1
            clash.name = f"{name}_{suffix}"
            taken[clash.name] = clash
        taken.pop(value.name, None)
        value.name = name
        taken[name] = value


class ExportOnnxOptions(PassOptions):
    opset: int = 18
    output_names: tuple[str, ...] = ()


class ExportOnnx(Pass):
    """``torch.onnx.export(exported_program, dynamo=True)``."""

    name = "export_onnx"
    version = "2"  # 2: dims named as the import names them
    accepts = (FORMAT_PT2,)
    produces = FORMAT_ONNX
    Options = ExportOnnxOptions

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        torch = require("torch", "torch", "exporting PyTorch models to ONNX")
        require("onnxscript", "torch", "exporting PyTorch models to ONNX")
        opts: ExportOnnxOptions = self.options  # type: ignore[assignment]
        ep = safe_load_pt2(artifact.path)
        names = list(opts.output_names) or [s.name for s in artifact.outputs]
        out_path = ctx.work_dir / "model.onnx"
        log = io.StringIO()
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                program = torch.onnx.export(ep, (), dynamo=True, opset_version=opts.opset, verbose=False)
                rename_outputs(program.model.graph, names)
                name_dims(program.model.graph, artifact)
                program.save(str(out_path))
        except Exception as exc:  # the exporter's errors (any type); a bug in edgec's renaming is raised as one
            raise_if_bug(exc, "exporting the torch program to ONNX")
            tail = " ".join(log.getvalue().split())[-300:]
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {brief(exc, 300)} {tail}") from exc
        out = onnx_utils.artifact_from_file(out_path)
        return PassResult(out, True, {"opset": opts.opset, "exporter": "torch.onnx.export(dynamo=True)"})

    def ensures(self, before: ModelArtifact, result: PassResult) -> None:
        super().ensures(before, result)
        if [s.name for s in result.artifact.outputs] != [s.name for s in before.outputs]:
            raise InternalError("the ONNX export renamed the model outputs")  # edgec renames them: a bug
