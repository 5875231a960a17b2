"""Converting a model to an ``openvino.Model`` for the openvino target: the ONNX, torch.export and TensorFlow
routes, the ``If`` folding the ONNX route needs (:mod:`edgec.targets._openvino_ifs`) and, where OpenVINO cannot
convert a model with dynamic input dims, those dims fixed to the build's data sizes."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError, UnsupportedError, brief
from edgec.core.types import FORMAT_ONNX, FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.frameworks.tf_utils import FORMAT_KERAS, FORMAT_SAVEDMODEL
from edgec.targets._openvino_ifs import fixed_dims, fold_ifs, fold_ifs_by_running
from edgec.targets._openvino_layers import decode, store_layers

_RANK_HINT = ("an If in the model (torch's export of squeeze on a dim it cannot prove is 1) has outputs whose "
              "rank depends on the input sizes: export the model with fixed input shapes, or build the onnx target")


def convert(ov: Any, artifact: ModelArtifact, work_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """The artifact as an ``openvino.Model`` with the artifact's tensor names and dims, and how it got there.

    Raises:
        UnsupportedError: the artifact's format is not a route of this target.
        ExportError: OpenVINO could not convert it.
    """
    if artifact.format == FORMAT_ONNX:
        details: dict[str, Any] = {"route": FORMAT_ONNX, "converter": "openvino.convert_model(onnx file)"}
        path, folded = _fold_static_ifs(artifact, work_dir)
        if folded:
            details["folded_ifs"] = folded
        model = _convert_or_raise(ov, str(path), "ONNX model", hint=_RANK_HINT)
    elif artifact.format == FORMAT_PT2:
        model, details = _convert_pt2(ov, artifact)
    elif artifact.format in (FORMAT_SAVEDMODEL, FORMAT_KERAS) and work_dir is not None:
        model, details = _convert_tf(ov, artifact, work_dir)
    else:
        raise UnsupportedError(f"the openvino target takes pt2, onnx, savedmodel or keras models, not {artifact.format}")
    _apply_specs(ov, model, artifact)
    return model, details


def convert_sized(ov: Any, artifact: ModelArtifact, work_dir: Path, sizes: dict[str, tuple[int, ...]]) -> tuple[Any, dict[str, Any], ModelArtifact]:
    """:func:`convert`; when OpenVINO refuses an ONNX model for an ``If`` whose output rank depends on dynamic
    input dims, those dims fixed to ``sizes`` (the build's data) and converted again. Returns the model, how it
    got there (``fixed_dims`` when sizes were fixed) and the artifact it matches (its inputs as fixed).

    Raises:
        UnsupportedError: the artifact's format is not a route of this target.
        ExportError: OpenVINO could not convert it, with its dims fixed too.
    """
    try:
        model, details = convert(ov, artifact, work_dir)
        return model, details, artifact
    except ExportError as exc:
        fixed = _fixed_inputs(artifact, sizes) if exc.hint == _RANK_HINT else None
        if fixed is None:
            raise
    model, details = convert(ov, fixed, work_dir)
    details["fixed_dims"] = {spec.name: list(spec.shape) for spec in fixed.inputs if spec not in artifact.inputs}
    details["fixed_dims_reason"] = "OpenVINO gives an If output of unknown rank while these input dims are dynamic"
    return model, details, fixed


def _fixed_inputs(artifact: ModelArtifact, sizes: dict[str, tuple[int, ...]]) -> ModelArtifact | None:
    """The artifact with every dynamic input dim set to ``sizes``; None when none is dynamic or a size is missing."""
    inputs = []
    for spec in artifact.inputs:
        size = sizes.get(spec.name)
        if all(isinstance(d, int) for d in spec.shape):
            inputs.append(spec)
        elif size is None or len(size) != len(spec.shape):
            return None
        else:
            inputs.append(replace(spec, shape=tuple(d if isinstance(d, int) else int(n) for d, n in zip(spec.shape, size))))
    return replace(artifact, inputs=tuple(inputs)) if tuple(inputs) != artifact.inputs else None


def _fold_static_ifs(artifact: ModelArtifact, work_dir: Path | None) -> tuple[Path, int]:
    """The ONNX model with the ``If`` nodes its fixed input dims decide replaced by their branch
    (:mod:`edgec.targets._openvino_ifs`), and how many; the artifact's own file when none."""
    if work_dir is None:
        return artifact.path, 0
    from edgec.frameworks import onnx_utils

    model = onnx_utils.load_model(artifact.path)
    folded = fold_ifs(model, {spec.name: fixed_dims(spec) for spec in artifact.inputs})
    sizes = {spec.name: tuple(spec.shape) for spec in artifact.inputs if all(isinstance(d, int) for d in spec.shape)}
    if len(sizes) == len(artifact.inputs):
        folded += fold_ifs_by_running(model, sizes)  # type: ignore[arg-type]
    if not folded:
        return artifact.path, 0
    work_dir.mkdir(parents=True, exist_ok=True)
    return onnx_utils.save_artifact(model, work_dir, "folded_ifs.onnx").path, folded


def _convert_pt2(ov: Any, artifact: ModelArtifact) -> tuple[Any, dict[str, Any]]:
    from edgec.frameworks.torch_utils import safe_load_pt2

    program = safe_load_pt2(artifact.path)
    decoded, layers, recurrent = decode(program)
    model = _convert_or_raise(ov, decoded, "torch.export program",
                              hint="export it with torch.onnx.export and build from the .onnx file")
    store_layers(model, layers, recurrent)  # layers named by torch modules, not FX nodes (op_layers)
    _drop_inner_names(model)
    return model, {"route": FORMAT_PT2, "converter": "openvino.convert_model(torch.export.ExportedProgram)"}


def _drop_inner_names(model: Any) -> None:
    """Clear the tensor names the PyTorch frontend gives every op output (``10``, ``unsqueeze:0``); inputs and
    weights keep theirs, outputs are named by :func:`_apply_specs`. Compiling merges the names of the ops it
    removes into the ports next to them, so an LSTM's state input ``h`` also answered to ``10`` and
    ``get_any_name()`` of the compiled port said ``10``."""
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Parameter", "Constant"):
            for output in op.outputs():
                output.get_tensor().set_names(set())


def _convert_tf(ov: Any, artifact: ModelArtifact, work_dir: Path) -> tuple[Any, dict[str, Any]]:
    from edgec.frameworks.tf_utils import serving_saved_model

    saved = serving_saved_model(artifact, work_dir / "serving")
    model = _convert_or_raise(ov, str(saved), "TensorFlow SavedModel", hint="export the model to ONNX and build from the .onnx file")
    return model, {"route": artifact.format, "converter": "openvino.convert_model(SavedModel, serving_default)"}


def _convert_or_raise(ov: Any, source: Any, what: str, hint: str | None = None) -> Any:
    log = io.StringIO()
    try:
        with quiet(log):
            return ov.convert_model(source)
    except Exception as exc:  # one OpenVINO call: its frontends raise RuntimeError, OpConversionFailure, any type
        if hint == _RANK_HINT and "rank has to be known" not in str(exc):
            hint = None
        raise ExportError(f"OpenVINO could not convert the {what}: {type(exc).__name__}: {brief(exc)}", hint=hint,
                          log=log.getvalue() + f"\n{type(exc).__name__}: {exc}\n") from exc


def _apply_specs(ov: Any, model: Any, artifact: ModelArtifact) -> None:
    """Give the model the artifact's input/output names and fixed dims (symbolic dims stay dynamic)."""
    for kind, ports, specs in (("inputs", model.inputs, artifact.inputs), ("outputs", model.outputs, artifact.outputs)):
        if len(ports) != len(specs):
            raise ExportError(f"the OpenVINO model has {len(ports)} {kind}, the source has {len(specs)}")
        if {spec.name for spec in specs} == {name for port in ports for name in port.get_names()}:
            continue  # already named as the source (the TensorFlow frontend: signature keys, sorted)
        for port, spec in zip(ports, specs):
            if port.get_names() != {spec.name}:
                port.get_tensor().set_names({spec.name})
    shapes = {spec.name: _partial_shape(ov, spec) for spec in artifact.inputs}
    current = {port.get_any_name(): port.get_partial_shape() for port in model.inputs}
    if any(current[name] != shape for name, shape in shapes.items()):
        try:
            model.reshape(shapes)
        except Exception as exc:  # one OpenVINO call: RuntimeError (C++) or its wrappers' errors for shapes it refuses
            raise ExportError(f"OpenVINO could not apply the input shapes {shapes}: {brief(exc)}") from exc


def _partial_shape(ov: Any, spec: TensorSpec) -> Any:
    return ov.PartialShape([ov.Dimension(d) if isinstance(d, int) else ov.Dimension() for d in spec.shape])


@contextlib.contextmanager
def quiet(log: io.StringIO | None = None, nncf: Any = None) -> Iterator[None]:
    """Capture converter and nncf chatter (progress bars, warnings); nncf's logger writes to its own handler."""
    sink = log if log is not None else io.StringIO()
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    if nncf is not None:
        nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        nncf_logger.setLevel(level)
