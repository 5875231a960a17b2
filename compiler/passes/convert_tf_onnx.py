"""Convert a TensorFlow SavedModel or Keras model (``.keras``, ``.h5``) to ONNX with tf2onnx, for the targets
that take ONNX (onnx, tensorrt; tflite and openvino take TensorFlow sources directly).

Rules:
1. A Keras model is first exported to a SavedModel whose ``serving_default`` signature takes and returns the
   model's named tensors (:func:`edgec.frameworks.tf_utils.serving_saved_model`); a SavedModel is used as is.
2. tf2onnx runs in a subprocess (``python -m tf2onnx.convert``): it logs hundreds of lines and TensorFlow's
   native banners; its output is kept and shown only when it fails (the last error line, and the whole log
   beside the failed build).
3. tf2onnx orders inputs and outputs by name and calls dynamic dims ``unk__N``: the graph's inputs and
   outputs are put back in the source's order, and dims the source names (``batch``) get those names.
4. The layout stays the source's (NHWC for Keras CNNs): golden inputs and calibration data need no transpose.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgec.compiler.passes.base import Pass, PassContext, PassOptions, PassResult
from edgec.core.errors import ExportError, brief
from edgec.core.installed import require_installed
from edgec.core.types import ModelArtifact
from edgec.frameworks import onnx_utils
from edgec.frameworks.tf_utils import FORMAT_KERAS, FORMAT_SAVEDMODEL, SERVING, serving_saved_model

TIMEOUT_S = 1800


class ConvertTfOnnxOptions(PassOptions):
    opset: int = 17


class ConvertTfOnnx(Pass):
    """``python -m tf2onnx.convert --saved-model DIR`` on the ``serving_default`` signature."""

    name = "tf2onnx"
    accepts = (FORMAT_SAVEDMODEL, FORMAT_KERAS)
    Options = ConvertTfOnnxOptions

    def run_impl(self, artifact: ModelArtifact, ctx: PassContext) -> PassResult:
        require_installed(("tf2onnx", "tensorflow"), "tflite", "converting TensorFlow models to ONNX (tf2onnx)")
        opts: ConvertTfOnnxOptions = self.options  # type: ignore[assignment]
        saved = serving_saved_model(artifact, ctx.work_dir / "serving")
        out_path = ctx.work_dir / "model.onnx"
        _run_tf2onnx(saved, out_path, opts.opset)
        model = onnx_utils.load_model(out_path)
        _match_source(model, artifact)
        model.graph.doc_string = f"converted from the {SERVING} signature by tf2onnx"  # not the work dir: rebuilds match
        onnx_utils.save_model(model, out_path)
        version = importlib.metadata.version("tf2onnx")
        return PassResult(onnx_utils.artifact_from_file(out_path), True, {"opset": opts.opset, "converter": f"tf2onnx {version}"})


def _run_tf2onnx(saved: Path, out_path: Path, opset: int) -> None:
    """Rule 2.

    Raises:
        ExportError: tf2onnx failed or did not finish; its log is attached.
    """
    args = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--signature_def", SERVING,
            "--tag", "serve", "--opset", str(opset), "--output", str(out_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"tf2onnx did not finish within {TIMEOUT_S} s", log=str(exc.stdout or "")) from None
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not out_path.is_file():
        errors = [ln.strip() for ln in log.splitlines() if re.search(r"\b\w*(Error|Exception)\b", ln)]
        reason = brief(errors[-1] if errors else f"exit code {proc.returncode}", 300)
        raise ExportError(f"tf2onnx could not convert the TensorFlow model: {reason}",
                          hint="build it for the tflite or openvino target, which take TensorFlow models directly",
                          log=log)


def _match_source(model: Any, artifact: ModelArtifact) -> None:
    """Rule 3: inputs and outputs in the source's order, named dims as the source names them.

    Raises:
        ExportError: the converted graph's inputs or outputs are not the source's.
    """
    graph = model.graph
    for field, specs in (("input", artifact.inputs), ("output", artifact.outputs)):
        values = {v.name: v for v in getattr(graph, field)}
        if set(values) != {s.name for s in specs}:
            raise ExportError(f"tf2onnx's ONNX model has {field}s {sorted(values)}, the source has "
                              f"{sorted(s.name for s in specs)}")
        ordered = [values[s.name] for s in specs]
        for value, spec in zip(ordered, specs):
            for dim, wanted in zip(value.type.tensor_type.shape.dim, spec.shape):
                if isinstance(wanted, str) and dim.HasField("dim_param"):
                    dim.dim_param = wanted
        copies = [type(v)() for v in ordered]
        for copy, value in zip(copies, ordered):
            copy.CopyFrom(value)
        del getattr(graph, field)[:]
        getattr(graph, field).extend(copies)
