"""Bring an old ONNX model up to date: upgrade its opset and fold ``Constant`` weights into initializers.

Why: models from older exporters (paddle2onnx, tf2onnx and torch before 1.12 write opset 9-12) cannot be
re-exported by the people who deploy them. onnxruntime's static quantizer writes per-channel
``DequantizeLinear`` nodes with an ``axis`` attribute, which exists from opset 13 only (``Unrecognized
attribute: axis for operator DequantizeLinear``), and it quantizes only *initializers* as weights: a weight
stored as a ``Constant`` node is treated as an activation (one per-tensor scale, no per-channel weights).

Rules:
1. A model whose default-domain opset is below ``min_opset`` is converted to ``opset`` with onnx's version
   converter; the IR version is raised to the lowest that opset needs. A model at ``min_opset`` or above
   keeps its opset.
2. Every ``Constant`` node of the main graph that holds a tensor (``value``, ``value_float(s)``,
   ``value_int(s)``) becomes an initializer of the same name, unless its output is a graph output. Constants
   inside subgraphs (``If``/``Loop`` bodies) stay: initializers of the main graph are not visible there by name
   in every runtime.
3. Nothing to do (rule 1 does not apply and no Constant to fold): ``modified=False`` and the input's bytes.

The stats record the opset before and after and how many Constants were folded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.compiler.passes._onnx_rewrite import DEFAULT_DOMAINS, unchanged
from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import ExportError, brief, require
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils

MIN_OPSET = 13
"""Below this, static INT8 cannot write per-channel ``DequantizeLinear`` (its ``axis`` came in opset 13)."""
DEFAULT_OPSET = 17
"""Where old models are taken: supported by onnxruntime, OpenVINO, onnx2tf and TensorRT alike."""
_VALUE_ATTRIBUTES = ("value", "value_float", "value_floats", "value_int", "value_ints")


class UpgradeOpsetOptions(PassOptions):
    opset: int = DEFAULT_OPSET
    """The opset an old model is converted to."""
    min_opset: int = MIN_OPSET
    """Models below this opset are converted (rule 1)."""


def default_opset(model: Any) -> int:
    """The model's opset of the default ONNX domain (1 when it declares none)."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else 1


def foldable_constants(model: Any) -> list[Any]:
    """The main graph's ``Constant`` nodes that rule 2 folds."""
    outputs = {o.name for o in model.graph.output}
    return [n for n in model.graph.node
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and len(n.attribute) == 1
            and n.attribute[0].name in _VALUE_ATTRIBUTES and n.output[0] not in outputs]


def needs_upgrade(path: Path, min_opset: int = MIN_OPSET) -> bool:
    """Whether the pass would change the ONNX model at ``path`` (rules 1 and 2)."""
    model = onnx_utils.load_model(path)
    return default_opset(model) < min_opset or bool(foldable_constants(model))


def _constant_tensor(node: Any) -> Any:
    """The tensor a foldable ``Constant`` node holds, named as its output."""
    import numpy as np
    from onnx import helper, numpy_helper

    attr = node.attribute[0]
    if attr.name == "value":
        tensor = type(attr.t)()
        tensor.CopyFrom(attr.t)
        tensor.name = node.output[0]
        return tensor
    value = helper.get_attribute_value(attr)
    dtype = np.float32 if attr.name.startswith("value_float") else np.int64
    return numpy_helper.from_array(np.array(value, dtype=dtype), node.output[0])


def fold_constants(model: Any) -> int:
    """Rule 2 in place; returns the number of Constants folded."""
    folded = foldable_constants(model)
    names = {n.output[0] for n in folded}
    keep = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] in names)]
    model.graph.initializer.extend(_constant_tensor(n) for n in folded)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(folded)


class UpgradeOpset(Pass):
    """Upgrade an old opset with onnx's version converter and fold ``Constant`` weights into initializers."""

    name = "upgrade_opset"
    Options = UpgradeOpsetOptions

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        opts: UpgradeOpsetOptions = self.options  # type: ignore[assignment]
        model = onnx_utils.load_model(artifact.path)
        before = default_opset(model)
        if before >= opts.min_opset and not foldable_constants(model):
            return PassResult(unchanged(artifact, ctx), False, {"opset": before, "constants_folded": 0})
        if before < opts.min_opset:
            model = self._convert(model, before, opts.opset)
            ctx.log(f"upgraded the model from opset {before} to {opts.opset}")
        folded = fold_constants(model)
        out = onnx_utils.save_artifact(model, ctx.work_dir)
        return PassResult(out, True, {"opset_before": before, "opset": default_opset(model), "constants_folded": folded})

    @staticmethod
    def _convert(model: Any, before: int, opset: int) -> Any:
        """Rule 1.

        Raises:
            ExportError: onnx's version converter cannot convert an op of this model.
        """
        onnx = require("onnx", "onnx", "upgrading the model's opset")
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(model, opset)
        except Exception as exc:  # one onnx call: its C++ converter raises RuntimeError/ValueError per op it cannot adapt
            raise ExportError(f"onnx's version converter cannot take this opset-{before} model to opset {opset}: "
                              f"{brief(exc, 300)}", hint="re-export the model at opset 13 or newer") from exc
        needed = onnx.helper.find_min_ir_version_for(list(converted.opset_import))
        converted.ir_version = max(converted.ir_version, needed)
        return converted
