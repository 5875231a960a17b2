"""ONNX importer: checks the file and runs the FP32 reference with onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgec.compiler.cache import StageCache
from edgec.compiler.importers.base import Feed, Importer, ImportResult
from edgec.core.errors import ConfigError, ExportError, brief, require
from edgec.core.types import FORMAT_ONNX, ModelArtifact
from edgec.frameworks import onnx_utils


class OnnxImporter(Importer):
    """``model.onnx`` files."""

    name = "onnx"
    extra = "onnx"
    formats = (FORMAT_ONNX,)

    @classmethod
    def claims(cls, source: str) -> bool:
        return source.lower().endswith(".onnx")

    @classmethod
    def source_name(cls, source: str) -> str:
        return Path(source).stem

    def load(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"model file not found: {source} (expected an existing .onnx file)")
        artifact = onnx_utils.artifact_from_file(path)
        return ImportResult(artifact, self.source_name(source), FORMAT_ONNX, artifact.digest)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        ort = require("onnxruntime", "onnx", "running ONNX models")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4  # a failure is raised as one line (the synthetic retry expects some)
        try:
            session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            quiet = ort.RunOptions()
            quiet.log_severity_level = 4
            return [dict(zip(names, session.run(names, feed, quiet))) for feed in feeds]
        except Exception as exc:  # onnxruntime calls only: its own types (Fail, InvalidGraph, ...) for invalid graphs
            raise ExportError(f"onnxruntime cannot run {artifact.path.name}: {brief(exc, 300)}",
                              hint="check the model with onnx.checker (full_check=True)") from exc
